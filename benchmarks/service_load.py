"""Load benchmark of `nlprec-serve` on 127.0.0.1: the SciFact index and a Ta-Feng recommender.

For each endpoint (bm25, dense, hybrid, dense + rerank, recommend):
- latency p50/p95/p99 from an open-loop generator at a fixed rate (latency counted from each
  request's scheduled send time, so a slow server cannot hide its queue: no coordinated omission);
- the highest sustained rate with zero errors: wrk (closed loop) at rising connection counts,
  the best throughput among runs with no error, no non-2xx answer and p99 under 1 s.
Then dense saturation throughput with micro-batching on (max_batch_size 32) and off (1).

    python benchmarks/service_load.py [--duration 15] [--work DIR]

Needs wrk (Debian `wrk`), $NLPREC_DATA with beir/scifact and baskets/tafeng. The models are
built once under --work (SciFact: MiniLM bi-encoder over all 5,183 abstracts cut to their first
64 tokens for indexing speed, BM25 over the full texts, and a
MiniLM-initialised cross-encoder: its scores are meaningless but its cost is a real
cross-encoder's; Ta-Feng: the ACT-R OnlineRecommender over every user's baskets).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

SERVE = Path(sys.executable).with_name("nlprec-serve")
SUSTAINED_P99_LIMIT_MS = 1000.0
DOC_TOKENS = 64
WARMUP_S = 3

WRK_SCRIPT = """
local bodies = {}
for line in io.lines(os.getenv("WRK_BODIES")) do bodies[#bodies + 1] = line end
local path = os.getenv("WRK_PATH")
local next_body = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  next_body = next_body % #bodies + 1
  return wrk.format(nil, path, nil, bodies[next_body])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_s": %.3f, "errors": %d, "non_2xx": %d, '
    .. '"p50_ms": %.2f, "p95_ms": %.2f, "p99_ms": %.2f}\\n',
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000))
end
"""


# ---------------------------------------------------------------- models


def build_scifact_engine(data: Path, target: Path) -> Path:
    from nlprec.ranking.data import load_beir
    from nlprec.ranking.dense import DenseConfig, DenseRetriever
    from nlprec.ranking.engine import SearchEngine
    from nlprec.ranking.faiss_index import FaissConfig
    from nlprec.ranking.rerank import CrossEncoderReranker, RerankerConfig

    if (target / "manifest.json").exists():
        return target
    print(f"building the SciFact engine under {target} (encodes 5,183 abstracts once)", flush=True)
    dataset = load_beir(data / "beir" / "scifact")
    # Abstracts are cut at DOC_TOKENS for indexing, only to build the index in minutes on a shared
    # 2-core CPU; serving cost is query-side (SciFact claims are far shorter than that).
    config = DenseConfig(model="minilm", faiss=FaissConfig(kind="flat"), max_seq_length=DOC_TOKENS)
    dense = DenseRetriever(config)
    reranker = CrossEncoderReranker(RerankerConfig(model="minilm"))
    SearchEngine.build(dataset.corpus, dense, reranker=reranker).save(target)
    return target


def build_tafeng_recommender(data: Path, target: Path) -> Path:
    from nlprec.sessionrec.loaders import read_reality_check
    from nlprec.sessionrec.online import OnlineRecommender

    if (target / "meta.json").exists():
        return target
    print(f"building the Ta-Feng recommender under {target}", flush=True)
    sessions = read_reality_check(data / "baskets" / "tafeng")
    OnlineRecommender.from_sessions(sessions).save(target)
    return target


def request_bodies(data: Path, recommender: Path) -> dict[str, tuple[str, list[dict]]]:
    """Per endpoint: (path, request bodies) built from SciFact test queries and Ta-Feng users."""
    from nlprec.ranking.data import load_beir

    queries = list(load_beir(data / "beir" / "scifact").split_queries("test").values())
    users = [json.loads(line)["user"] for line in (recommender / "users.jsonl").open()]
    random.Random(0).shuffle(users)
    search = "/v1/search"
    return {
        "bm25": (search, [{"query": q, "k": 10, "mode": "bm25"} for q in queries]),
        "dense": (search, [{"query": q, "k": 10, "mode": "dense"} for q in queries]),
        "hybrid": (search, [{"query": q, "k": 10, "mode": "hybrid"} for q in queries]),
        "dense+rerank": (
            search,
            [{"query": q, "k": 10, "mode": "dense", "rerank": True} for q in queries],
        ),
        "recommend": ("/v1/recommend", [{"user_id": u, "k": 10} for u in users[:1000]]),
    }


# ---------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    def __init__(self, models: dict[str, Path], state: Path, max_batch_size: int):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "NLPREC_SERVE_RANKING_MODEL": str(models["ranking"]),
            "NLPREC_SERVE_SESSIONREC_MODEL": str(models["sessionrec"]),
            "NLPREC_SERVE_STATE_DIR": str(state),
            "NLPREC_SERVE_PORT": str(self.port),
            "NLPREC_SERVE_LOG_LEVEL": "warning",
            "NLPREC_SERVE_BATCHING__MAX_BATCH_SIZE": str(max_batch_size),
        }

    def __enter__(self) -> Server:
        self.process = subprocess.Popen([str(SERVE)], env=self.env)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/ready", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"nlprec-serve exited with {self.process.returncode}")
            time.sleep(0.5)
        self.process.kill()
        raise TimeoutError("nlprec-serve not ready after 600 s")

    def __exit__(self, *exc) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=120)


# ---------------------------------------------------------------- load generators


async def open_loop(
    url: str, path: str, bodies: list[dict], rate: float, duration_s: float
) -> dict:
    """Send at a fixed rate regardless of answers; latency from each request's scheduled time."""
    total = int(rate * duration_s)
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.1

        async def one(i: int) -> None:
            nonlocal errors
            scheduled = start + i / rate
            await asyncio.sleep(max(0.0, scheduled - loop.time()))
            try:
                response = await client.post(path, json=bodies[i % len(bodies)])
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append((loop.time() - scheduled) * 1000)
            else:
                errors += 1

        await asyncio.gather(*(one(i) for i in range(total)))
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if latencies else (float("nan"),) * 3
    return {
        "rate": rate,
        "requests": total,
        "errors": errors,
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
    }


def wrk(url: str, path: str, bodies: list[dict], connections: int, duration_s: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        script, body_file = Path(folder) / "post.lua", Path(folder) / "bodies.jsonl"
        script.write_text(WRK_SCRIPT)
        body_file.write_text("".join(json.dumps(b) + "\n" for b in bodies))
        env = {**os.environ, "WRK_BODIES": str(body_file), "WRK_PATH": path}
        command = [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration_s}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ]
        output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    result["rate"] = result["requests"] / result["duration_s"]
    result["connections"] = connections
    return result


def sustained(
    url: str, path: str, bodies: list[dict], duration_s: int, ladder: list[int]
) -> tuple[dict, list]:
    """Best zero-error wrk run along the connection ladder (stops once throughput stops rising)."""
    runs, best = [], None
    for connections in ladder:
        run = wrk(url, path, bodies, connections, duration_s)
        runs.append(run)
        clean = (
            run["errors"] == 0 and run["non_2xx"] == 0 and run["p99_ms"] < SUSTAINED_P99_LIMIT_MS
        )
        if clean and (best is None or run["rate"] > best["rate"]):
            best = run
        elif best is not None and run["rate"] < best["rate"] * 1.05:
            break
    return best or {"rate": 0.0, "connections": None}, runs


# ---------------------------------------------------------------- main

FIXED_RATES = {"bm25": 50, "dense": 50, "hybrid": 50, "dense+rerank": 5, "recommend": 50}
LADDERS = {"dense+rerank": [1, 2, 4]}
DEFAULT_LADDER = [1, 4, 16, 32]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds per measurement")
    parser.add_argument("--work", type=Path, default=Path(".nlprec/bench/service"))
    parser.add_argument("--endpoints", nargs="*", default=list(FIXED_RATES))
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    data = Path(os.environ.get("NLPREC_DATA", "../shared/data"))
    missing = [what for what, ok in _requirements(data).items() if not ok]
    if missing:  # `make bench` runs every script: say what is missing and leave the others to run
        print(f"skip benchmarks/service_load.py: missing {', '.join(missing)}")
        return
    args.work.mkdir(parents=True, exist_ok=True)
    models = {
        "ranking": build_scifact_engine(data, args.work / "scifact-engine"),
        "sessionrec": build_tafeng_recommender(data, args.work / "tafeng-recommender"),
    }
    bodies = request_bodies(data, models["sessionrec"])
    load_before = os.getloadavg()[0]

    rows, details = [], {}
    with (
        tempfile.TemporaryDirectory() as state,
        Server(models, Path(state), max_batch_size=32) as server,
    ):
        for name in args.endpoints:
            path, endpoint_bodies = bodies[name]
            wrk(server.url, path, endpoint_bodies, 4, 3)  # warm-up
            rate = FIXED_RATES[name]
            asyncio.run(
                open_loop(server.url, path, endpoint_bodies, rate, WARMUP_S)
            )  # not recorded
            fixed = asyncio.run(open_loop(server.url, path, endpoint_bodies, rate, args.duration))
            best, runs = sustained(
                server.url, path, endpoint_bodies, args.duration, LADDERS.get(name, DEFAULT_LADDER)
            )
            details[name] = {"fixed_rate": fixed, "wrk_runs": runs}
            rows.append((name, fixed, best))
            print(name, json.dumps(details[name]), flush=True)
        batched_dense = next((best for name, _, best in rows if name == "dense"), None)
    unbatched = None
    if "dense" in args.endpoints:
        with (
            tempfile.TemporaryDirectory() as state,
            Server(models, Path(state), max_batch_size=1) as server,
        ):
            path, endpoint_bodies = bodies["dense"]
            wrk(server.url, path, endpoint_bodies, 4, 3)
            unbatched, unbatched_runs = sustained(
                server.url, path, endpoint_bodies, args.duration, DEFAULT_LADDER
            )
            details["dense_unbatched"] = {"wrk_runs": unbatched_runs}
            print("dense unbatched", json.dumps(unbatched_runs), flush=True)
    load_after = os.getloadavg()[0]
    (args.work / "service_load.json").write_text(json.dumps(details, indent=2))
    markdown = render(rows, batched_dense, unbatched, load_before, load_after, args.duration)
    print(markdown)
    if not args.no_record:
        from nlprec.core.bench import record_section

        record_section("service load (nlprec-serve, SciFact + Ta-Feng)", markdown)


def _requirements(data: Path) -> dict[str, bool]:
    return {
        "wrk (apt-get install wrk)": shutil.which("wrk") is not None,
        f"{data}/beir/scifact": (data / "beir" / "scifact").is_dir(),
        f"{data}/baskets/tafeng": (data / "baskets" / "tafeng").is_dir(),
    }


def render(rows, batched_dense, unbatched, load_before, load_after, duration_s) -> str:
    lines = [
        f"One uvicorn worker on 127.0.0.1, 2 CPU cores shared with the load generators; {duration_s} s "
        f"per measurement. Machine load average {load_before:.1f} before, {load_after:.1f} after "
        "(the machine was shared with other engineers' jobs: figures are pessimistic).",
        "",
        "| endpoint | fixed rate (req/s) | p50 ms | p95 ms | p99 ms | errors | highest sustained rate, zero errors (req/s) | at connections | its p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, fixed, best in rows:
        lines.append(
            f"| {name} | {fixed['rate']} | {fixed['p50_ms']:.1f} | {fixed['p95_ms']:.1f} | {fixed['p99_ms']:.1f} | "
            f"{fixed['errors']} | {best['rate']:.1f} | {best.get('connections')} | {best.get('p99_ms', float('nan')):.1f} |"
        )
    if batched_dense and unbatched:
        ratio = batched_dense["rate"] / unbatched["rate"] if unbatched["rate"] else float("inf")
        lines += [
            "",
            "Micro-batching, dense search at saturation (wrk, best zero-error run):",
            "",
            "| dense search | req/s | connections | p99 ms |",
            "|---|---|---|---|",
            f"| batched (max_batch_size 32, max_wait 2 ms) | {batched_dense['rate']:.1f} | {batched_dense['connections']} | {batched_dense['p99_ms']:.1f} |",
            f"| unbatched (max_batch_size 1) | {unbatched['rate']:.1f} | {unbatched['connections']} | {unbatched.get('p99_ms', float('nan')):.1f} |",
            f"| ratio | {ratio:.2f}× | | |",
        ]
    dense = next((fixed for name, fixed, _ in rows if name == "dense"), None)
    if dense:
        met = "met" if dense["p99_ms"] < 50 and dense["errors"] == 0 else "missed"
        lines += [
            "",
            f"Target dense p99 < 50 ms at 50 req/s: {met} "
            f"(p99 {dense['p99_ms']:.1f} ms at {dense['rate']} req/s).",
        ]
    if batched_dense and unbatched:
        met = "met" if batched_dense["rate"] >= 2 * unbatched["rate"] else "missed"
        lines.append(f"Target micro-batching ≥ 2× the unbatched sustained dense rate: {met}.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

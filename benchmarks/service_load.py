"""Load benchmark of `nlprec-serve` on 127.0.0.1: the SciFact index and a Ta-Feng recommender.

For each endpoint (bm25, dense, hybrid, dense + rerank, recommend):
- latency p50/p95/p99 at a fixed rate, from a light open-loop generator (raw HTTP/1.1 over
  asyncio streams, keep-alive connections, requests pre-encoded). Latency counts from each
  request's *scheduled* send time, so a slow server cannot hide its queue; the generator's own lag
  (actual send time minus scheduled time) is measured and reported beside it, so a generator that
  fell behind (a starved machine) shows instead of passing for server latency;
- the highest sustained rate with zero errors: wrk (closed loop, a Lua script POSTing the bodies)
  at rising connection counts; the best throughput among runs with no socket error, no non-2xx
  answer and p99 under 1 s;
- the server's own CPU time per request (from /proc), a figure that other jobs on the machine
  inflate far less than wall-clock latency.
Then dense saturation throughput with micro-batching on and off (`max_batch_size` 1).

    python benchmarks/service_load.py [--duration 10] [--work DIR] [--endpoints dense ...]
    python benchmarks/service_load.py --tune     # dense only: torch threads x batching settings

Needs wrk (Debian `wrk`), $NLPREC_DATA with beir/scifact and baskets/tafeng. The models are
built once under --work (SciFact: MiniLM bi-encoder over all 5,183 abstracts cut to their first
64 tokens for indexing speed, BM25 over the full texts, and a MiniLM-initialised cross-encoder:
its scores are meaningless but its cost is a real cross-encoder's; Ta-Feng: the ACT-R
OnlineRecommender over every user's baskets).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
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
WARMUP_S = 2
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Server:
    """`nlprec-serve` (one uvicorn worker) in a subprocess; `settings` become NLPREC_SERVE_* vars."""

    def __init__(self, models: dict[str, Path], state: Path, settings: dict[str, object]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "NLPREC_SERVE_RANKING_MODEL": str(models["ranking"]),
            "NLPREC_SERVE_SESSIONREC_MODEL": str(models["sessionrec"]),
            "NLPREC_SERVE_STATE_DIR": str(state),
            "NLPREC_SERVE_PORT": str(self.port),
            "NLPREC_SERVE_LOG_LEVEL": "warning",
        }
        for key, value in settings.items():
            self.env[f"NLPREC_SERVE_{key.upper()}"] = str(value)

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
        self.__exit__()
        raise TimeoutError("nlprec-serve not ready after 600 s")

    def __exit__(self, *exc) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def cpu_s(self) -> float:
        return cpu_seconds(self.process.pid)


# ---------------------------------------------------------------- load generators


def http_request(port: int, path: str, body: dict) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def read_status(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (Content-Length framed) and return its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(lines[0].split()[1])


class Connections:
    """Idle keep-alive connections to the server; a new one is opened when none is idle."""

    def __init__(self, port: int):
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def exchange(self, request: bytes) -> int:
        for attempt in (0, 1):
            reused = bool(self.idle)
            reader, writer = (
                self.idle.pop() if reused else await asyncio.open_connection("127.0.0.1", self.port)
            )
            try:
                writer.write(request)
                status = await read_status(reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                writer.close()
                if reused and attempt == 0:  # the server closed an idle connection: resend once
                    continue
                raise
            self.idle.append((reader, writer))
            return status
        raise AssertionError("unreachable")

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


def percentiles(values_ms: list[float]) -> tuple[float, float, float]:
    if not values_ms:
        return (float("nan"),) * 3
    p50, p95, p99 = np.percentile(values_ms, [50, 95, 99])
    return float(p50), float(p95), float(p99)


async def open_loop(port: int, path: str, bodies: list[dict], rate: float, duration_s: float):
    """Send at a fixed rate regardless of answers. Latency counts from each scheduled send time."""
    requests = [http_request(port, path, body) for body in bodies]
    connections = Connections(port)
    total = int(rate * duration_s)
    lags_ms, latencies_ms, statuses = [], [], {}
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05

    async def one(i: int) -> None:
        scheduled = start + i / rate
        await asyncio.sleep(max(0.0, scheduled - loop.time()))
        lags_ms.append((loop.time() - scheduled) * 1000)
        try:
            status = await asyncio.wait_for(connections.exchange(requests[i % len(requests)]), 30)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            status = "transport error"
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
            latencies_ms.append((loop.time() - scheduled) * 1000)

    cpu_before = time.process_time()
    await asyncio.gather(*(one(i) for i in range(total)))
    generator_cpu_s = time.process_time() - cpu_before
    connections.close()
    p50, p95, p99 = percentiles(latencies_ms)
    lag_p50, _, lag_p99 = percentiles(lags_ms)
    return {
        "rate": rate,
        "requests": total,
        "ok": statuses.get(200, 0),
        "statuses": {str(k): v for k, v in statuses.items()},
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "generator_lag_p50_ms": lag_p50,
        "generator_lag_p99_ms": lag_p99,
        "generator_lag_max_ms": max(lags_ms) if lags_ms else float("nan"),
        "generator_cpu_ms_per_request": generator_cpu_s * 1000 / max(total, 1),
    }


def fixed_rate(server: Server, path: str, bodies: list[dict], rate: float, duration_s: float):
    cpu_before = server.cpu_s()
    result = asyncio.run(open_loop(server.port, path, bodies, rate, duration_s))
    result["server_cpu_ms_per_request"] = (
        (server.cpu_s() - cpu_before) * 1000 / max(result["requests"], 1)
    )
    return result


def wrk(server: Server, path: str, bodies: list[dict], connections: int, duration_s: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        script, body_file = Path(folder) / "post.lua", Path(folder) / "bodies.jsonl"
        script.write_text(WRK_SCRIPT)
        body_file.write_text("".join(json.dumps(b) + "\n" for b in bodies))
        env = {**os.environ, "WRK_BODIES": str(body_file), "WRK_PATH": path}
        command = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--timeout", "10s"]
        command += ["-s", str(script), server.url]
        cpu_before = server.cpu_s()
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu_s = server.cpu_s() - cpu_before
    result = json.loads(output.strip().splitlines()[-1])
    result["rate"] = result["requests"] / result["duration_s"]
    result["connections"] = connections
    requests = max(result["requests"], 1)
    result["server_cpu_ms_per_request"] = server_cpu_s * 1000 / requests
    wrk_cpu_s = (children_after.ru_utime - children_before.ru_utime) + (
        children_after.ru_stime - children_before.ru_stime
    )
    result["wrk_cpu_ms_per_request"] = wrk_cpu_s * 1000 / requests
    return result


def is_clean(run: dict) -> bool:
    return run["errors"] == 0 and run["non_2xx"] == 0 and run["p99_ms"] < SUSTAINED_P99_LIMIT_MS


def sustained(
    server: Server, path: str, bodies: list[dict], duration_s: int, ladder: list[int]
) -> tuple[dict, list]:
    """Best zero-error wrk run along the connection ladder (stops once throughput stops rising)."""
    runs, best = [], None
    for connections in ladder:
        run = wrk(server, path, bodies, connections, duration_s)
        runs.append(run)
        print(f"  wrk c={connections}: {json.dumps(run)}", flush=True)
        if is_clean(run) and (best is None or run["rate"] > best["rate"]):
            best = run
        elif best is not None and run["rate"] < best["rate"] * 1.05:
            break
    return best or {"rate": 0.0, "connections": None}, runs


# ---------------------------------------------------------------- main

FIXED_RATES = {"bm25": 50, "dense": 50, "hybrid": 50, "dense+rerank": 2, "recommend": 50}
LADDERS = {"dense+rerank": [1, 2, 4]}
DEFAULT_LADDER = [1, 2, 4, 8, 16, 32, 64]
SERVED = {
    "torch_threads": 1,
    "wide_batch_threads": 2,
    "batching__max_batch_size": 32,
    "batching__max_wait_ms": 2,
}
TUNING = [  # (torch threads, max batch size, max wait ms); dense search only
    (1, 1, 0),
    (2, 32, 2),
    (1, 32, 0),
    (1, 32, 2),
    (1, 32, 5),
]


def measure_endpoint(server: Server, name: str, path: str, bodies: list[dict], duration: int):
    wrk(server, path, bodies, 2, WARMUP_S)  # warm-up, not recorded
    rate = FIXED_RATES[name]
    fixed_rate(server, path, bodies, rate, WARMUP_S)  # not recorded
    fixed = fixed_rate(server, path, bodies, rate, duration)
    print(f"{name} fixed rate: {json.dumps(fixed)}", flush=True)
    best, runs = sustained(server, path, bodies, duration, LADDERS.get(name, DEFAULT_LADDER))
    return fixed, best, runs


def run_tuning(models, bodies, duration: int) -> str:
    path, dense_bodies = bodies["dense"]
    rows = []
    for threads, batch, wait_ms in TUNING:
        settings = {
            "torch_threads": threads,
            "wide_batch_threads": "null",
            "batching__max_batch_size": batch,
            "batching__max_wait_ms": wait_ms,
        }
        with (
            tempfile.TemporaryDirectory() as state,
            Server(models, Path(state), settings) as server,
        ):
            fixed, best, _ = measure_endpoint(server, "dense", path, dense_bodies, duration)
        rows.append((threads, batch, wait_ms, fixed, best))
    lines = [
        "| torch threads | max batch | max wait ms | p50 ms at 50/s | p99 ms at 50/s | "
        "generator lag p99 ms | server CPU ms/request at 50/s | sustained req/s | at connections |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for threads, batch, wait_ms, fixed, best in rows:
        lines.append(
            f"| {threads} | {batch} | {wait_ms} | {fixed['p50_ms']:.1f} | {fixed['p99_ms']:.1f} | "
            f"{fixed['generator_lag_p99_ms']:.1f} | {fixed['server_cpu_ms_per_request']:.1f} | "
            f"{best['rate']:.1f} | {best.get('connections')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--work", type=Path, default=Path(".nlprec/bench/service"))
    parser.add_argument("--endpoints", nargs="*", default=list(FIXED_RATES))
    parser.add_argument("--tune", action="store_true", help="dense only: sweep the TUNING grid")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument(
        "--set", nargs="*", default=[], help="server settings, e.g. wide_batch_threads=2"
    )
    args = parser.parse_args()
    SERVED.update(item.split("=", 1) for item in args.set)
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
    load_before = os.getloadavg()
    if args.tune:
        table = run_tuning(models, bodies, args.duration)
        load_after = os.getloadavg()
        markdown = f"{_load_line(load_before, load_after)}\n\n{table}"
        print(markdown)
        if not args.no_record:
            from nlprec.core.bench import record_section

            record_section("service load: dense tuning", markdown)
        return

    rows, details = [], {}
    with tempfile.TemporaryDirectory() as state, Server(models, Path(state), SERVED) as server:
        for name in args.endpoints:
            path, endpoint_bodies = bodies[name]
            fixed, best, runs = measure_endpoint(server, name, path, endpoint_bodies, args.duration)
            details[name] = {"fixed_rate": fixed, "wrk_runs": runs}
            rows.append((name, fixed, best))
    batched_dense = next((best for name, _, best in rows if name == "dense"), None)
    unbatched = None
    if "dense" in args.endpoints:
        settings = {**SERVED, "batching__max_batch_size": 1}
        with (
            tempfile.TemporaryDirectory() as state,
            Server(models, Path(state), settings) as server,
        ):
            path, endpoint_bodies = bodies["dense"]
            wrk(server, path, endpoint_bodies, 2, WARMUP_S)
            print("dense unbatched:", flush=True)
            unbatched, unbatched_runs = sustained(
                server, path, endpoint_bodies, args.duration, DEFAULT_LADDER
            )
            details["dense_unbatched"] = {"wrk_runs": unbatched_runs}
    load_after = os.getloadavg()
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


def _load_line(before, after) -> str:
    return (
        "Machine load average (1, 5, 15 min) "
        f"{before[0]:.1f} / {before[1]:.1f} / {before[2]:.1f} before, "
        f"{after[0]:.1f} / {after[1]:.1f} / {after[2]:.1f} after, on 2 cores shared with other "
        "engineers' jobs and with the load generators."
    )


def render(rows, batched_dense, unbatched, load_before, load_after, duration_s) -> str:
    served = ", ".join(f"{k.replace('batching__', '')} {v}" for k, v in SERVED.items())
    lines = [
        f"One uvicorn worker on 127.0.0.1 ({served}); {duration_s} s per measurement. "
        + _load_line(load_before, load_after),
        "",
        "| endpoint | fixed rate (req/s) | p50 ms | p95 ms | p99 ms | answers (status: count) | "
        "generator lag p99 / max ms | server CPU ms/request | highest sustained rate, zero errors "
        "(req/s) | at connections | its p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, fixed, best in rows:
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(fixed["statuses"].items()))
        lines.append(
            f"| {name} | {fixed['rate']} | {fixed['p50_ms']:.1f} | {fixed['p95_ms']:.1f} | "
            f"{fixed['p99_ms']:.1f} | {answers} | {fixed['generator_lag_p99_ms']:.1f} / "
            f"{fixed['generator_lag_max_ms']:.1f} | {fixed['server_cpu_ms_per_request']:.1f} | "
            f"{best['rate']:.1f} | {best.get('connections')} | "
            f"{best.get('p99_ms', float('nan')):.1f} |"
        )
    if batched_dense and unbatched:
        ratio = batched_dense["rate"] / unbatched["rate"] if unbatched["rate"] else float("inf")
        lines += [
            "",
            "Micro-batching, dense search at saturation (wrk, best zero-error run):",
            "",
            "| dense search | req/s | connections | p99 ms | server CPU ms/request |",
            "|---|---|---|---|---|",
        ]
        for label, run in (
            (f"batched (max_batch_size {SERVED['batching__max_batch_size']})", batched_dense),
            ("unbatched (max_batch_size 1)", unbatched),
        ):
            lines.append(
                f"| {label} | {run['rate']:.1f} | {run.get('connections')} | "
                f"{run.get('p99_ms', float('nan')):.1f} | "
                f"{run.get('server_cpu_ms_per_request', float('nan')):.1f} |"
            )
        lines.append(f"| ratio | {ratio:.2f}× | | | |")
    dense = next((fixed for name, fixed, _ in rows if name == "dense"), None)
    if dense:
        clean = dense["ok"] == dense["requests"]
        met = "met" if dense["p99_ms"] < 50 and clean else "missed"
        lines += [
            "",
            f"Target dense p99 < 50 ms at 50 req/s: {met} (p99 {dense['p99_ms']:.1f} ms, "
            f"{dense['ok']} of {dense['requests']} answered 200; generator lag p99 "
            f"{dense['generator_lag_p99_ms']:.1f} ms).",
        ]
    if batched_dense and unbatched:
        met = "met" if batched_dense["rate"] >= 2 * unbatched["rate"] else "missed"
        lines.append(f"Target micro-batching ≥ 2× the unbatched sustained dense rate: {met}.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

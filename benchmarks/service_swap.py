"""Model swap under load: `nlprec-serve` follows `models:/swap-bench@champion` while searches run.

Two SearchEngines over the first --docs SciFact abstracts (MiniLM, BM25; the second with other
fusion weights, so it is a different registered version) are registered in a fresh MLflow store.
The service starts on v1 (127.0.0.1, registry polled every --poll-s seconds); --clients closed-loop
clients search for --duration seconds. At a third of the run @champion moves to v2 (the poll swaps
it); at two thirds it moves back to v1 and `POST /v1/admin/reload` swaps at once. Reported:
requests, failures (any non-200 or transport error), and each swap's latency (alias moved ->
/ready names the new version).

    nice python benchmarks/service_swap.py [--docs 500] [--duration 30] [--clients 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SERVE = Path(sys.executable).with_name("nlprec-serve")
TOKEN = "swap-bench-token"
NAME = "swap-bench"


def build_engines(data: Path, docs: int, root: Path) -> tuple[Path, Path]:
    from nlprec.ranking.data import load_beir
    from nlprec.ranking.dense import DenseConfig, DenseRetriever
    from nlprec.ranking.engine import EngineSettings, SearchEngine

    corpus = load_beir(data / "beir" / "scifact").corpus[:docs]
    dense = DenseRetriever(DenseConfig(model="minilm", max_seq_length=64))
    first = SearchEngine.build(corpus, dense)
    first.save(root / "v1")
    first.settings = EngineSettings(fusion_method="rrf", fusion_weights=(0.3, 0.7))
    first.save(root / "v2")
    return root / "v1", root / "v2"


def register(folder: Path) -> str:
    from nlprec.core.registry import register_folder

    return register_folder(folder, NAME, experiment="service-swap")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def served_version(client: httpx.AsyncClient) -> str | None:
    response = await client.get("/ready", headers={"Authorization": f"Bearer {TOKEN}"})
    return response.json()["models"]["ranking"]["version"] if response.status_code == 200 else None


async def search_loop(client: httpx.AsyncClient, queries: list[str], stop: asyncio.Event, tally: dict):
    i = 0
    while not stop.is_set():
        body = {"query": queries[i % len(queries)], "k": 10, "mode": "hybrid"}
        i += 1
        started = time.perf_counter()
        try:
            response = await client.post("/v1/search", json=body)
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        tally["latencies"].append(time.perf_counter() - started)
        tally["requests"] += 1
        tally["failures"] += not ok


async def move_and_wait(client, target: str, reload: bool) -> float:
    """Move @champion to `target`, optionally POST the reload; seconds until /ready shows it."""
    import mlflow

    started = time.perf_counter()
    mlflow.MlflowClient().set_registered_model_alias(NAME, "champion", target)
    if reload:
        response = await client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        response.raise_for_status()
    while await served_version(client) != target:
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


async def drive(url: str, queries: list[str], duration: float, clients: int) -> dict:
    tally = {"requests": 0, "failures": 0, "latencies": []}
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        loops = [asyncio.create_task(search_loop(client, queries, stop, tally)) for _ in range(clients)]
        await asyncio.sleep(duration / 3)
        polled = await move_and_wait(client, "2", reload=False)
        await asyncio.sleep(max(0.0, duration / 3 - polled))
        reloaded = await move_and_wait(client, "1", reload=True)
        await asyncio.sleep(max(0.0, duration / 3 - reloaded))
        stop.set()
        await asyncio.gather(*loops)
    latencies = sorted(tally.pop("latencies"))
    p50, p99 = (latencies[int(q * (len(latencies) - 1))] * 1000 for q in (0.5, 0.99))
    return {**tally, "p50_ms": p50, "p99_ms": p99, "swap_polled_s": polled, "swap_reload_s": reloaded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--poll-s", type=float, default=1.0)
    args = parser.parse_args()
    data = Path(os.environ.get("NLPREC_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    with tempfile.TemporaryDirectory(prefix="swap-bench-") as tmp:
        root = Path(tmp)
        os.environ["NLPREC_HOME"] = str(root)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        import mlflow
        from nlprec.core.tracking import tracking_uri

        mlflow.set_tracking_uri(tracking_uri())
        v1, v2 = build_engines(data, args.docs, root)
        register(v1), register(v2)
        queries = [json.loads(line)["text"] for line in (data / "beir/scifact/queries.jsonl").open()][:200]
        port = free_port()
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": tracking_uri(),
            "NLPREC_SERVE_RANKING_MODEL": f"models:/{NAME}@champion",
            "NLPREC_SERVE_SESSIONREC_MODEL": "null",
            "NLPREC_SERVE_TOKEN": TOKEN,
            "NLPREC_SERVE_WATCH_REGISTRY_S": str(args.poll_s),
            "NLPREC_SERVE_STATE_DIR": str(root / "state"),
            "NLPREC_SERVE_PORT": str(port),
            "NLPREC_SERVE_LOG_LEVEL": "warning",
        }
        process = subprocess.Popen([str(SERVE)], env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while asyncio.run(_version_once(url)) != "1":
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("nlprec-serve did not become ready on v1")
                time.sleep(0.5)
            result = asyncio.run(drive(url, queries, args.duration, args.clients))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
    print(
        f"| {args.docs} docs, {args.clients} clients, {args.duration:.0f} s | {result['requests']} | "
        f"{result['failures']} | {result['p50_ms']:.0f} / {result['p99_ms']:.0f} ms | "
        f"{result['swap_polled_s']:.2f} s (poll {args.poll_s:g} s) | {result['swap_reload_s']:.2f} s |"
    )


async def _version_once(url: str) -> str | None:
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            return await served_version(client)
    except httpx.HTTPError:
        return None


if __name__ == "__main__":
    main()

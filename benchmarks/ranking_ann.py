"""ANN search on generated 384-d unit vectors: Flat vs HNSW vs IVF through nlprec's index factory.

Reports single-query latency (p50/p99), batched per-query latency and recall@10 against exact
search, and for exact Flat the bytes scanned per second against a measured memory bandwidth.
Vectors are a mixture of 1,000 Gaussian clusters (unit-normalised), queries drawn alike.

    python benchmarks/ranking_ann.py [--n 1000000] [--queries 1000] [--single 200]
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np
from nlprec.core.bench import machine_description, record_section
from nlprec.ranking.faiss_index import FaissConfig, build_index

DIM = 384
K = 10


def clustered_vectors(n: int, rng: np.random.Generator, centers: np.ndarray) -> np.ndarray:
    labels = rng.integers(0, len(centers), n)
    noise = rng.standard_normal((n, DIM), dtype=np.float32) * np.float32(0.35 / np.sqrt(DIM))
    x = np.ascontiguousarray(centers[labels] + noise, dtype=np.float32)
    faiss.normalize_L2(x)
    return x


def memory_bandwidth_gbs() -> float:
    """Read bandwidth: the best of 5 sums over a 1 GiB array (bytes read / second)."""
    data = np.ones(1 << 28, dtype=np.float32)
    best = min(_timed(lambda: data.sum()) for _ in range(5))
    return data.nbytes / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def measure(index, queries: np.ndarray, truth: np.ndarray, n_single: int, threads: int) -> dict:
    faiss.omp_set_num_threads(1)  # one query: thread start-up would dominate
    single = [_timed(lambda q=q: index.search(q[None, :], K)) * 1000 for q in queries[:n_single]]
    faiss.omp_set_num_threads(threads)
    start = time.perf_counter()
    _, found = index.search(queries, K)
    batched_ms = (time.perf_counter() - start) * 1000 / len(queries)
    return {"p50": np.percentile(single, 50), "p99": np.percentile(single, 99), "batched": batched_ms,
            "recall": recall_at_k(found, truth)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((1000, DIM), dtype=np.float32)
    base = clustered_vectors(args.n, rng, centers)  # (n, 384)
    queries = clustered_vectors(args.queries, rng, centers)
    ids = np.arange(args.n, dtype=np.int64)

    rows, flat_p50 = [], None
    flat, _ = build_index(FaissConfig(kind="flat"), DIM, base)
    flat.add_with_ids(base, ids)
    _, truth = flat.search(queries, K)
    flat_stats = measure(flat, queries, truth, args.single, args.threads)
    flat_p50 = flat_stats["p50"]
    rows.append(("flat (exact)", "-", 0.0, flat_stats))
    del flat
    settings = [
        (
            "hnsw",
            FaissConfig(kind="hnsw", hnsw_m=32, ef_construction=80),
            "efSearch",
            [32, 64, 128],
        ),
        ("ivf", FaissConfig(kind="ivf", nlist=int(4 * np.sqrt(args.n))), "nprobe", [8, 16, 32, 64]),
    ]
    for kind, cfg, knob, values in settings:
        start = time.perf_counter()
        index, _ = build_index(
            cfg, DIM, base[: min(len(base), 256 * 1024)] if kind == "ivf" else base[:1]
        )
        index.add_with_ids(base, ids)
        build_s = time.perf_counter() - start
        inner = faiss.downcast_index(index.index)
        for value in values:
            if kind == "hnsw":
                inner.hnsw.efSearch = value
            else:
                inner.nprobe = value
            rows.append(
                (
                    kind,
                    f"{knob}={value}",
                    build_s,
                    measure(index, queries, truth, args.single, args.threads),
                )
            )
        del index, inner

    bandwidth = memory_bandwidth_gbs()
    scanned_gbs = base.nbytes / (flat_p50 / 1000) / 1e9
    lines = [
        f"{args.n:,} vectors x {DIM} d (float32, {base.nbytes / 1e9:.2f} GB), {args.queries} queries, k={K}, "
        f"single queries on 1 thread, batches on {args.threads}; {machine_description()} (shared machine: other jobs were running).",
        "",
        "| index | setting | build s | single p50 ms | single p99 ms | batched ms/query | recall@10 | p50 speed-up vs flat |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, setting, build_s, s in rows:
        lines.append(f"| {kind} | {setting} | {build_s:.0f} | {s['p50']:.2f} | {s['p99']:.2f} | {s['batched']:.3f} | "
                     f"{s['recall']:.3f} | {flat_p50 / s['p50']:.1f}x |")  # fmt: skip
    good = [r for r in rows[1:] if r[3]["recall"] >= 0.95 and flat_p50 / r[3]["p50"] >= 10]
    lines += [
        "",
        f"Exact single-query Flat scans {scanned_gbs:.1f} GB/s against a measured read bandwidth of {bandwidth:.1f} GB/s "
        f"({100 * scanned_gbs / bandwidth:.0f}%).",
        "Settings with recall@10 >= 0.95 at >= 10x lower p50 latency than Flat: "
        + (", ".join(f"{k} {s}" for k, s, _, _ in good) or "none at this size"),
    ]  # fmt: skip
    table = "\n".join(lines)
    print(table)
    record_section("ranking-ann", table)


if __name__ == "__main__":
    main()

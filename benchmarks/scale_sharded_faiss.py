"""Sharded FAISS IVF-PQ past one machine's comfort: train on a sample, build shards as Ray tasks,
serve them through `faiss.IndexShards`; compare with one exact Flat index.

    python benchmarks/scale_sharded_faiss.py                       # 2M x 384, 4 shards, Ray tasks
    python benchmarks/scale_sharded_faiss.py --n 200000 --engine local --no-record   # a quick look
    python benchmarks/scale_sharded_faiss.py --latent-dim 32      # clusters that vary along 32 directions

1. **Data.** `n` unit vectors of dimension 384 from a Gaussian mixture (clustered like sentence
   embeddings, unlike uniform noise on which no ANN index does well), generated in chunks that any
   process rebuilds from (seed, chunk number) — so a shard task receives chunk numbers, not vectors.
2. **Train once.** `nlprec.ranking.faiss_index.build_index` (kind `ivfpq`) trains the coarse quantiser
   and the product quantiser on a random sample of `train_size` vectors: an empty, trained index.
3. **Build shards in parallel.** Each task deserialises the trained index, adds its chunks with their
   global ids and returns the serialised shard (tens of MB, not the 3 GB of raw vectors).
4. **Serve.** `faiss.IndexShards` searches every shard and merges the top k. Because every shard shares
   one trained quantiser, the merged result equals one IVF-PQ index holding all vectors (the test
   tests/scale/test_sharded_faiss.py checks it), so sharding costs no recall.
5. **Measure** against `IndexFlatIP` on the same vectors: build time, index memory (serialised size),
   recall@10 (share of the exact top 10 found) and search latency.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable

import faiss
import numpy as np
from nlprec.ranking.faiss_index import FaissConfig, build_index
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

SECTION = "scale: sharded FAISS IVF-PQ vs Flat"
QUERY_CHUNK = -1  # chunk number of the query stream (database chunks are 0, 1, ...)


class ShardedIndexConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_vectors: int = Field(2_000_000, ge=1)
    dim: int = Field(384, ge=8)
    n_clusters: int = Field(4096, ge=1, description="mixture components of the generated data")
    noise: float = Field(0.6, gt=0, description="within-cluster spread relative to the centre norm")
    latent_dim: int = Field(
        0, ge=0, description="within-cluster variation spans this many directions; 0 = all"
    )
    chunk_rows: int = Field(100_000, ge=1)
    n_shards: int = Field(4, ge=1)
    train_size: int = Field(65_536, ge=256)
    nlist: int = Field(1024, ge=1)
    pq_m: int = Field(48, ge=1, description="PQ sub-quantisers of 8 bits: 48 bytes a vector")
    nprobe: int = Field(32, ge=1)
    n_queries: int = Field(500, ge=1)
    k: int = Field(10, ge=1)
    seed: int = 0


# ------------------------------------------------------------------------------------------ data


def cluster_centres(cfg: ShardedIndexConfig) -> np.ndarray:
    rng = np.random.default_rng([cfg.seed, 0])
    centres = rng.standard_normal((cfg.n_clusters, cfg.dim)).astype(np.float32)  # (C, D)
    return centres / np.linalg.norm(centres, axis=1, keepdims=True)


def noise_basis(cfg: ShardedIndexConfig) -> np.ndarray | None:
    """(latent_dim, D) orthonormal directions of within-cluster variation; None for isotropic noise.

    Sentence embeddings vary along few directions (low intrinsic dimension); isotropic noise in all
    384 dimensions makes every cluster-mate almost equally near, a worst case no compressed index ranks.
    """
    if cfg.latent_dim == 0 or cfg.latent_dim >= cfg.dim:
        return None
    rng = np.random.default_rng([cfg.seed, 3])
    q, _ = np.linalg.qr(
        rng.standard_normal((cfg.dim, cfg.latent_dim))
    )  # (D, latent) orthonormal columns
    return q.T.astype(np.float32)


def generate_chunk(
    cfg: ShardedIndexConfig, chunk: int, rows: int, centres: np.ndarray
) -> np.ndarray:
    """`rows` unit vectors (rows, D): a random centre plus Gaussian noise, from (seed, chunk) alone."""
    rng = np.random.default_rng([cfg.seed, 1, chunk + 1])
    assignment = rng.integers(0, len(centres), size=rows)
    basis = noise_basis(cfg)
    if basis is None:
        noise = rng.standard_normal((rows, cfg.dim), dtype=np.float32) * (
            cfg.noise / np.sqrt(cfg.dim)
        )
    else:
        latent = rng.standard_normal((rows, len(basis)), dtype=np.float32)  # (rows, latent)
        noise = (latent @ basis) * (
            cfg.noise / np.sqrt(len(basis))
        )  # (rows, D), same expected norm
    vectors = centres[assignment] + noise  # (rows, D)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def chunk_layout(cfg: ShardedIndexConfig) -> list[tuple[int, int, int]]:
    """(chunk number, first global id, rows) of every database chunk."""
    layout, start, chunk = [], 0, 0
    while start < cfg.n_vectors:
        rows = min(cfg.chunk_rows, cfg.n_vectors - start)
        layout.append((chunk, start, rows))
        start, chunk = start + rows, chunk + 1
    return layout


def shard_chunks(cfg: ShardedIndexConfig) -> list[list[tuple[int, int, int]]]:
    """Chunks dealt round-robin to `n_shards` shards."""
    layout = chunk_layout(cfg)
    return [
        layout[shard :: cfg.n_shards]
        for shard in range(cfg.n_shards)
        if layout[shard :: cfg.n_shards]
    ]


def training_sample(cfg: ShardedIndexConfig, centres: np.ndarray) -> np.ndarray:
    """The first `train_size` database vectors: rows are drawn i.i.d., so these are a random sample."""
    parts, taken = [], 0
    for chunk, _, rows in chunk_layout(cfg):
        if taken >= cfg.train_size:
            break
        parts.append(generate_chunk(cfg, chunk, rows, centres)[: cfg.train_size - taken])
        taken += len(parts[-1])
    return np.concatenate(parts)


# --------------------------------------------------------------------------------------- indexes


def index_config(cfg: ShardedIndexConfig) -> FaissConfig:
    return FaissConfig(kind="ivfpq", nlist=cfg.nlist, nprobe=cfg.nprobe, pq_m=cfg.pq_m)


def train_empty_index(cfg: ShardedIndexConfig, sample: np.ndarray) -> bytes:
    """The trained, empty IVF-PQ index (ranking's `build_index`), serialised for the shard tasks."""
    index, _ = build_index(index_config(cfg), cfg.dim, sample)
    return faiss.serialize_index(index).tobytes()


def build_shard(
    cfg: ShardedIndexConfig, trained: bytes, chunks: list[tuple[int, int, int]]
) -> bytes:
    """One shard: the trained index plus these chunks' vectors under their global ids (serialised)."""
    faiss.omp_set_num_threads(1)  # one core per task; parallelism comes from the tasks
    index = faiss.deserialize_index(np.frombuffer(trained, dtype=np.uint8))
    centres = cluster_centres(cfg)
    for chunk, start, rows in chunks:
        index.add_with_ids(
            generate_chunk(cfg, chunk, rows, centres),
            np.arange(start, start + rows, dtype=np.int64),
        )
    return faiss.serialize_index(index).tobytes()


def _build_shard_from_dict(cfg: dict, trained: bytes, chunks: list[tuple[int, int, int]]) -> bytes:
    """`build_shard` for a Ray task: the config travels as a dict (a plain value on any worker)."""
    return build_shard(ShardedIndexConfig(**cfg), trained, chunks)


def build_shards(cfg: ShardedIndexConfig, trained: bytes, engine: str = "ray") -> list[bytes]:
    """Every shard, as Ray tasks (`engine="ray"`) or one after another in this process (`local`)."""
    assignments = shard_chunks(cfg)
    if engine == "local":
        return [build_shard(cfg, trained, chunks) for chunks in tqdm(assignments, desc="shards")]
    import ray

    if not ray.is_initialized():
        ray.init()
    remote_build = ray.remote(num_cpus=1)(_build_shard_from_dict)
    trained_ref = ray.put(trained)
    pending = [remote_build.remote(cfg.model_dump(), trained_ref, chunks) for chunks in assignments]
    with tqdm(total=len(pending), desc="shards (ray)") as bar:
        remaining = list(pending)
        while remaining:
            done, remaining = ray.wait(remaining, num_returns=1)
            bar.update(len(done))
    return ray.get(pending)


def serve_shards(
    cfg: ShardedIndexConfig, shards: list[bytes]
) -> tuple[faiss.Index, list[faiss.Index]]:
    """`IndexShards` over the deserialised shards (returned too: the caller keeps them alive)."""
    parts = [faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8)) for blob in shards]
    served = faiss.IndexShards(cfg.dim, True, False)  # threaded search, ids kept as added
    served.metric_type = faiss.METRIC_INNER_PRODUCT
    for part in parts:
        faiss.downcast_index(part.index).nprobe = min(cfg.nprobe, cfg.nlist)
        served.add_shard(part)
    return served, parts


def single_ivfpq(cfg: ShardedIndexConfig, trained: bytes) -> faiss.Index:
    """The reference: one IVF-PQ index holding every vector (same trained quantisers)."""
    return faiss.deserialize_index(
        np.frombuffer(build_shard(cfg, trained, chunk_layout(cfg)), dtype=np.uint8)
    )


def flat_index(cfg: ShardedIndexConfig) -> faiss.Index:
    centres = cluster_centres(cfg)
    index = faiss.IndexFlatIP(cfg.dim)
    for chunk, _, rows in tqdm(chunk_layout(cfg), desc="flat"):
        index.add(generate_chunk(cfg, chunk, rows, centres))
    return index


def queries(cfg: ShardedIndexConfig) -> np.ndarray:
    return generate_chunk(cfg, QUERY_CHUNK, cfg.n_queries, cluster_centres(cfg))


# --------------------------------------------------------------------------------------- metrics


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each query's exact top k that the approximate top k contains."""
    k = exact.shape[1]
    return float(
        np.mean([len(set(f) & set(e)) / k for f, e in zip(found.tolist(), exact.tolist())])
    )


def timed(function: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def search_latency_ms(
    index: faiss.Index, query_vectors: np.ndarray, k: int, singles: int = 50
) -> tuple[float, float]:
    """(ms per query in one batched call, ms for a single-query call: median of `singles`)."""
    _, batched = timed(lambda: index.search(query_vectors, k))
    one_at_a_time = []
    for row in query_vectors[:singles]:
        _, seconds = timed(lambda row=row: index.search(row[None, :], k))
        one_at_a_time.append(seconds)
    return 1000 * batched / len(query_vectors), 1000 * float(np.median(one_at_a_time))


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ------------------------------------------------------------------------------------------ main


def run(cfg: ShardedIndexConfig, engine: str) -> list[dict]:
    faiss.omp_set_num_threads(2)
    centres = cluster_centres(cfg)
    sample, sample_s = timed(lambda: training_sample(cfg, centres))
    trained, train_s = timed(lambda: train_empty_index(cfg, sample))
    shards, shards_s = timed(lambda: build_shards(cfg, trained, engine))
    served, shard_indexes = serve_shards(cfg, shards)
    query_vectors = queries(cfg)

    flat, flat_s = timed(lambda: flat_index(cfg))
    _, exact = flat.search(query_vectors, cfg.k)
    flat_batch_ms, flat_single_ms = search_latency_ms(flat, query_vectors, cfg.k)
    flat_bytes = flat.ntotal * cfg.dim * 4
    flat.reset()  # free the raw vectors before the sharded searches

    shard_bytes = sum(len(blob) for blob in shards)
    rows = [
        {"index": "Flat (exact)", "nprobe": "-", "build s": f"{flat_s:.1f}", "memory MiB": round(flat_bytes / 2**20),
         "recall@10": 1.0, "batched ms/query": round(flat_batch_ms, 3), "single-query ms": round(flat_single_ms, 2)},
    ]  # fmt: skip
    build = f"{shards_s:.1f} (+ sample {sample_s:.1f}, train {train_s:.1f})"
    for nprobe in sorted({cfg.nprobe // 4 or 1, cfg.nprobe, cfg.nprobe * 4}):
        for part in shard_indexes:
            faiss.downcast_index(part.index).nprobe = min(nprobe, cfg.nlist)
        _, found = served.search(query_vectors, cfg.k)
        batch_ms, single_ms = search_latency_ms(served, query_vectors, cfg.k)
        rows.append(
            {"index": f"IVF-PQ, {len(shards)} shards ({engine})", "nprobe": nprobe, "build s": build,
             "memory MiB": round(shard_bytes / 2**20), "recall@10": round(recall_at_k(found, exact), 4),
             "batched ms/query": round(batch_ms, 3), "single-query ms": round(single_ms, 2)}
        )  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2_000_000, help="database vectors")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument(
        "--latent-dim", type=int, default=0, help="directions of within-cluster variation; 0 = all"
    )
    parser.add_argument("--note", default="", help="a sentence added to the recorded notes")
    parser.add_argument(
        "--engine", choices=["ray", "local"], default="ray", help="how shards are built"
    )
    parser.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument(
        "--no-record", action="store_true", help="print the table, leave RESULTS.md alone"
    )
    args = parser.parse_args(argv)
    cfg = ShardedIndexConfig(
        n_vectors=args.n, n_shards=args.shards, nprobe=args.nprobe, latent_dim=args.latent_dim
    )
    if args.engine == "ray":
        import ray

        ray.init(num_cpus=args.ray_cpus, include_dashboard=False, object_store_memory=2 * 2**30)
    rows = run(cfg, args.engine)
    from nlprec.core.bench import markdown_table, record_section

    table = markdown_table(rows)
    notes = (
        f"{cfg.n_vectors:,} generated unit vectors, d={cfg.dim} ({cfg.n_clusters} Gaussian clusters, noise "
        f"{cfg.noise} along {cfg.latent_dim or cfg.dim} directions); {cfg.n_queries} held-out queries, k={cfg.k}. IVF-PQ: nlist={cfg.nlist}, m={cfg.pq_m} x 8 bits, "
        f"nprobe swept, trained on {cfg.train_size:,} sampled vectors with nlprec.ranking's `build_index`; "
        "shards built as Ray tasks (one CPU each) and served by `faiss.IndexShards`. Memory is the index "
        f"size (serialised; Flat = n x d x 4 bytes); peak RSS of the benchmark process "
        f"{peak_rss_gib():.1f} GiB. Latency: one batched call over all queries, and the median single-query "
        "call. The machine is a 2-core VM shared with other jobs while this ran: times are indicative."
    )
    print(table)
    if not args.no_record:
        record_section(SECTION, table + "\n\n" + notes + (" " + args.note if args.note else ""))


if __name__ == "__main__":
    main()

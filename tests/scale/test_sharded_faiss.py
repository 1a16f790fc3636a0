"""The sharded IVF-PQ of benchmarks/scale_sharded_faiss.py: shards served by IndexShards return what one
IVF-PQ index over all vectors returns (so sharding costs no recall), and Ray tasks build the same shards."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    """The benchmark script as `benchmarks.scale_sharded_faiss`: a name Ray workers (started in the
    repository root, which is on their path) can import too."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module("benchmarks.scale_sharded_faiss")


@pytest.fixture(scope="module")
def tiny(bench):
    cfg = bench.ShardedIndexConfig(
        n_vectors=6000, dim=32, n_clusters=64, chunk_rows=1000, n_shards=3, train_size=2048, nlist=16, pq_m=8,
        nprobe=4, n_queries=40,
    )  # fmt: skip
    trained = bench.train_empty_index(cfg, bench.training_sample(cfg, bench.cluster_centres(cfg)))
    return cfg, trained


def test_generated_chunks_are_reproducible_unit_vectors(bench, tiny):
    cfg, _ = tiny
    centres = bench.cluster_centres(cfg)
    first, again = (
        bench.generate_chunk(cfg, 2, 100, centres),
        bench.generate_chunk(cfg, 2, 100, centres),
    )
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(first, bench.generate_chunk(cfg, 3, 100, centres))
    covered = sorted(start for shard in bench.shard_chunks(cfg) for _, start, _ in shard)
    assert covered == list(range(0, 6000, 1000))  # every chunk in exactly one shard


def test_index_shards_equal_one_ivfpq_index(bench, tiny):
    cfg, trained = tiny
    served, _parts = bench.serve_shards(cfg, bench.build_shards(cfg, trained, engine="local"))
    single = bench.single_ivfpq(cfg, trained)
    faiss.downcast_index(single.index).nprobe = cfg.nprobe
    assert served.ntotal == single.ntotal == cfg.n_vectors
    query_vectors = bench.queries(cfg)
    sharded_scores, sharded_ids = served.search(query_vectors, cfg.k)
    single_scores, single_ids = single.search(query_vectors, cfg.k)
    np.testing.assert_allclose(sharded_scores, single_scores, rtol=1e-5, atol=1e-6)
    same = np.mean([set(a) == set(b) for a, b in zip(sharded_ids.tolist(), single_ids.tolist())])
    assert same >= 0.95  # equal scores; only ties between shards may swap ids

    exact = faiss.IndexFlatIP(cfg.dim)
    for chunk, _, rows in bench.chunk_layout(cfg):
        exact.add(bench.generate_chunk(cfg, chunk, rows, bench.cluster_centres(cfg)))
    _, exact_ids = exact.search(query_vectors, cfg.k)
    assert bench.recall_at_k(exact_ids, exact_ids) == 1.0
    assert 0.3 < bench.recall_at_k(sharded_ids, exact_ids) < 1.0  # approximate, but far from random


def test_ray_tasks_build_the_same_shards(bench, tiny, ray_local):
    cfg, trained = tiny
    assert bench.build_shards(cfg, trained, engine="ray") == bench.build_shards(
        cfg, trained, engine="local"
    )

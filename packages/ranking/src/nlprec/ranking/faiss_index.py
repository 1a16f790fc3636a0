"""FAISS index construction by name, with ``auto`` choosing by corpus size.

All indexes use inner product on unit vectors (= cosine). Sizes follow the FAISS wiki guidance:
exact search up to ~100k vectors, HNSW above, IVF with ~4*sqrt(n) lists for millions.
"""

from __future__ import annotations

import math
from typing import Literal

import faiss
import numpy as np
from pydantic import BaseModel, Field

IndexKind = Literal["auto", "flat", "hnsw", "ivf", "ivfpq", "ivfsq8"]
AUTO_FLAT_MAX = 100_000  # below this, exact search is fast enough and needs no training
AUTO_HNSW_MAX = 2_000_000  # below this, HNSW fits memory comfortably; above, IVF-PQ


class FaissConfig(BaseModel):
    model_config = {"extra": "forbid"}
    kind: IndexKind = "auto"
    hnsw_m: int = Field(32, ge=4)
    ef_construction: int = Field(200, ge=8)
    ef_search: int = Field(128, ge=1)
    nlist: int | None = Field(None, ge=1, description="IVF lists; None = 4*sqrt(n)")
    nprobe: int = Field(16, ge=1)
    pq_m: int = Field(48, ge=1, description="IVF-PQ sub-quantisers; must divide the dimension")


def resolve_kind(kind: IndexKind, n_vectors: int) -> str:
    if kind != "auto":
        return kind
    if n_vectors <= AUTO_FLAT_MAX:
        return "flat"
    return "hnsw" if n_vectors <= AUTO_HNSW_MAX else "ivfpq"


def supports_remove(index: faiss.Index) -> bool:
    """HNSW graphs cannot drop nodes; deleted ids there are tombstoned and filtered."""
    base = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    return not isinstance(base, faiss.IndexHNSW)


def build_index(
    config: FaissConfig, dim: int, train_vectors: np.ndarray
) -> tuple[faiss.Index, str]:
    """An empty ``IndexIDMap2`` around the chosen index, trained where the kind needs it."""
    kind = resolve_kind(config.kind, len(train_vectors))
    metric = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        base = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        base = faiss.IndexHNSWFlat(dim, config.hnsw_m, metric)
        base.hnsw.efConstruction = config.ef_construction
        base.hnsw.efSearch = config.ef_search
    else:
        nlist = config.nlist or max(1, int(4 * math.sqrt(len(train_vectors))))
        nlist = min(
            nlist, max(1, len(train_vectors) // 39)
        )  # FAISS wants >= 39 training points a list
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivf":
            base = faiss.IndexIVFFlat(quantizer, dim, nlist, metric)
        elif kind == "ivfsq8":
            base = faiss.IndexIVFScalarQuantizer(
                quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, metric
            )
        elif kind == "ivfpq":
            if dim % config.pq_m:
                raise ValueError(f"pq_m={config.pq_m} must divide the embedding dimension {dim}")
            base = faiss.IndexIVFPQ(quantizer, dim, nlist, config.pq_m, 8, metric)
        else:
            raise ValueError(f"unknown FAISS index kind {kind!r}")
        base.train(train_vectors)
        base.nprobe = min(config.nprobe, nlist)
        base.own_fields = True
        quantizer.this.disown()
    index = faiss.IndexIDMap2(base)
    index.own_fields = True
    base.this.disown()
    return index, kind


def set_search_params(index: faiss.Index, config: FaissConfig) -> None:
    """Apply efSearch / nprobe to a loaded index (FAISS stores nprobe, not always efSearch)."""
    base = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    if isinstance(base, faiss.IndexHNSW):
        base.hnsw.efSearch = config.ef_search
    if isinstance(base, faiss.IndexIVF):
        base.nprobe = min(config.nprobe, base.nlist)

"""Dense first stage: a bi-encoder, unit vectors and a FAISS index that we keep an id map for.

FAISS stores int64 ids; ``entries[i] = (doc_id, passage_index)`` maps them back. Deletion removes
the vectors where the index can (Flat, IVF) and always records a tombstone, so HNSW (which cannot
remove) and every other kind filter deleted documents the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import faiss
import numpy as np
from nlprec.core.hashing import hash_file
from nlprec.core.io import atomic_write_bytes, atomic_write_text
from nlprec.core.threads import set_threads
from nlprec.ranking import encoder as enc
from nlprec.ranking.data import DataError, document_text, normalise_document
from nlprec.ranking.faiss_index import FaissConfig, build_index, set_search_params, supports_remove
from nlprec.ranking.passages import Aggregation, aggregate_passage_scores, split_passages
from pydantic import BaseModel, Field

PASSAGE_OVERFETCH = 3  # with passages, fetch this many times k hits so k distinct documents remain


class IndexMismatchError(DataError):
    """An index used with another encoder, another dimension, or a damaged file."""


class PassageConfig(BaseModel):
    model_config = {"extra": "forbid"}
    window: int = Field(200, ge=8, description="tokens per passage")
    stride: int = Field(100, ge=1, description="tokens between passage starts")
    aggregation: Aggregation = "maxp"


class DenseConfig(BaseModel):
    model_config = {"extra": "forbid"}
    model: str = "minilm"
    faiss: FaissConfig = FaissConfig()
    batch_size: int = Field(64, ge=1)
    max_seq_length: int | None = Field(
        None, ge=8, description="None keeps the model's (256 for MiniLM)"
    )
    passages: PassageConfig | None = None
    threads: int | None = Field(None, ge=1)
    device: str | None = None
    backend: Literal["torch", "onnx"] = Field(
        "torch", description="torch: sentence-transformers; onnx: ONNX Runtime on CPU"
    )
    int8: bool = Field(False, description="dynamic int8 quantisation of the encoder (CPU)")
    onnx_gelu: Literal["exact", "tanh"] = Field(
        "exact", description="onnx: tanh approximation of GELU fused into the graph (faster)"
    )


class DenseRetriever:
    def __init__(self, config: DenseConfig | None = None) -> None:
        self.config = config or DenseConfig()
        set_threads(self.config.threads)
        self.model_dir = enc.resolve_model_dir(self.config.model)
        self.fingerprint = enc.model_fingerprint(self.model_dir)
        self._encoder = None
        self.index: faiss.Index | None = None
        self.kind: str | None = None
        self.entries: list[tuple[str, int]] = []  # faiss id -> (doc_id, passage index)
        self.tombstones: set[int] = set()
        self._live_units: dict[str, list[int]] = {}  # live doc_id -> its faiss ids
        self.truncated = 0  # texts longer than max_seq_length (tail unseen), counted at indexing

    # -- encoding ---------------------------------------------------------------------------
    @property
    def encoder(self):
        if self._encoder is None:
            cfg = self.config
            self._encoder = self._load_encoder(cfg.backend, cfg.int8, cfg.threads)
        return self._encoder

    def _load_encoder(self, backend: str, int8: bool, threads: int | None):
        cfg = self.config
        return enc.load_encoder(
            str(self.model_dir), cfg.device, cfg.max_seq_length, int8, backend, threads,
            onnx_gelu=cfg.onnx_gelu,
        )  # fmt: skip

    def use_query_backend(self, backend: str, threads: int | None = None) -> None:
        """Encode from now on with another float32 backend of the same model (e.g. ONNX Runtime for
        a CPU service, faster than PyTorch on short queries). The index and the
        stored config are unchanged: fp32 ONNX embeddings equal PyTorch's to ~1e-5 (tests/ranking/
        test_onnx.py), so vectors from either backend search the same index."""
        self._encoder = self._load_encoder(backend, False, threads)

    @property
    def dim(self) -> int:
        return self.index.d if self.index is not None else enc.embedding_dim(self.encoder)

    def encode_queries(self, queries: list[str]) -> np.ndarray:
        """(n_queries, dim) float32 unit vectors."""
        return enc.encode_queries(self.encoder, queries, self.config.batch_size)

    def document_units(self, docs: list[dict[str, str]]) -> tuple[list[tuple[str, int]], list[str]]:
        """What is embedded: one text per document, or its passages when passages are configured."""
        entries, texts = [], []
        for doc in docs:
            text = document_text(doc)
            pieces = [text]
            if self.config.passages is not None:
                p = self.config.passages
                pieces = split_passages(text, self.encoder.tokenizer, p.window, p.stride)
            entries += [(doc["id"], i) for i in range(len(pieces))]
            texts += pieces
        return entries, texts

    def encode_documents(self, texts: list[str], progress: bool = True) -> np.ndarray:
        self.truncated += enc.count_truncated(self.encoder, texts)
        return enc.encode_documents(self.encoder, texts, self.config.batch_size, progress=progress)

    # -- building and editing ---------------------------------------------------------------
    def build(
        self, docs: list[dict[str, str]], vectors: np.ndarray | None = None, progress: bool = True
    ):
        """Index ``docs``; ``vectors`` (one row per unit of ``document_units``) skips encoding."""
        if not docs:
            raise DataError("cannot build a dense index over an empty corpus")
        docs = [normalise_document(d, where=f"document {i}") for i, d in enumerate(docs)]
        entries, texts = self.document_units(docs)
        if vectors is None:
            vectors = self.encode_documents(texts, progress)
        self._check_vectors(vectors, expected_rows=len(entries), expected_dim=vectors.shape[1])
        self.index, self.kind = build_index(self.config.faiss, vectors.shape[1], vectors)
        self.entries, self.tombstones, self._live_units = [], set(), {}
        self._append(entries, vectors)
        return self

    def _append(self, entries: list[tuple[str, int]], vectors: np.ndarray) -> None:
        ids = np.arange(len(self.entries), len(self.entries) + len(entries), dtype=np.int64)
        self.index.add_with_ids(vectors, ids)
        self.entries += entries
        for faiss_id, (doc, _) in zip(ids.tolist(), entries, strict=True):
            self._live_units.setdefault(doc, []).append(faiss_id)

    def live_doc_ids(self) -> set[str]:
        return set(self._live_units)

    def add(self, docs: list[dict[str, str]]) -> None:
        """Encode and add documents; no rebuild, existing vectors are untouched."""
        docs = [normalise_document(d, where=f"document {i}") for i, d in enumerate(docs)]
        clash = [d["id"] for d in docs if d["id"] in self._live_units]
        if clash:
            raise DataError(f"document ids already indexed: {clash[:5]}")
        entries, texts = self.document_units(docs)
        self._append(entries, self.encode_documents(texts, progress=False))

    def delete(self, doc_id: str) -> None:
        if doc_id not in self._live_units:
            raise KeyError(f"document {doc_id!r} is not in the dense index")
        ids = self._live_units.pop(doc_id)
        if supports_remove(self.index):
            self.index.remove_ids(np.array(ids, dtype=np.int64))
        self.tombstones.update(ids)

    # -- search -------------------------------------------------------------------------------
    def _check_vectors(
        self, vectors: np.ndarray, expected_rows: int | None, expected_dim: int
    ) -> None:
        if vectors.ndim != 2 or vectors.shape[1] != expected_dim:
            raise IndexMismatchError(
                f"vectors of shape {vectors.shape} do not fit an index of dimension {expected_dim}"
            )
        if expected_rows is not None and len(vectors) != expected_rows:
            raise DataError(f"{len(vectors)} vectors for {expected_rows} texts")
        if not np.isfinite(vectors).all():
            raise DataError("vectors contain NaN or infinity")

    def search_vectors(self, vectors: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """Top-k documents per query vector (n_queries, dim), best first."""
        if self.index is None:
            raise RuntimeError("DenseRetriever.search before build() or load()")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._check_vectors(vectors, None, self.index.d)
        overfetch = PASSAGE_OVERFETCH if self.config.passages else 1
        n_fetch = min(self.index.ntotal, k * overfetch + len(self.tombstones))
        if n_fetch <= 0:
            return [[] for _ in range(len(vectors))]
        scores, ids = self.index.search(vectors, n_fetch)  # (n_queries, n_fetch) each
        return [
            self._collapse(row_ids, row_scores, k)
            for row_ids, row_scores in zip(ids, scores, strict=True)
        ]

    def _collapse(self, ids: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[str, float]]:
        scored = [
            (*self.entries[i], float(s))
            for i, s in zip(ids, scores, strict=True)
            if i >= 0 and i not in self.tombstones
        ]
        how = self.config.passages.aggregation if self.config.passages else "maxp"
        per_doc = aggregate_passage_scores(scored, how)
        return sorted(per_doc.items(), key=lambda item: -item[1])[:k]

    def search(self, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
        return self.search_vectors(self.encode_queries(queries), k)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        self.snapshot()(directory)

    def snapshot(self) -> Callable[[str | Path], None]:
        """Copy the index now (a memory copy); the returned function writes that copy, so the
        retriever may change while it does."""
        index_bytes = faiss.serialize_index(self.index)  # (n_bytes,) uint8, a copy
        entries, tombstones = list(self.entries), sorted(self.tombstones)
        meta = {
            "config": self.config.model_dump(),
            "fingerprint": self.fingerprint,
            "dim": int(self.index.d),
            "kind": self.kind,
            "ntotal": int(self.index.ntotal),
            "tombstones": tombstones,
            "truncated": self.truncated,
        }

        def write(directory: str | Path) -> None:
            directory = Path(directory)
            directory.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(directory / "index.faiss", memoryview(index_bytes))
            meta["index_sha256"] = hash_file(directory / "index.faiss")
            atomic_write_text(directory / "entries.json", json.dumps(entries))
            atomic_write_text(directory / "meta.json", json.dumps(meta))

        return write

    @classmethod
    def load(cls, directory: str | Path, model: str | None = None) -> DenseRetriever:
        """Load an index; ``model`` overrides the stored encoder reference but must be the same model."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / "meta.json").read_text())
            entries = [tuple(e) for e in json.loads((directory / "entries.json").read_text())]
        except (OSError, json.JSONDecodeError) as err:
            raise IndexMismatchError(
                f"{directory}: dense index metadata missing or corrupt ({err})"
            ) from err
        index_path = directory / "index.faiss"
        if not index_path.exists() or hash_file(index_path) != meta["index_sha256"]:
            raise IndexMismatchError(
                f"{index_path}: missing, truncated or modified (checksum differs)"
            )
        config = DenseConfig(**meta["config"])
        if model is not None:
            config.model = model
        retriever = cls(config)
        if retriever.fingerprint != meta["fingerprint"]:
            raise IndexMismatchError(
                f"{directory} was built with another encoder (fingerprint {meta['fingerprint']}, "
                f"{config.model!r} has {retriever.fingerprint}); rebuild the index with this model"
            )
        retriever.index = faiss.read_index(str(index_path))
        if retriever.index.d != meta["dim"] or len(entries) != len(set(range(len(entries)))):
            raise IndexMismatchError(
                f"{directory}: index dimension {retriever.index.d} != {meta['dim']}"
            )
        retriever.kind, retriever.entries = meta["kind"], entries
        retriever.tombstones, retriever.truncated = set(meta["tombstones"]), meta["truncated"]
        for faiss_id, (doc, _) in enumerate(entries):
            if faiss_id not in retriever.tombstones:
                retriever._live_units.setdefault(doc, []).append(faiss_id)
        set_search_params(retriever.index, config.faiss)
        return retriever

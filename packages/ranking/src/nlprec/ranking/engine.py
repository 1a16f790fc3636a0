"""SearchEngine: the online face of the package (what the service and batch search load).

One folder holds everything a search needs::

    manifest.json     format, fusion weights, rerank depth and alpha, model versions
    documents.jsonl   id, title, text of every live document
    bm25/             BM25Retriever
    dense/            DenseRetriever (FAISS index, id map, tombstones)
    encoder/          the bi-encoder, when it is not a bundled model (e.g. fine-tuned)
    reranker/         the cross-encoder, optional

``save`` writes a temporary sibling folder and renames it into place, so a reader never sees a
half-written engine. ``snapshot`` copies the state in memory and returns the writer, so a server
saves while it goes on taking writes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from nlprec.core.io import atomic_directory
from nlprec.ranking.bm25 import BM25Retriever
from nlprec.ranking.data import DataError, check_unique_ids, normalise_document
from nlprec.ranking.dense import DenseRetriever
from nlprec.ranking.encoder import model_fingerprint
from nlprec.ranking.fusion import FusionMethod, fuse
from nlprec.ranking.rerank import (
    CrossEncoderReranker,
    NoRerankerError,
    RerankerConfig,
    interpolate,
    rerank_with_tail,
)
from pydantic import BaseModel, Field

FORMAT_VERSION = 1
SearchMode = Literal["bm25", "dense", "hybrid"]


@dataclass(frozen=True)
class Hit:
    doc_id: str
    score: float


class EngineSettings(BaseModel):
    """How the stages are combined; the weights come from tuning on a train split."""

    model_config = {"extra": "forbid"}
    fusion_method: FusionMethod = "rrf"
    fusion_weights: tuple[float, float] = (0.5, 0.5)  # (bm25, dense)
    fusion_depth: int = Field(
        100, ge=1, description="hits taken from each first stage before fusing"
    )
    rerank_mode: SearchMode = "hybrid"
    rerank_depth: int = Field(20, ge=1)
    rerank_alpha: float = Field(
        1.0, ge=0, le=1, description="weight of the cross-encoder vs first stage"
    )


class SearchEngine:
    def __init__(
        self,
        documents: list[dict[str, str]],
        bm25: BM25Retriever,
        dense: DenseRetriever,
        reranker: CrossEncoderReranker | None = None,
        settings: EngineSettings | None = None,
    ) -> None:
        self.documents = {d["id"]: d for d in documents}
        self.bm25, self.dense, self.reranker = bm25, dense, reranker
        self.settings = settings or EngineSettings()

    # -- queries ------------------------------------------------------------------------------
    @property
    def has_reranker(self) -> bool:
        return self.reranker is not None

    @property
    def model_versions(self) -> dict[str, str]:
        versions = {
            "format": str(FORMAT_VERSION),
            "encoder": f"{self.dense.config.model}@{self.dense.fingerprint}",
        }
        if self.reranker is not None:
            versions["reranker"] = getattr(self.reranker, "fingerprint", "in-memory")
        return versions

    def encode_queries(self, queries: list[str]) -> np.ndarray:
        """(n_queries, dim) float32 unit vectors."""
        return self.dense.encode_queries(queries)

    def search_dense_vectors(self, vectors: np.ndarray, k: int) -> list[list[Hit]]:
        return [[Hit(d, s) for d, s in hits] for hits in self.dense.search_vectors(vectors, k)]

    def search(
        self, queries: list[str], k: int, mode: SearchMode = "hybrid", rerank: bool = False
    ) -> list[list[Hit]]:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if mode not in ("bm25", "dense", "hybrid"):
            raise ValueError(f"unknown search mode {mode!r}: expected bm25, dense or hybrid")
        if rerank and self.reranker is None:
            raise NoRerankerError("this engine has no reranker; search with rerank=False")
        depth = max(k, self.settings.rerank_depth) if rerank else k
        first = self._first_stage(queries, depth, mode)
        if rerank:
            first = [self._rerank_hits(q, hits) for q, hits in zip(queries, first, strict=True)]
        return [[Hit(d, float(s)) for d, s in hits[:k]] for hits in first]

    def _first_stage(
        self, queries: list[str], k: int, mode: SearchMode
    ) -> list[list[tuple[str, float]]]:
        if mode == "bm25":
            return self.bm25.search(queries, k)
        if mode == "dense":
            return self.dense.search(queries, k)
        depth = max(k, self.settings.fusion_depth)
        bm25_run = dict(enumerate(dict(h) for h in self.bm25.search(queries, depth)))
        dense_run = dict(enumerate(dict(h) for h in self.dense.search(queries, depth)))
        fused = fuse(
            [bm25_run, dense_run], self.settings.fusion_method, self.settings.fusion_weights
        )
        return [
            sorted(fused.get(i, {}).items(), key=lambda item: -item[1])[:k]
            for i in range(len(queries))
        ]

    def _rerank_hits(self, query: str, hits: list[tuple[str, float]]) -> list[tuple[str, float]]:
        top = hits[: self.settings.rerank_depth]
        if not top:
            return []
        scores = self.rerank(query, [self._text(d) for d, _ in top])
        reranked = {"q": dict(zip([d for d, _ in top], scores, strict=True))}
        blended = interpolate(reranked, {"q": dict(top)}, self.settings.rerank_alpha)
        merged = rerank_with_tail(blended, {"q": dict(hits)})["q"]
        return sorted(merged.items(), key=lambda item: -item[1])

    def _text(self, doc_id: str) -> str:
        doc = self.documents[doc_id]
        return f"{doc['title']} {doc['text']}".strip()

    def rerank(self, query: str, documents: list[str]) -> list[float]:
        """Cross-encoder logits for ``documents`` (higher = more relevant)."""
        if self.reranker is None:
            raise NoRerankerError("this engine was saved without a reranker (cross-encoder)")
        return self.reranker.score(query, documents)

    def document(self, doc_id: str) -> dict[str, str]:
        try:
            return dict(self.documents[doc_id])
        except KeyError:
            raise KeyError(f"no document with id {doc_id!r}") from None

    # -- updates ------------------------------------------------------------------------------
    def add_documents(self, documents: list[dict]) -> int:
        """Add new documents to both indexes (dense: no rebuild); returns how many were added."""
        docs = [normalise_document(d, where=f"document {i}") for i, d in enumerate(documents)]
        if not docs:
            return 0
        check_unique_ids(docs, where="add_documents")
        clash = [d["id"] for d in docs if d["id"] in self.documents]
        if clash:
            raise DataError(f"document ids already in the engine: {clash[:5]}")
        self.dense.add(docs)
        self.bm25.add(docs)
        self.documents.update({d["id"]: d for d in docs})
        return len(docs)

    def delete_document(self, doc_id: str) -> None:
        if doc_id not in self.documents:
            raise KeyError(f"no document with id {doc_id!r}")
        self.dense.delete(doc_id)
        self.bm25.delete(doc_id)
        del self.documents[doc_id]

    # -- persistence ----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write to a temporary sibling folder, then swap it into place (atomic for readers)."""
        return self.snapshot()(directory)

    def snapshot(self) -> Callable[[str | Path], Path]:
        """Copy the engine's changing state now (documents, BM25 texts, the FAISS index: memory
        copies); the returned function saves that copy as `save` does, while the engine goes on
        taking writes."""
        documents = list(self.documents.values())
        write_bm25, write_dense = self.bm25.snapshot(), self.dense.snapshot()

        def write(directory: str | Path) -> Path:
            target = Path(directory).resolve()
            with atomic_directory(target) as staging:
                self._write(staging, documents, write_bm25, write_dense)
            return target

        return write

    def _write(self, folder: Path, documents: list[dict], write_bm25, write_dense) -> None:
        with (folder / "documents.jsonl").open("w", encoding="utf-8") as handle:
            for doc in documents:
                handle.write(json.dumps(doc) + "\n")
        write_bm25(folder / "bm25")
        encoder_ref = self.dense.config.model
        if Path(encoder_ref).is_dir():  # a local (e.g. fine-tuned) encoder travels with the engine
            shutil.copytree(self.dense.model_dir, folder / "encoder")
            encoder_ref = "encoder"
        write_dense(folder / "dense")
        reranker = None
        if self.reranker is not None:
            self.reranker.save(folder / "reranker")
            reranker = self.reranker.config.model_dump() | {"model": "reranker"}
        manifest = {
            "format": FORMAT_VERSION,
            "settings": self.settings.model_dump(),
            "encoder": encoder_ref,
            "reranker": reranker,
            "n_documents": len(documents),
        }
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> SearchEngine:
        folder = Path(directory)
        manifest_path = folder / "manifest.json"
        if not manifest_path.exists():
            raise DataError(f"{folder} is not a SearchEngine folder (no manifest.json)")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{manifest_path}: corrupt ({err.msg})") from err
        if manifest.get("format") != FORMAT_VERSION:
            raise DataError(f"{folder}: engine format {manifest.get('format')} != {FORMAT_VERSION}")
        documents = [
            json.loads(line)
            for line in (folder / "documents.jsonl").read_text().splitlines()
            if line
        ]
        encoder = (
            str(folder / "encoder") if manifest["encoder"] == "encoder" else manifest["encoder"]
        )
        dense = DenseRetriever.load(folder / "dense", model=encoder)
        if device is not None:
            dense.config.device = device
        bm25 = BM25Retriever.load(folder / "bm25")
        if len(documents) != manifest["n_documents"]:
            raise DataError(
                f"{folder}/documents.jsonl is truncated ({len(documents)} of {manifest['n_documents']})"
            )
        reranker = None
        if manifest["reranker"] is not None:
            config = RerankerConfig(**(manifest["reranker"] | {"model": str(folder / "reranker")}))
            reranker = CrossEncoderReranker(config, device=device)
            reranker.fingerprint = model_fingerprint(folder / "reranker")
        return cls(documents, bm25, dense, reranker, EngineSettings(**manifest["settings"]))

    @classmethod
    def build(
        cls,
        documents: list[dict],
        dense: DenseRetriever,
        bm25: BM25Retriever | None = None,
        reranker: CrossEncoderReranker | None = None,
        settings: EngineSettings | None = None,
    ) -> SearchEngine:
        """An engine over ``documents``; ``dense`` may already be built over them (else it is built)."""
        docs = [normalise_document(d, where=f"document {i}") for i, d in enumerate(documents)]
        if not docs:
            raise DataError("cannot build a SearchEngine over an empty corpus")
        check_unique_ids(docs, where="SearchEngine.build")
        if dense.index is None:
            dense.build(docs)
        bm25 = bm25 if bm25 is not None else BM25Retriever().index(docs)
        return cls(docs, bm25, dense, reranker, settings)

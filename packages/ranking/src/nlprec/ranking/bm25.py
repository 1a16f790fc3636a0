"""BM25 first stage on bm25s (Lucene's BM25 variant), with deletions as a score mask.

score(q, d) = sum_{t in q} idf(t) * tf(t,d) * (k1 + 1) / (tf(t,d) + k1 * (1 - b + b * |d| / avgdl))
with Lucene's idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5)).
"""

from __future__ import annotations

import json
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
from nlprec.ranking.data import DataError, document_text, normalise_document
from pydantic import BaseModel, Field


class BM25Config(BaseModel):
    model_config = {"extra": "forbid"}
    k1: float = Field(0.9, gt=0)
    b: float = Field(0.4, ge=0, le=1)
    stemmer: str | None = "english"
    stopwords: str | None = "en"
    method: str = "lucene"


class BM25Retriever:
    """Index documents once; ``search`` returns the top-k (doc_id, score) per query.

    Adding documents re-indexes (BM25 statistics depend on the whole corpus; bm25s indexes
    SciFact in about a second). Deleting sets a mask so deleted documents never come back.
    """

    def __init__(self, config: BM25Config | None = None) -> None:
        self.config = config or BM25Config()
        self._stemmer = Stemmer.Stemmer(self.config.stemmer) if self.config.stemmer else None
        self.doc_ids: list[str] = []
        self.texts: list[str] = []
        self.deleted: set[str] = set()
        self._model: bm25s.BM25 | None = None

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        return bm25s.tokenize(
            texts,
            stopwords=self.config.stopwords,
            stemmer=self._stemmer,
            return_ids=False,
            show_progress=False,
        )

    def index(self, docs: list[dict[str, str]]) -> BM25Retriever:
        if not docs:
            raise DataError("cannot build a BM25 index over an empty corpus")
        docs = [normalise_document(d, where=f"document {i}") for i, d in enumerate(docs)]
        self.doc_ids = [d["id"] for d in docs]
        self.texts = [document_text(d) for d in docs]
        self.deleted = set()
        self._build()
        return self

    def _build(self) -> None:
        self._model = bm25s.BM25(k1=self.config.k1, b=self.config.b, method=self.config.method)
        self._model.index(self._tokenize(self.texts), show_progress=False)

    def add(self, docs: list[dict[str, str]]) -> None:
        docs = [normalise_document(d, where=f"document {i}") for i, d in enumerate(docs)]
        known = set(self.doc_ids)
        for doc in docs:
            if doc["id"] in known and doc["id"] not in self.deleted:
                raise DataError(f"document id {doc['id']!r} is already indexed")
        for doc in docs:
            if doc["id"] in known:  # re-adding a deleted id replaces the old text
                position = self.doc_ids.index(doc["id"])
                self.texts[position] = document_text(doc)
                self.deleted.discard(doc["id"])
            else:
                self.doc_ids.append(doc["id"])
                self.texts.append(document_text(doc))
        self._build()

    def delete(self, doc_id: str) -> None:
        if doc_id not in set(self.doc_ids) or doc_id in self.deleted:
            raise KeyError(f"document {doc_id!r} is not in the BM25 index")
        self.deleted.add(doc_id)

    @property
    def n_live(self) -> int:
        return len(self.doc_ids) - len(self.deleted)

    def search(self, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
        """Top-k per query, best first; documents with score 0 (no shared term) are dropped."""
        if self._model is None:
            raise RuntimeError("BM25Retriever.search before index() or load()")
        k = min(k, self.n_live)
        if k <= 0 or not queries:
            return [[] for _ in queries]
        mask = None
        if self.deleted:
            mask = np.array(
                [0.0 if d in self.deleted else 1.0 for d in self.doc_ids], dtype=np.float32
            )
        indices, scores = self._model.retrieve(
            self._tokenize(queries), k=k, show_progress=False, weight_mask=mask, n_threads=1
        )
        return [
            [(self.doc_ids[i], float(s)) for i, s in zip(row_i, row_s, strict=True) if s > 0]
            for row_i, row_s in zip(indices, scores, strict=True)
        ]

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {
            "config": self.config.model_dump(),
            "doc_ids": self.doc_ids,
            "deleted": sorted(self.deleted),
        }
        (directory / "bm25.json").write_text(json.dumps(state))
        (directory / "texts.json").write_text(json.dumps(self.texts))

    @classmethod
    def load(cls, directory: str | Path) -> BM25Retriever:
        """Rebuilds the index from the saved texts (seconds), so no binary file can go stale."""
        directory = Path(directory)
        try:
            state = json.loads((directory / "bm25.json").read_text())
            texts = json.loads((directory / "texts.json").read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"{directory}: BM25 index missing or corrupt ({err})") from err
        retriever = cls(BM25Config(**state["config"]))
        if len(texts) != len(state["doc_ids"]):
            raise DataError(
                f"{directory}: BM25 index truncated ({len(texts)} texts, {len(state['doc_ids'])} ids)"
            )
        retriever.doc_ids, retriever.texts, retriever.deleted = (
            state["doc_ids"],
            texts,
            set(state["deleted"]),
        )
        retriever._build()
        return retriever

"""Small stand-ins with the interfaces of SearchEngine and OnlineRecommender (tests only).

They are deterministic, fast and inspectable (`encode_calls` and `search_calls` record the size
of each model call), so the service's own behaviour (batching, locking, persistence, errors) is
tested apart from the models.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from nlprec.service.models import WARM_UP_QUERY

DIM = 64


@dataclass(frozen=True)
class Hit:
    doc_id: str
    score: float


def _tokens(text: str) -> list[str]:
    text.encode("utf-8")  # like a real tokenizer, fail on text that is not valid Unicode
    return [t for t in "".join(c.lower() if c.isalnum() else " " for c in text).split() if t]


def _vector(text: str) -> np.ndarray:
    vector = np.zeros(DIM, dtype=np.float32)
    for token in _tokens(text):
        vector[zlib.crc32(token.encode()) % DIM] += 1.0
    norm = np.linalg.norm(vector)
    return vector / norm if norm else vector


def _atomic_json(path: Path, data: object) -> None:
    path.mkdir(parents=True, exist_ok=True)
    temporary = path / "state.json.tmp"
    temporary.write_text(json.dumps(data))
    os.replace(temporary, path / "state.json")


@dataclass(frozen=True)
class FakeSettings:
    rerank_depth: int = 4  # below the 6 test documents, so a reranked list has a first-stage tail
    rerank_alpha: float = 1.0


class FakeEngine:
    has_reranker = True
    settings = FakeSettings()

    def __init__(
        self,
        documents: list[dict],
        delay_s: float = 0.0,
        has_reranker: bool = True,
        rerank_delay_s: float | None = None,
    ):
        self.docs = {
            d["id"]: {"id": d["id"], "title": d.get("title", ""), "text": d["text"]}
            for d in documents
        }
        self.delay_s = delay_s
        self.rerank_delay_s = delay_s if rerank_delay_s is None else rerank_delay_s
        self.has_reranker = has_reranker
        self.encode_calls: list[int] = []  # queries per encode_queries call
        self.search_calls: list[int] = []  # queries per search call
        self.rerank_calls: list[int] = []  # documents per rerank call

    # --- persistence
    @classmethod
    def load(cls, directory: str | Path) -> FakeEngine:
        state = json.loads((Path(directory) / "state.json").read_text())
        return cls(
            state["documents"],
            state.get("delay_s", 0.0),
            state.get("has_reranker", True),
            state.get("rerank_delay_s"),
        )

    def save(self, directory: str | Path) -> None:
        self.snapshot()(directory)

    def snapshot(self):
        """The state as of now; the returned function writes it (as SearchEngine.snapshot)."""
        state = {
            "documents": list(self.docs.values()),
            "delay_s": self.delay_s,
            "has_reranker": self.has_reranker,
            "rerank_delay_s": self.rerank_delay_s,
        }
        return lambda directory: _atomic_json(Path(directory), state)

    @property
    def model_versions(self) -> dict[str, str]:
        return {"encoder": "fake-hash-64", "bm25": "fake-overlap"}

    # --- retrieval
    def _top(self, scores: dict[str, float], k: int) -> list[Hit]:
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        return [Hit(doc_id, float(score)) for doc_id, score in ranked[:k] if score > 0]

    def _bm25(self, query: str) -> dict[str, float]:
        terms = set(_tokens(query))
        return {
            i: float(len(terms & set(_tokens(d["title"] + " " + d["text"]))))
            for i, d in self.docs.items()
        }

    def _dense(self, vector: np.ndarray) -> dict[str, float]:
        return {
            i: float(vector @ _vector(d["title"] + " " + d["text"])) for i, d in self.docs.items()
        }

    def encode_queries(self, queries: list[str]) -> np.ndarray:
        if queries == [WARM_UP_QUERY]:  # the service's load-time warm-up is not a request
            return np.stack([_vector(q) for q in queries])
        self.encode_calls.append(len(queries))
        if self.delay_s:
            time.sleep(self.delay_s)
        return np.stack([_vector(q) for q in queries])  # (n_queries, DIM)

    def search_dense_vectors(self, vectors: np.ndarray, k: int) -> list[list[Hit]]:
        return [self._top(self._dense(v), k) for v in vectors]

    def search(self, queries: list[str], k: int, mode: str = "bm25") -> list[list[Hit]]:
        if mode not in ("bm25", "dense", "hybrid"):
            raise ValueError(f"unknown mode {mode!r}")
        self.search_calls.append(len(queries))
        if mode == "bm25":
            time.sleep(self.delay_s)
            return [self._top(self._bm25(q), k) for q in queries]
        if mode == "dense":
            return self.search_dense_vectors(self.encode_queries(queries), k)
        results = []
        for query, vector in zip(queries, self.encode_queries(queries)):
            bm25, dense = self._bm25(query), self._dense(vector)
            results.append(self._top({i: bm25[i] + dense[i] for i in self.docs}, k))
        return results

    def rerank(self, query: str, documents: list[str]) -> list[float]:
        if not self.has_reranker:
            raise RuntimeError("no reranker")
        self.rerank_calls.append(len(documents))
        if self.rerank_delay_s:
            time.sleep(self.rerank_delay_s)
        terms = set(_tokens(query))
        return [len(terms & set(_tokens(d))) / (1 + len(terms)) for d in documents]

    # --- documents
    def document(self, doc_id: str) -> dict[str, str]:
        return dict(self.docs[doc_id])

    def add_documents(self, documents: list[dict]) -> None:
        if any(d["id"] in self.docs for d in documents):
            raise ValueError("document ids already in the engine")  # like the real engine
        for d in documents:
            self.docs[d["id"]] = {"id": d["id"], "title": d.get("title", ""), "text": d["text"]}

    def delete_document(self, doc_id: str) -> None:
        del self.docs[doc_id]  # KeyError for an unknown id, like the real engine


@dataclass(frozen=True)
class FakeEvent:
    user_id: str
    item: str
    timestamp: float
    event_id: str


@dataclass
class FakeRecommendation:
    items: list[str]
    scores: list[float]
    repeat: list[bool]
    fallback: bool
    notes: list[str]


class FakeRecommender:
    model_version = "fake-popularity-1"

    def __init__(self, events: list[dict] | None = None):
        self.events: dict[str, FakeEvent] = {}
        for fields in events or []:
            self.events[fields["event_id"]] = FakeEvent(**fields)

    @classmethod
    def load(cls, directory: str | Path) -> FakeRecommender:
        return cls(json.loads((Path(directory) / "state.json").read_text())["events"])

    def save(self, directory: str | Path) -> None:
        _atomic_json(Path(directory), {"events": [asdict(e) for e in self.events.values()]})

    def add_events(self, events: list[FakeEvent]) -> int:
        for event in events:  # like the real one: validate the whole batch before changing anything
            if event.timestamp > time.time() + 24 * 3600:
                raise ValueError(
                    f"event {event.event_id!r}: timestamp {event.timestamp} is in the future"
                )
        added = 0
        for event in events:
            if event.event_id not in self.events:
                self.events[event.event_id] = event
                added += 1
        return added

    def known_user(self, user_id: str) -> bool:
        return any(e.user_id == user_id for e in self.events.values())

    def user_items(self, user_id: str) -> list[str]:
        return [
            e.item
            for e in sorted(self.events.values(), key=lambda e: e.timestamp)
            if e.user_id == user_id
        ]

    def recommend(self, user_id=None, history=None, k=10, exclude_seen=False) -> FakeRecommendation:
        popular = Counter(e.item for e in self.events.values())
        seen = (self.user_items(user_id) if user_id is not None else []) + list(history or [])
        fallback = not seen
        scores = Counter({item: count / 10 for item, count in popular.items()})
        for item in seen:
            scores[item] += 1.0
        ranked = [(i, s) for i, s in scores.most_common() if not (exclude_seen and i in seen)][:k]
        return FakeRecommendation(
            items=[i for i, _ in ranked],
            scores=[float(s) for _, s in ranked],
            repeat=[i in seen for i, _ in ranked],
            fallback=fallback,
            notes=[]
            if user_id is None or self.known_user(user_id)
            else [f"unknown user {user_id!r}"],
        )

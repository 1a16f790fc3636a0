"""BM25 first stage on bm25s (Lucene's BM25 variant): writes cost what they write.

score(q, d) = sum_{t in q} idf(t) * tf(t,d) * (k1 + 1) / (tf(t,d) + k1 * (1 - b + b * |d| / avgdl))
with Lucene's idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5)).

Two parts, searched together:

- the *main* index, a bm25s index built over every live document at the last build, never
  changed (a deletion only masks its score);
- the *delta* (`nlprec.ranking.bm25_delta.DeltaIndex`): documents added since, scored at query
  time with N, df and avgdl of main + delta.

What holds between builds: an added document scores exactly as in a from-scratch bm25s index over
main + delta (deleted documents still counted, as a build counts what it was given); a main
document keeps the score of the last build (statistics of the main documents then), so its score
is off by the change in idf and avgdl that the delta brings (small while the delta is small).
Once the delta holds `delta_limit` changes (added + deleted documents), a background thread
rebuilds the main index from the live documents (the build itself in a subprocess) and swaps it in:
reads and writes go on meanwhile, and what was written during the build stays in the new delta.
After a compaction every score equals a from-scratch index over the live documents.
"""

from __future__ import annotations

import atexit
import bisect
import json
import logging
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
from nlprec.core.io import atomic_write_text
from nlprec.ranking.bm25_delta import METHODS_WITHOUT_DELTA, CorpusStatistics, DeltaIndex
from nlprec.ranking.data import DataError, document_text, normalise_document
from pydantic import BaseModel, Field

logger = logging.getLogger("nlprec.ranking")

DELTA_LIMIT = 1000  # changes kept beside the main index before a background rebuild


class BM25Config(BaseModel):
    model_config = {"extra": "forbid"}
    k1: float = Field(0.9, gt=0)
    b: float = Field(0.4, ge=0, le=1)
    stemmer: str | None = "english"
    stopwords: str | None = "en"
    method: str = "lucene"


def tokenize(texts: list[str], config: BM25Config, stemmer=None) -> list[list[str]]:
    """bm25s' tokenizer as configured (lower-case, stopwords, Snowball stemmer)."""
    if stemmer is None and config.stemmer:
        stemmer = Stemmer.Stemmer(config.stemmer)
    return bm25s.tokenize(
        texts, stopwords=config.stopwords, stemmer=stemmer, return_ids=False, show_progress=False
    )


def build_main(texts: list[str], config: BM25Config) -> tuple[bm25s.BM25, CorpusStatistics]:
    """A bm25s index over `texts` and the statistics the delta scores against."""
    tokens = tokenize(texts, config)
    main = bm25s.BM25(k1=config.k1, b=config.b, method=config.method)
    main.index(tokens, show_progress=False)
    return main, CorpusStatistics.of(tokens)


_running_builds: set[subprocess.Popen] = set()


@atexit.register
def _stop_running_builds() -> None:
    """A build left running when the process exits would only burn a core: stop it."""
    for process in list(_running_builds):
        process.kill()


def build_main_in_subprocess(
    texts: list[str], config: BM25Config
) -> tuple[bm25s.BM25, CorpusStatistics]:
    """`build_main` in a fresh interpreter (`python -m nlprec.ranking.bm25`, texts in and index
    out as pickles on its pipes): a build holds the interpreter lock for long stretches
    (tokenising, scipy's sparse matrix), which would stall the searches of a serving process.
    Not multiprocessing: its spawn would import the caller's main script again."""
    command = [sys.executable, "-m", "nlprec.ranking.bm25"]
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _running_builds.add(process)
    try:
        built, errors = process.communicate(pickle.dumps((texts, config.model_dump())))
    finally:
        _running_builds.discard(process)
    if process.returncode != 0:
        tail = errors.decode(errors="replace")[-2000:]
        raise RuntimeError(f"the BM25 build process failed ({process.returncode}): {tail}")
    return pickle.loads(built)


def _build_from_pipes() -> None:
    """The subprocess' side: (texts, config) pickled on stdin, (index, statistics) on stdout."""
    result = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing a library prints may corrupt the result
    texts, config = pickle.load(sys.stdin.buffer)
    pickle.dump(build_main(texts, BM25Config(**config)), result)
    result.flush()


class BM25Retriever:
    """Index documents once; ``add`` and ``delete`` cost the documents they touch; ``search``
    returns the top-k (doc_id, score) per query. Safe to call from several threads."""

    def __init__(self, config: BM25Config | None = None, delta_limit: int = DELTA_LIMIT) -> None:
        self.config = config or BM25Config()
        self.delta_limit = delta_limit
        self._stemmer = Stemmer.Stemmer(self.config.stemmer) if self.config.stemmer else None
        self._lock = threading.RLock()  # guards the fields below; held briefly, never for a build
        self._build_lock = threading.Lock()  # one build at a time
        self._ids: list[str] = []  # per position: the main index's documents, then the delta's
        self._texts: list[str] = []
        self._live: dict[str, int] = {}  # live document id -> its position
        self._main: bm25s.BM25 | None = None
        self._main_stats = CorpusStatistics()
        self._main_mask = np.ones(0, dtype=np.float32)  # 0 where a main document was deleted
        self._masked = 0  # zeros in the mask
        self._deleted: list[int] = []  # positions deleted since the last build, in order
        self._delta = self._new_delta()
        self._background: threading.Thread | None = None
        self.builds = 0  # main index builds so far (the first one included)

    def _new_delta(self) -> DeltaIndex | None:
        if self.config.method in METHODS_WITHOUT_DELTA:
            return None  # such a retriever rebuilds on every add, as bm25s must
        return DeltaIndex(self.config.k1, self.config.b, self.config.method)

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        return tokenize(texts, self.config, self._stemmer)

    # -- writes -----------------------------------------------------------------------------------
    def index(self, docs: list[dict[str, str]]) -> BM25Retriever:
        if not docs:
            raise DataError("cannot build a BM25 index over an empty corpus")
        docs = [normalise_document(d, where=f"document {i}") for i, d in enumerate(docs)]
        return self._index_texts([d["id"] for d in docs], [document_text(d) for d in docs])

    def _index_texts(self, ids: list[str], texts: list[str]) -> BM25Retriever:
        with self._build_lock:
            with self._lock:
                self._ids, self._texts = list(ids), list(texts)
                self._live = {doc_id: position for position, doc_id in enumerate(self._ids)}
                self._main, self._main_stats = None, CorpusStatistics()
                self._main_mask, self._masked = np.ones(0, dtype=np.float32), 0
                self._deleted = []
                self._delta = self._new_delta()
            self._rebuild()
        return self

    def add(self, docs: list[dict[str, str]]) -> None:
        """Put documents in the delta (cost: their own terms); a re-added deleted id is new."""
        docs = [normalise_document(d, where=f"document {i}") for i, d in enumerate(docs)]
        texts = [document_text(d) for d in docs]
        tokens = self._tokenize(texts)
        with self._lock:
            seen = set()
            for doc in docs:
                if doc["id"] in self._live or doc["id"] in seen:
                    raise DataError(f"document id {doc['id']!r} is already indexed")
                seen.add(doc["id"])
            for doc, text, doc_tokens in zip(docs, texts, tokens, strict=True):
                self._live[doc["id"]] = len(self._ids)
                self._ids.append(doc["id"])
                self._texts.append(text)
                if self._delta is not None:
                    self._delta.add(doc_tokens)
        if self._delta is None:
            self.compact()
        else:
            self._maybe_compact()

    def delete(self, doc_id: str) -> None:
        with self._lock:
            if doc_id not in self._live:
                raise KeyError(f"document {doc_id!r} is not in the BM25 index")
            position = self._live.pop(doc_id)
            self._deleted.append(position)
            if position < len(self._main_mask):
                self._main_mask[position] = 0.0
                self._masked += 1
        self._maybe_compact()

    @property
    def n_live(self) -> int:
        return len(self._live)

    @property
    def pending(self) -> int:
        """Changes since the last build: documents added since plus main documents deleted."""
        return len(self._ids) - len(self._main_mask) + self._masked

    # -- compaction -------------------------------------------------------------------------------
    def compact(self) -> None:
        """Rebuild the main index over the live documents and swap it in; the delta keeps only
        what was added meanwhile. Reads and writes go on during the build (it holds no lock)."""
        with self._build_lock:
            self._rebuild(build_main)

    def _rebuild(self, build=build_main) -> None:
        with self._lock:
            cut, deletions_seen = len(self._ids), len(self._deleted)
            positions = sorted(self._live.values())
            ids = [self._ids[p] for p in positions]
            texts = [self._texts[p] for p in positions]
        if not ids:
            return  # nothing live: keep the masked index rather than build an empty one
        main, stats = build(texts, self.config)
        live = {doc_id: new for new, doc_id in enumerate(ids)}  # as at the cut
        with self._lock:
            self._swap(cut, deletions_seen, positions, live, texts, main, stats)

    def _swap(
        self,
        cut: int,
        deletions_seen: int,
        positions: list[int],
        live: dict[str, int],
        texts: list[str],
        main: bm25s.BM25,
        stats: CorpusStatistics,
    ) -> None:
        """Install a main index built over the documents live at position `cut` (`live`: id ->
        new position): documents deleted since are masked in it, documents added since form the
        new delta. Costs the changes since the cut, not the corpus (it runs under the lock)."""
        ids = list(live)
        mask = np.ones(len(ids), dtype=np.float32)
        for old in self._deleted[deletions_seen:]:
            new = bisect.bisect_left(positions, old)
            if new < len(positions) and positions[new] == old:
                mask[new] = 0.0
                del live[ids[new]]
        delta = self._new_delta()
        start = len(self._main_mask)
        for old in range(cut, len(self._ids)):
            if delta is not None:
                delta.add(self._delta.tokens[old - start])
            if self._live.get(self._ids[old]) == old:
                live[self._ids[old]] = len(ids) + (old - cut)
        self._ids = ids + self._ids[cut:]
        self._texts = texts + self._texts[cut:]
        self._live, self._main, self._main_stats = live, main, stats
        self._main_mask, self._masked, self._delta = mask, int(len(mask) - mask.sum()), delta
        self._deleted = []
        self.builds += 1

    def _maybe_compact(self) -> None:
        if self.pending >= self.delta_limit:
            self.start_compaction()

    def start_compaction(self) -> None:
        """Compact in a background thread, unless one is running already."""
        with self._lock:
            if self.compacting:
                return
            self._background = threading.Thread(
                target=self._compact_in_background, name="bm25-compaction", daemon=True
            )
            self._background.start()

    def _compact_in_background(self) -> None:
        try:
            with self._build_lock:
                self._rebuild(build_main_in_subprocess)
        except Exception:  # the delta still answers correctly; the next write tries again
            logger.exception("BM25 compaction failed")

    @property
    def compacting(self) -> bool:
        return self._background is not None and self._background.is_alive()

    def wait_for_compaction(self, timeout: float | None = None) -> None:
        if self._background is not None:
            self._background.join(timeout)

    # -- reads --------------------------------------------------------------------------------
    def search(self, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
        """Top-k per query, best first; documents with score 0 (no shared term) are dropped."""
        tokens = self._tokenize(queries) if queries else []
        with self._lock:
            k = min(k, self.n_live)
            if k <= 0 or not queries:
                return [[] for _ in queries]
            main_hits = self._search_main(tokens, k)
            results = []
            for query_tokens, hits in zip(tokens, main_hits, strict=True):
                hits = hits + self._search_delta(query_tokens, k)
                results.append(sorted(hits, key=lambda hit: -hit[1])[:k])
            return results

    def _search_main(self, tokens: list[list[str]], k: int) -> list[list[tuple[str, float]]]:
        if self._main is None:  # everything was deleted before the last build
            return [[] for _ in tokens]
        mask = self._main_mask if not self._main_mask.all() else None
        indices, scores = self._main.retrieve(
            tokens,
            k=min(k, len(self._main_mask)),
            show_progress=False,
            weight_mask=mask,
            n_threads=1,
        )
        return [
            [(self._ids[i], float(s)) for i, s in zip(row_i, row_s, strict=True) if s > 0]
            for row_i, row_s in zip(indices, scores, strict=True)
        ]

    def _search_delta(self, query_tokens: list[str], k: int) -> list[tuple[str, float]]:
        if not self._delta:
            return []
        start = len(self._main_mask)
        scores = self._delta.scores(query_tokens, self._main_stats)
        hits = [
            (self._ids[start + p], float(scores[p]))
            for p in np.flatnonzero(scores > 0)
            if self._live.get(self._ids[start + p]) == start + p
        ]
        return sorted(hits, key=lambda hit: -hit[1])[:k]

    # -- persistence ----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        self.snapshot()(directory)

    def snapshot(self) -> Callable[[str | Path], None]:
        """The live documents' ids and texts as of now; the returned function writes them (and
        `load` builds the index from them), so the retriever may change while it does."""
        with self._lock:
            positions = sorted(self._live.values())
            doc_ids = [self._ids[p] for p in positions]
            texts = [self._texts[p] for p in positions]
        state = {"config": self.config.model_dump(), "doc_ids": doc_ids, "deleted": []}

        def write(directory: str | Path) -> None:
            directory = Path(directory)
            directory.mkdir(parents=True, exist_ok=True)
            atomic_write_text(directory / "bm25.json", json.dumps(state))
            atomic_write_text(directory / "texts.json", json.dumps(texts))

        return write

    @classmethod
    def load(cls, directory: str | Path, delta_limit: int = DELTA_LIMIT) -> BM25Retriever:
        """Builds the index from the saved texts (seconds), so no binary file can go stale."""
        directory = Path(directory)
        try:
            state = json.loads((directory / "bm25.json").read_text())
            texts = json.loads((directory / "texts.json").read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"{directory}: BM25 index missing or corrupt ({err})") from err
        if len(texts) != len(state["doc_ids"]):
            raise DataError(
                f"{directory}: BM25 index truncated ({len(texts)} texts, {len(state['doc_ids'])} ids)"
            )
        deleted = set(state["deleted"])
        kept = [i for i, doc_id in enumerate(state["doc_ids"]) if doc_id not in deleted]
        retriever = cls(BM25Config(**state["config"]), delta_limit)
        return retriever._index_texts([state["doc_ids"][i] for i in kept], [texts[i] for i in kept])


if __name__ == "__main__":
    _build_from_pipes()

"""The documents added since the last BM25 build, scored exactly with the whole corpus' statistics.

bm25s precomputes every (term, document) score at build time, with the corpus' statistics baked
in: N documents, df(t) documents holding term t, and the average length avgdl. An added document
changes all three, so bm25s can only take it by rebuilding. `DeltaIndex` holds the added
documents' term counts and lengths instead and scores them at query time, with bm25s' own idf
and term-frequency formulas and the statistics of the main index and the delta together
(`CorpusStatistics`): each added document gets the score a from-scratch build over main + delta
would give it. Its cost is the added documents' postings, so it is meant to stay small; the
retriever folds it into a new main index now and then (`BM25Retriever.compact`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from bm25s.scoring import _select_idf_scorer, _select_tfc_scorer

# bm25s adds a per-term "non-occurrence" score to every document for these variants; it depends
# on avgdl for all documents, so an added document would change every main score: no delta.
METHODS_WITHOUT_DELTA = ("bm25l", "bm25+")


@dataclass
class CorpusStatistics:
    """N, total length and df of a set of tokenised documents (as bm25s counts them)."""

    n_docs: int = 0
    total_length: int = 0
    document_frequency: Counter = field(default_factory=Counter)

    @classmethod
    def of(cls, corpus_tokens: list[list[str]]) -> CorpusStatistics:
        stats = cls()
        for tokens in corpus_tokens:
            stats.count(tokens)
        return stats

    def count(self, tokens: list[str]) -> None:
        self.n_docs += 1
        self.total_length += len(tokens)
        self.document_frequency.update(set(tokens))


class DeltaIndex:
    """Term counts of recently added documents; `scores` ranks them against main + delta stats."""

    def __init__(self, k1: float, b: float, method: str) -> None:
        if method in METHODS_WITHOUT_DELTA:
            raise ValueError(f"BM25 method {method!r} cannot score added documents apart")
        self.k1, self.b = k1, b
        self._idf = _select_idf_scorer(method)
        self._tfc = _select_tfc_scorer(method)
        self.tokens: list[list[str]] = []  # per delta position, kept for the next rebuild
        self.lengths: list[int] = []
        self.postings: dict[str, tuple[list[int], list[int]]] = {}  # term -> (positions, tfs)
        self.stats = CorpusStatistics()

    def __len__(self) -> int:
        return len(self.tokens)

    def add(self, tokens: list[str]) -> int:
        """Index one tokenised document; returns its delta position. Cost: its own terms."""
        position = len(self.tokens)
        self.tokens.append(tokens)
        self.lengths.append(len(tokens))
        self.stats.count(tokens)
        for term, tf in Counter(tokens).items():
            positions, tfs = self.postings.setdefault(term, ([], []))
            positions.append(position)
            tfs.append(tf)
        return position

    def scores(self, query_tokens: list[str], main: CorpusStatistics) -> np.ndarray:
        """(len(self),) float32 BM25 scores of the delta documents for one tokenised query.

        Computed as bm25s computes its index: idf and tfc from its formulas, each term's
        contribution rounded to float32, contributions summed in float32 in query-token order.
        """
        scores = np.zeros(len(self.tokens), dtype=np.float32)
        n_docs = main.n_docs + self.stats.n_docs
        avgdl = np.float64((main.total_length + self.stats.total_length) / n_docs)
        lengths = np.asarray(self.lengths)
        for term in query_tokens:
            if term not in self.postings:
                continue
            positions, tfs = self.postings[term]
            df = main.document_frequency[term] + self.stats.document_frequency[term]
            idf = np.float32(self._idf(df, N=n_docs))
            tfc = self._tfc(
                tf_array=np.asarray(tfs, dtype=np.float32),
                l_d=lengths[positions],
                l_avg=avgdl,
                k1=self.k1,
                b=self.b,
            )
            np.add.at(scores, positions, (idf * tfc).astype(np.float32))
        return scores

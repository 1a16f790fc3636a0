"""How a long document becomes encoder inputs: the long model and the short-model baselines.

A document is tokenised once (no special tokens); a *strategy* then turns its body into one or
more segments, each wrapped as [CLS] segment [SEP]:

* ``long``       one segment, the first ``max_length - 2`` tokens (truncation counted and logged)
* ``head``       one segment, the first ``512 - 2`` tokens
* ``head_tail``  one segment, the first ``head_tokens`` and the last ``budget - head_tokens`` tokens
                 (Sun et al., 2019: "How to fine-tune BERT for text classification?")
* ``chunk_mean`` / ``chunk_max``  consecutive chunks of ``budget`` tokens covering the whole
                 document; the classifier's chunk logits are averaged / max-pooled per document

A segment list per document keeps the training loop identical for every strategy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

SPECIAL_TOKENS_PER_SEGMENT = 2  # [CLS] ... [SEP]
STRATEGIES = ("long", "head", "head_tail", "chunk_mean", "chunk_max")
DEFAULT_HEAD_TOKENS = 128


@dataclass
class TruncationReport:
    """How many documents lost tokens; logged so truncation is never silent."""

    n_documents: int = 0
    n_truncated: int = 0
    tokens_dropped: int = 0
    longest: int = 0

    def add(self, n_tokens: int, kept: int) -> None:
        self.n_documents += 1
        self.longest = max(self.longest, n_tokens)
        if kept < n_tokens:
            self.n_truncated += 1
            self.tokens_dropped += n_tokens - kept

    def log(self, what: str, limit: int) -> None:
        if self.n_truncated:
            logger.warning(
                "%s: truncated %d of %d documents to %d tokens (%d tokens dropped; longest %d)",
                what,
                self.n_truncated,
                self.n_documents,
                limit,
                self.tokens_dropped,
                self.longest,
            )


def check_nonempty(texts: Sequence[str], what: str = "documents") -> None:
    """Empty documents carry no evidence; refuse them with their positions."""
    empty = [i for i, text in enumerate(texts) if not text or not text.strip()]
    if empty:
        shown = ", ".join(map(str, empty[:10]))
        raise ValueError(
            f"{len(empty)} empty {what} (positions {shown}{' ...' if len(empty) > 10 else ''})"
        )


def tokenize_bodies(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids without special tokens, no length limit (the strategies decide)."""
    check_nonempty(texts)
    encoded = tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)
    return encoded["input_ids"]


def head_tail(body: list[int], budget: int, head_tokens: int = DEFAULT_HEAD_TOKENS) -> list[int]:
    """First ``head_tokens`` and last ``budget - head_tokens`` tokens (the whole body if it fits)."""
    if len(body) <= budget:
        return body
    if head_tokens * 2 > budget:  # small windows (demos): a quarter head, the rest tail
        head_tokens = budget // 4
    tail_tokens = budget - head_tokens
    return body[:head_tokens] + body[len(body) - tail_tokens :]


def chunks(body: list[int], budget: int) -> list[list[int]]:
    """Consecutive, non-overlapping pieces of at most ``budget`` tokens covering the body."""
    return [body[start : start + budget] for start in range(0, max(len(body), 1), budget)]


def make_segments(
    bodies: Sequence[list[int]],
    strategy: str,
    max_length: int,
    cls_id: int,
    sep_id: int,
    head_tokens: int = DEFAULT_HEAD_TOKENS,
) -> list[list[list[int]]]:
    """Per document, its list of segments ``[CLS] ... [SEP]`` of at most ``max_length`` tokens."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}; got {strategy!r}")
    budget = max_length - SPECIAL_TOKENS_PER_SEGMENT
    report = TruncationReport()
    documents = []
    for body in bodies:
        if strategy in ("long", "head"):
            pieces = [body[:budget]]
        elif strategy == "head_tail":
            pieces = [head_tail(body, budget, head_tokens)]
        else:
            pieces = chunks(body, budget)
        report.add(len(body), sum(len(p) for p in pieces))
        documents.append([[cls_id, *piece, sep_id] for piece in pieces])
    if strategy in ("long", "head", "head_tail"):
        report.log(f"strategy {strategy}", max_length)
    return documents


def aggregate_segments(
    logits: torch.Tensor,  # (S, C) one row per segment
    doc_index: torch.Tensor,  # (S,) which document each segment belongs to
    n_docs: int,
    how: str,
) -> torch.Tensor:  # (n_docs, C)
    """Mean or max of segment logits per document (fast path, scatter-based)."""
    n_classes = logits.shape[1]
    index = doc_index.unsqueeze(1).expand(-1, n_classes)  # (S, C)
    out = logits.new_zeros(n_docs, n_classes)
    if how == "mean":
        return out.scatter_reduce(0, index, logits, reduce="mean", include_self=False)
    if how == "max":
        return out.scatter_reduce(0, index, logits, reduce="amax", include_self=False)
    raise ValueError(f"aggregation must be 'mean' or 'max'; got {how!r}")


def aggregate_segments_reference(
    logits: torch.Tensor, doc_index: torch.Tensor, n_docs: int, how: str
) -> torch.Tensor:
    """Loop version of `aggregate_segments`, for the agreement test."""
    rows = []
    for doc in range(n_docs):
        mine = logits[doc_index == doc]
        rows.append(mine.mean(0) if how == "mean" else mine.max(0).values)
    return torch.stack(rows)

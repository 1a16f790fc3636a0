"""Long documents: split into overlapping token windows, then score a document from its passages.

FirstP scores a document by its first passage, MaxP by its best passage, SumP by the sum of its
passage scores (Dai & Callan 2019; "Pretrained Transformers for Text Ranking", section 3.3).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Literal

Aggregation = Literal["firstp", "maxp", "sump"]


def split_passages(text: str, tokenizer, window: int, stride: int) -> list[str]:
    """Windows of ``window`` tokens starting every ``stride`` tokens, cut from the original text.

    Token positions come from the tokenizer's character offsets, so the passages are exact slices
    of ``text`` (no detokenisation artefacts). A text of at most ``window`` tokens is one passage.
    """
    if window <= 0 or stride <= 0:
        raise ValueError(
            f"window and stride must be positive, got window={window}, stride={stride}"
        )
    if stride > window:
        raise ValueError(f"stride {stride} > window {window} would skip tokens")
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"
    ]
    if len(offsets) <= window:
        return [text]
    passages = []
    for start in range(0, len(offsets), stride):
        end = min(start + window, len(offsets))
        passages.append(text[offsets[start][0] : offsets[end - 1][1]])
        if end == len(offsets):
            break
    return passages


def aggregate_passage_scores(
    scored: Iterable[tuple[str, int, float]], how: Aggregation
) -> dict[str, float]:
    """``(doc_id, passage_index, score)`` triples -> one score per document.

    FirstP uses the lowest passage index present (passage 0 when every passage was scored).
    """
    by_doc: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for doc_id, passage_index, score in scored:
        by_doc[doc_id].append((passage_index, score))
    if how == "maxp":
        return {doc: max(s for _, s in items) for doc, items in by_doc.items()}
    if how == "sump":
        return {doc: sum(s for _, s in items) for doc, items in by_doc.items()}
    if how == "firstp":
        return {doc: min(items)[1] for doc, items in by_doc.items()}
    raise ValueError(f"unknown passage aggregation {how!r}: expected firstp, maxp or sump")

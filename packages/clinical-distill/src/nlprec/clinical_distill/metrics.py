"""Task metrics: word-level entity F1 (seqeval, with a reference implementation), accuracy, macro-F1."""

from __future__ import annotations

from sklearn.metrics import accuracy_score, f1_score


def entity_f1(gold: list[list[str]], pred: list[list[str]]) -> float:
    """Strict IOB2 entity-level micro F1 over sentences of word tags (seqeval).

    Where seqeval is not installed (the GPU host), the reference count below gives the same figure
    (tests check the two agree).
    """
    try:
        from seqeval.metrics import f1_score as seqeval_f1  # noqa: PLC0415
        from seqeval.scheme import IOB2  # noqa: PLC0415
    except ImportError:
        return entity_f1_reference(gold, pred)
    return float(seqeval_f1(gold, pred, mode="strict", scheme=IOB2, zero_division=0))


def sentence_entity_f1(gold: list[str], pred: list[str]) -> float:
    """One sentence's strict entity F1; 1.0 when neither side has an entity (nothing to miss)."""
    if not iob2_spans(gold) and not iob2_spans(pred):
        return 1.0
    return entity_f1_reference([gold], [pred])


def iob2_spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """Entity spans (type, start, end exclusive) of one sentence under strict IOB2: B starts, I continues."""
    spans, start, kind = set(), None, None
    for i, tag in enumerate([*tags, "O"]):
        continues = tag.startswith("I-") and kind == tag[2:] and start is not None
        if continues:
            continue
        if start is not None:
            spans.add((kind, start, i))
            start, kind = None, None
        if tag.startswith("B-"):
            start, kind = i, tag[2:]
    return spans


def entity_f1_reference(gold: list[list[str]], pred: list[list[str]]) -> float:
    """The same figure counted by hand: exact (type, start, end) span matches."""
    tp = n_gold = n_pred = 0
    for g, p in zip(gold, pred, strict=True):
        g_spans, p_spans = iob2_spans(g), iob2_spans(p)
        tp += len(g_spans & p_spans)
        n_gold += len(g_spans)
        n_pred += len(p_spans)
    if tp == 0:
        return 0.0
    precision, recall = tp / n_pred, tp / n_gold
    return 2 * precision * recall / (precision + recall)


def classification_scores(gold: list[str], pred: list[str]) -> dict[str, float]:
    return {
        "acc": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0)),
    }

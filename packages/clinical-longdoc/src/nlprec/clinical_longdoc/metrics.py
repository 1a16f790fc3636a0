"""Task metrics, all fractions in [0, 1]: macro/micro-F1, word-level entity F1 (seqeval), SQuAD EM/F1."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

from sklearn.metrics import accuracy_score, f1_score

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def classification_scores(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """macro-F1 over the classes present in gold or predictions, micro-F1 (= accuracy here)."""
    if not gold:
        return {
            "macro_f1": float("nan"),
            "micro_f1": float("nan"),
            "accuracy": float("nan"),
            "n": 0,
        }
    return {
        "macro_f1": float(f1_score(gold, predicted, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(gold, predicted, average="micro", zero_division=0)),
        "accuracy": float(accuracy_score(gold, predicted)),
        "n": len(gold),
    }


def entity_f1(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Strict IOB2 entity precision/recall/F1 over word-level tag sequences (seqeval)."""
    from seqeval.metrics import f1_score as seq_f1
    from seqeval.metrics import precision_score, recall_score
    from seqeval.scheme import IOB2

    kwargs = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    return {
        "f1": float(seq_f1(gold, predicted, **kwargs)),
        "precision": float(precision_score(gold, predicted, **kwargs)),
        "recall": float(recall_score(gold, predicted, **kwargs)),
        "n": len(gold),
    }


def sentence_entity_f1(gold: Sequence[str], predicted: Sequence[str]) -> float:
    """One sentence's strict entity F1; 1.0 when neither side has an entity (nothing to miss)."""
    if not any(t != "O" for t in gold) and not any(t != "O" for t in predicted):
        return 1.0
    return entity_f1([list(gold)], [list(predicted)])["f1"]


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and English articles, collapse whitespace (SQuAD convention)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    predicted_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = Counter(predicted_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if not predicted_tokens or not gold_tokens:
        return float(predicted_tokens == gold_tokens)
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def qa_scores(predictions: Sequence[str], golds: Sequence[str]) -> dict[str, float]:
    n = len(golds)
    if n == 0:
        return {"em": float("nan"), "f1": float("nan"), "n": 0}
    return {
        "em": sum(exact_match(p, g) for p, g in zip(predictions, golds, strict=True)) / n,
        "f1": sum(token_f1(p, g) for p, g in zip(predictions, golds, strict=True)) / n,
        "n": n,
    }

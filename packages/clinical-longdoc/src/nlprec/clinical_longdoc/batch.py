"""Batch-inference predictors for `nlprec.core.batch.run_batch` (local or Ray Data engine).

Each loads its saved model once and maps a batch of columns to a batch of columns.  Bad rows
(empty documents or questions) are answered with an ``error`` column instead of failing the run;
documents longer than the model are truncated with a count in the logs (``n_tokens`` and
``truncated`` columns say which).
"""

from __future__ import annotations

import logging

from nlprec.clinical_longdoc.classify import DocumentClassifierModel
from nlprec.clinical_longdoc.data import QAExample, TaggedSentence
from nlprec.clinical_longdoc.qa import QAModel
from nlprec.clinical_longdoc.tagging import TokenTaggerModel
from nlprec.clinical_longdoc.training import TrainSettings

logger = logging.getLogger(__name__)
EMPTY = "empty document"


def _is_empty(text) -> bool:
    return not isinstance(text, str) or not text.strip()


def _model_dir(model: str) -> str:
    """A saved model directory or a registered ``models:/name@alias`` reference."""
    from nlprec.core.models import resolve

    return str(resolve(model))


def _settings(device: str | None) -> TrainSettings:
    from nlprec.core.step import default_device

    return TrainSettings(device=device or default_device(), progress=False)


class ClassifyPredictor:
    """Columns in: ``text`` (and anything else, passed through as ``id`` when present).
    Columns out: ``label``, ``score``, ``n_tokens``, ``truncated``, ``error``."""

    def __init__(self, model_dir: str, text_field: str = "text", device: str | None = None):
        self.model = DocumentClassifierModel.load(_model_dir(model_dir))
        self.text_field = text_field
        self.settings = _settings(device)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        texts = batch[self.text_field]
        keep = [i for i, t in enumerate(texts) if not _is_empty(t)]
        out = {
            "label": [None] * len(texts),
            "score": [None] * len(texts),
            "n_tokens": [0] * len(texts),
            "truncated": [False] * len(texts),
            "error": [EMPTY] * len(texts),
        }
        if keep:
            kept_texts = [texts[i] for i in keep]
            probabilities = self.model.predict_proba(kept_texts, self.settings)
            lengths = [
                len(ids) + 2
                for ids in self.model.tokenizer(
                    kept_texts, add_special_tokens=False, verbose=False
                )["input_ids"]
            ]
            for row, i in enumerate(keep):
                best = int(probabilities[row].argmax())
                out["label"][i] = self.model.labels[best]
                out["score"][i] = float(probabilities[row, best])
                out["n_tokens"][i] = lengths[row]
                out["truncated"][i] = (
                    self.model.strategy in ("long", "head", "head_tail")
                    and lengths[row] > self.model.max_length
                )
                out["error"][i] = None
        if "id" in batch:
            out["id"] = batch["id"]
        return out


class TagPredictor:
    """Columns in: ``text`` (split on whitespace) or ``words``.  Out: ``words``, ``tags``, ``error``."""

    def __init__(self, model_dir: str, text_field: str = "text", device: str | None = None):
        self.model = TokenTaggerModel.load(_model_dir(model_dir))
        self.text_field = text_field
        self.settings = _settings(device)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if "words" in batch:
            words = [list(w or []) for w in batch["words"]]
        else:
            words = [(t or "").split() for t in batch[self.text_field]]
        keep = [i for i, w in enumerate(words) if w]
        tags: list = [[] for _ in words]
        if keep:
            predicted = self.model.predict(
                [TaggedSentence(words[i], []) for i in keep], self.settings
            )
            for i, row in zip(keep, predicted):
                tags[i] = row
        out = {"words": words, "tags": tags, "error": [None if w else EMPTY for w in words]}
        if "id" in batch:
            out["id"] = batch["id"]
        return out


class AnswerPredictor:
    """Columns in: ``question``, ``context``.  Out: ``answer``, ``error``."""

    def __init__(self, model_dir: str, device: str | None = None):
        self.model = QAModel.load(_model_dir(model_dir))
        self.model.cache_windows = False
        self.settings = _settings(device)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        questions, contexts = batch["question"], batch["context"]
        keep = [
            i
            for i in range(len(questions))
            if not _is_empty(questions[i]) and not _is_empty(contexts[i])
        ]
        answers: list = [None] * len(questions)
        if keep:
            examples = [
                QAExample(questions[i], contexts[i], "", 0, "batch", f"row-{i}") for i in keep
            ]
            for i, answer in zip(keep, self.model.predict(examples, self.settings)):
                answers[i] = answer
        out = {
            "answer": answers,
            "error": [
                None if i in set(keep) else "empty question or context"
                for i in range(len(questions))
            ],
        }
        if "id" in batch:
            out["id"] = batch["id"]
        return out


PREDICTORS = {"classify": ClassifyPredictor, "tag": TagPredictor, "answer": AnswerPredictor}

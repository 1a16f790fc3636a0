"""Extractive QA over long articles, long model and sliding-window short baseline alike.

Both read [CLS] question [SEP] context-window [SEP] windows cut with a stride (`transformers`'
overflowing-token windows); the long model's window is simply 4,096 tokens instead of 512, so most
articles fit in one or two windows.  The answer is the best-scoring span over all windows:

    score(i, j) = start_logit[i] + end_logit[j],   i <= j < i + max_answer_tokens,  i, j in context

Question tokens get global attention (Longformer).  Training windows without the answer point at
[CLS]; only a fraction ``negative_keep`` of them is kept, so the model sees mostly answerable windows.
Training runs on `transformers.Trainer` (`training.fit_with_trainer`) over a `datasets.Dataset` of
windows padded by `DataCollatorWithPadding`; dev F1 (best span over each question's windows) is
its ``compute_metrics``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from nlprec.clinical_longdoc.data import QAExample
from nlprec.clinical_longdoc.encoder import LongEncoder
from nlprec.clinical_longdoc.heads import SpanExtractor
from nlprec.clinical_longdoc.metrics import exact_match, token_f1
from nlprec.clinical_longdoc.persist import load_task_model, save_task_model
from nlprec.clinical_longdoc.training import (
    TrainSettings,
    autocast_for,
    fit_with_trainer,
    group_by_tokens,
)
from torch import nn
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding, EvalPrediction

logger = logging.getLogger(__name__)

# Windows per (tokenizer, window settings, question set), shared by the models of every seed.
_WINDOW_CACHE: dict[tuple, object] = {}
POSITION_BUCKETS = ((0, 512, "lt512"), (512, 4096, "512to4096"), (4096, 10**9, "gt4096"))


@dataclass
class Window:
    example: int  # index of its QAExample
    input_ids: list[int]
    token_type_ids: list[int]
    offsets: list[tuple[int, int] | None]  # char span in the context, None outside the context
    start: int = 0  # answer token positions (0, 0 = [CLS] = no answer in this window)
    end: int = 0


def best_span(
    start: torch.Tensor, end: torch.Tensor, valid: torch.Tensor, max_tokens: int
) -> tuple[float, int, int]:
    """Best (score, i, j) with i <= j < i + max_tokens, both valid.  start, end, valid: (L,)."""
    very_negative = torch.finfo(start.dtype).min / 4
    start = start.masked_fill(~valid, very_negative)
    end = end.masked_fill(~valid, very_negative)
    length = start.shape[0]
    widths = min(max_tokens, length)
    # scores[k, i] = start[i] + end[i + k]  for span width k + 1; (widths, L)
    scores = torch.full((widths, length), very_negative, dtype=start.dtype)
    for k in range(widths):
        scores[k, : length - k] = start[: length - k] + end[k:]
    flat = int(scores.argmax())
    k, i = divmod(flat, length)
    return float(scores[k, i]), i, i + k


def best_span_reference(start, end, valid, max_tokens) -> tuple[float, int, int]:
    """Double loop over (i, j): the reference for `best_span`."""
    best = (-float("inf"), 0, 0)
    for i in range(len(start)):
        for j in range(i, min(i + max_tokens, len(start))):
            if valid[i] and valid[j] and float(start[i] + end[j]) > best[0]:
                best = (float(start[i] + end[j]), i, j)
    return best


def answer_token_position(tokenizer, example: QAExample) -> int:
    """Index of the answer's first token in the tokenised context (for the position buckets)."""
    offsets = tokenizer(
        example.context, add_special_tokens=False, return_offsets_mapping=True, verbose=False
    )["offset_mapping"]
    return sum(1 for s, _ in offsets if s < example.answer_start)


def position_bucket(position: int) -> str:
    return next(name for low, high, name in POSITION_BUCKETS if low <= position < high)


def slice_bounds(n_tokens: int, room: int, stride: int) -> list[tuple[int, int]]:
    """[begin, stop) slices of at most ``room`` tokens covering 0..n_tokens, ``stride`` tokens of
    overlap between neighbours (one empty slice for an empty context)."""
    bounds, begin = [], 0
    while True:
        stop = min(begin + room, n_tokens)
        bounds.append((begin, stop))
        if stop >= n_tokens:
            return bounds
        begin = stop - stride


@dataclass(frozen=True)
class PairTemplate:
    """Where a tokenizer puts its special tokens and segment ids around (question, context)."""

    prefix: list[int]  # ids before the question, e.g. [CLS]
    middle: list[int]  # between question and context, e.g. [SEP] (RoBERTa: </s></s>)
    suffix: list[int]  # after the context, e.g. [SEP]
    types: tuple[list[int], int, list[int], int, list[int]]  # segment ids of the five parts

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    def window(self, example: int, question: list[int], context: list[int], offsets) -> Window:
        prefix_t, question_t, middle_t, context_t, suffix_t = self.types
        ids = self.prefix + question + self.middle + context + self.suffix
        types = (
            prefix_t
            + [question_t] * len(question)
            + middle_t
            + [context_t] * len(context)
            + suffix_t
        )
        before = len(self.prefix) + len(question) + len(self.middle)
        spans = [None] * before + list(offsets) + [None] * len(self.suffix)
        return Window(example, ids, types, spans)


def pair_template(tokenizer) -> PairTemplate:
    """Read the special tokens and segment ids off one encoded (question, context) pair."""
    encoded = tokenizer("question", "context")
    sequence = encoded.sequence_ids(0)
    ids = encoded["input_ids"]
    types = encoded.get("token_type_ids") or [0] * len(ids)
    question = [i for i, s in enumerate(sequence) if s == 0]
    context = [i for i, s in enumerate(sequence) if s == 1]
    parts = (
        range(0, question[0]),
        range(question[-1] + 1, context[0]),
        range(context[-1] + 1, len(ids)),
    )
    prefix, middle, suffix = ([ids[i] for i in part] for part in parts)
    prefix_t, middle_t, suffix_t = ([types[i] for i in part] for part in parts)
    return PairTemplate(
        prefix,
        middle,
        suffix,
        (prefix_t, types[question[0]], middle_t, types[context[0]], suffix_t),
    )


def _label_answer(window: Window, example: QAExample) -> None:
    """Point window.start/end at the answer's first/last token when the window holds all of it."""
    char_start = example.answer_start
    char_end = char_start + len(example.answer_text)
    inside = [i for i, o in enumerate(window.offsets) if o is not None]
    if not inside:
        return
    if window.offsets[inside[0]][0] <= char_start and window.offsets[inside[-1]][1] >= char_end:
        window.start = next(i for i in inside if window.offsets[i][1] > char_start)
        window.end = max(i for i in inside if window.offsets[i][0] < char_end)


class QAModel:
    def __init__(
        self,
        encoder: LongEncoder,
        tokenizer,
        max_length: int | None = None,
        stride: int = 128,
        max_answer_tokens: int = 64,
        max_question_tokens: int = 64,
    ):
        self.tokenizer = tokenizer
        self.max_length = min(max_length or encoder.max_length, encoder.max_length)
        self.stride = stride
        self.max_answer_tokens = max_answer_tokens
        self.max_question_tokens = max_question_tokens
        self.network = SpanExtractor(encoder)
        self.device = "cpu"
        self._window_cache = _WINDOW_CACHE
        self.cache_windows = True  # batch inference turns it off (unbounded inputs)

    def windows(self, examples: Sequence[QAExample], with_answers: bool) -> list[Window]:
        """Cut every (question, context) into overlapping windows of at most ``max_length`` tokens.

        Cached per question set: tokenising long articles once per question dominates otherwise.
        """
        key = (
            self.tokenizer.name_or_path,
            self.max_length,
            self.stride,
            self.max_question_tokens,
            with_answers,
            tuple(e.qid for e in examples),
        )
        if not self.cache_windows:
            return self._cut_windows(examples, with_answers)
        if key not in self._window_cache:
            self._window_cache[key] = self._cut_windows(examples, with_answers)
        return self._window_cache[key]

    def _cut_windows(self, examples: Sequence[QAExample], with_answers: bool) -> list[Window]:
        """[special] question [special] context-slice [special] windows, cut here, not by the tokenizer.

        The tokenizer's own overflow windows (``return_overflowing_tokens`` with ``stride``) are not
        relied on: with tokenizers 0.23.1-0.23.2 (the GPU machine's) truncation stops tokenising
        early and drops overflow (huggingface/tokenizers issue 2091), which gave at most two
        windows per question, so most answers past the second window were unreachable (2,256
        windows for 1,128 questions at 512 tokens, against 21,655 cut here).  Each context is
        tokenised once and sliced with ``stride`` tokens of overlap; the special tokens and segment
        ids come from the tokenizer's own pair template, so BERT and RoBERTa tokenizers both work.
        """
        template = pair_template(self.tokenizer)
        contexts: dict[str, tuple[list[int], list[tuple[int, int]]]] = {}
        windows = []
        for index, example in enumerate(examples):
            question = self.tokenizer(example.question, add_special_tokens=False)["input_ids"]
            question = question[: self.max_question_tokens]
            if example.context not in contexts:
                encoded = self.tokenizer(
                    example.context,
                    add_special_tokens=False,
                    return_offsets_mapping=True,
                    verbose=False,
                )
                contexts[example.context] = (
                    encoded["input_ids"],
                    [tuple(o) for o in encoded["offset_mapping"]],
                )
            context_ids, context_offsets = contexts[example.context]
            room = self.max_length - len(question) - template.n_special
            if room <= self.stride:
                raise ValueError(
                    f"window of {self.max_length} tokens leaves {room} for the context after the "
                    f"question and special tokens: not more than the stride {self.stride}"
                )
            for begin, stop in slice_bounds(len(context_ids), room, self.stride):
                window = template.window(
                    index, question, context_ids[begin:stop], context_offsets[begin:stop]
                )
                if with_answers:
                    _label_answer(window, example)
                windows.append(window)
        return windows

    def dataset(self, windows: Sequence[Window]) -> Dataset:
        """Windows -> input ids, segment ids and labels [answer start, answer end] (0, 0: none)."""
        return Dataset.from_dict(
            {
                "input_ids": [w.input_ids for w in windows],
                "token_type_ids": [w.token_type_ids for w in windows],
                "labels": [[w.start, w.end] for w in windows],
            }
        )

    @staticmethod
    def span_logits(network: nn.Module, inputs: dict) -> torch.Tensor:
        """(B, L, 2): start and end logits of each window."""
        ids, mask, types = inputs["input_ids"], inputs["attention_mask"], inputs["token_type_ids"]
        return torch.stack(network(ids, mask, types), dim=-1)

    @staticmethod
    def span_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean of the start and end cross-entropies; logits (B, L, 2), labels (B, 2)."""
        ce = nn.functional.cross_entropy
        return (ce(logits[..., 0].float(), labels[:, 0]) + ce(logits[..., 1].float(), labels[:, 1])) / 2

    def dev_metrics(self, dev: Sequence[QAExample], windows: Sequence[Window]):
        """``compute_metrics``: token F1 and EM of the best span over each dev question's windows."""

        def compute(prediction: EvalPrediction) -> dict[str, float]:
            logits = np.asarray(prediction.predictions)  # (windows, longest, 2), padded past each
            scores = [torch.from_numpy(logits[i, : len(w.input_ids)]) for i, w in enumerate(windows)]
            answers = self.best_answers(dev, windows, scores)
            return {
                "f1": sum(token_f1(p, e.answer_text) for p, e in zip(answers, dev)) / len(dev),
                "em": sum(exact_match(p, e.answer_text) for p, e in zip(answers, dev)) / len(dev),
            }

        return compute

    def fit(
        self,
        train: Sequence[QAExample],
        dev: Sequence[QAExample] | None,
        settings: TrainSettings,
        negative_keep: float = 0.1,
    ) -> dict:
        """Fine-tune with `transformers.Trainer`, keeping the epoch with the best dev F1."""
        self.device = settings.device
        all_windows = self.windows(train, with_answers=True)
        keep_rng = random.Random(settings.seed)
        windows = [w for w in all_windows if w.start > 0 or keep_rng.random() < negative_keep]
        logger.info(
            "QA training windows: %d of %d kept (%d with the answer)",
            len(windows),
            len(all_windows),
            sum(w.start > 0 for w in windows),
        )
        dev_windows = self.windows(dev, with_answers=True) if dev else []
        history = fit_with_trainer(
            self.network,
            self.dataset(windows),
            self.dataset(dev_windows) if dev else None,
            DataCollatorWithPadding(self.tokenizer),
            self.span_logits,
            self.span_loss,
            self.dev_metrics(dev, dev_windows) if dev else None,
            "f1",
            settings,
            longest=max(len(w.input_ids) for w in windows),
        )
        history["windows"] = {
            "total": len(all_windows),
            "kept": len(windows),
            "with_answer": sum(w.start > 0 for w in windows),
        }
        return history

    def best_answers(
        self, examples: Sequence[QAExample], windows: Sequence[Window], logits: Sequence[torch.Tensor]
    ) -> list[str]:
        """The best-scoring span over each example's windows (``logits[w]``: (len(window), 2)); ""
        when no window has context."""
        best: list[tuple[float, int, int, int]] = [(-float("inf"), -1, 0, 0)] * len(examples)
        for w, (window, scores) in enumerate(zip(windows, logits, strict=True)):
            context = [i for i, o in enumerate(window.offsets) if o is not None]
            if not context:
                continue  # an empty context has no span to offer
            valid = torch.zeros(scores.shape[0], dtype=torch.bool)
            valid[context] = True
            score, i, j = best_span(scores[:, 0], scores[:, 1], valid, self.max_answer_tokens)
            if score > best[window.example][0]:
                best[window.example] = (score, w, i, j)
        answers = []
        for example, (_, w, i, j) in zip(examples, best):
            offsets = windows[w].offsets if w >= 0 else None
            answers.append(example.context[offsets[i][0] : offsets[j][1]] if offsets else "")
        return answers

    @torch.no_grad()
    def predict(
        self, examples: Sequence[QAExample], settings: TrainSettings | None = None
    ) -> list[str]:
        settings = settings or TrainSettings(device=self.device)
        self.device = settings.device
        self.network.to(self.device).eval()
        windows = self.windows(examples, with_answers=False)
        collator = DataCollatorWithPadding(self.tokenizer)
        logits: list[torch.Tensor | None] = [None] * len(windows)
        widths = [len(w.input_ids) for w in windows]
        groups = group_by_tokens(
            widths, [1] * len(windows), settings.max_tokens, settings.max_batch
        )
        for group in tqdm(groups, desc="answer", disable=not settings.progress, leave=False):
            features = [{"input_ids": windows[w].input_ids,
                         "token_type_ids": windows[w].token_type_ids} for w in group]  # fmt: skip
            batch = {k: v.to(self.device) for k, v in collator(features).items()}
            with autocast_for(self.device):
                scores = self.span_logits(self.network, batch).float().cpu()
            for row, w in enumerate(group):
                logits[w] = scores[row, : widths[w]]
        return self.best_answers(examples, windows, logits)

    def _answer_position(self, example: QAExample) -> int:
        key = ("position", self.tokenizer.name_or_path, example.qid, example.answer_start)
        if key not in self._window_cache:
            self._window_cache[key] = answer_token_position(self.tokenizer, example)
        return self._window_cache[key]

    def evaluate(
        self, examples: Sequence[QAExample], settings: TrainSettings | None = None
    ) -> dict:
        """EM/F1 overall and by the answer's token position in the context; ``units`` holds the
        per-question scores (by qid) for paired tests."""
        predictions = self.predict(examples, settings)
        em = [exact_match(p, e.answer_text) for p, e in zip(predictions, examples)]
        f1 = [token_f1(p, e.answer_text) for p, e in zip(predictions, examples)]
        scores = {
            "em": sum(em) / max(len(em), 1),
            "f1": sum(f1) / max(len(f1), 1),
            "n": len(examples),
        }
        buckets = [position_bucket(self._answer_position(e)) for e in examples]
        units = {"em": em, "f1": f1}
        for _, _, name in POSITION_BUCKETS:
            idx = [i for i, b in enumerate(buckets) if b == name]
            scores[f"{name}_n"] = len(idx)
            if idx:
                scores[f"{name}_em"] = sum(em[i] for i in idx) / len(idx)
                scores[f"{name}_f1"] = sum(f1[i] for i in idx) / len(idx)
                units[f"{name}_f1"] = {examples[i].qid: f1[i] for i in idx}
        ids = [e.qid for e in examples]
        scores["units"] = {
            k: v if isinstance(v, dict) else dict(zip(ids, v, strict=True))
            for k, v in units.items()
        }
        return scores

    def save(self, directory: str | Path) -> Path:
        meta = {
            "task": "answer",
            "max_length": self.max_length,
            "stride": self.stride,
            "max_answer_tokens": self.max_answer_tokens,
            "max_question_tokens": self.max_question_tokens,
        }
        return save_task_model(
            directory, self.network.encoder, self.tokenizer, self.network.qa_outputs, meta
        )

    @classmethod
    def load(cls, directory: str | Path) -> QAModel:
        encoder, tokenizer, head, meta = load_task_model(directory, "answer")
        settings = {
            k: meta[k] for k in ("max_length", "stride", "max_answer_tokens", "max_question_tokens")
        }
        model = cls(encoder, tokenizer, **settings)
        model.network.qa_outputs.load_state_dict(head)
        model.network.eval()
        return model

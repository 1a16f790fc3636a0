"""Extractive QA over long articles, long model and sliding-window short baseline alike.

Both read [CLS] question [SEP] context-window [SEP] windows cut with a stride (`transformers`'
overflowing-token windows); the long model's window is simply 4,096 tokens instead of 512, so most
articles fit in one or two windows.  The answer is the best-scoring span over all windows:

    score(i, j) = start_logit[i] + end_logit[j],   i <= j < i + max_answer_tokens,  i, j in context

Question tokens get global attention (Longformer).  Training windows without the answer point at
[CLS]; only a fraction ``negative_keep`` of them is kept, so the model sees mostly answerable windows.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from nlprec.clinical_longdoc.data import QAExample
from nlprec.clinical_longdoc.encoder import LongEncoder
from nlprec.clinical_longdoc.heads import SpanExtractor
from nlprec.clinical_longdoc.metrics import exact_match, token_f1
from nlprec.clinical_longdoc.persist import load_task_model, save_task_model
from nlprec.clinical_longdoc.training import (
    TrainSettings,
    autocast_for,
    fit,
    group_by_tokens,
    pad_rows,
)
from torch import nn
from tqdm.auto import tqdm

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
        questions = [
            self.tokenizer.convert_tokens_to_string(
                self.tokenizer.tokenize(e.question)[: self.max_question_tokens]
            )
            for e in examples
        ]
        encoded = self.tokenizer(
            questions,
            [e.context for e in examples],
            truncation="only_second",
            max_length=self.max_length,
            stride=self.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        windows = []
        for w, example_index in enumerate(encoded["overflow_to_sample_mapping"]):
            sequence_ids = encoded.sequence_ids(w)
            offsets = [
                tuple(o) if s == 1 else None
                for o, s in zip(encoded["offset_mapping"][w], sequence_ids)
            ]
            window = Window(
                example_index, encoded["input_ids"][w], encoded["token_type_ids"][w], offsets
            )
            if with_answers:
                example = examples[example_index]
                char_start, char_end = (
                    example.answer_start,
                    example.answer_start + len(example.answer_text),
                )
                inside = [i for i, o in enumerate(offsets) if o is not None]
                if offsets[inside[0]][0] <= char_start and offsets[inside[-1]][1] >= char_end:
                    window.start = next(i for i in inside if offsets[i][1] > char_start)
                    window.end = max(i for i in inside if offsets[i][0] < char_end)
            windows.append(window)
        return windows

    def _collate(self, windows: Sequence[Window]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = pad_rows(
            [w.input_ids for w in windows], self.tokenizer.pad_token_id
        )
        token_type_ids, _ = pad_rows([w.token_type_ids for w in windows], 1)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
            "start": torch.tensor([w.start for w in windows]),
            "end": torch.tensor([w.end for w in windows]),
        }
        return {k: v.to(self.device) for k, v in batch.items()}

    def fit(
        self,
        train: Sequence[QAExample],
        dev: Sequence[QAExample] | None,
        settings: TrainSettings,
        negative_keep: float = 0.1,
    ) -> dict:
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
        widths = [len(w.input_ids) for w in windows]

        def epoch_batches(rng: random.Random):
            groups = group_by_tokens(
                widths, [1] * len(windows), settings.max_tokens, settings.max_batch, rng
            )
            return [self._collate([windows[i] for i in g]) for g in groups]

        def loss_fn(network: nn.Module, batch) -> torch.Tensor:
            start, end = network(
                batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
            )
            ce = nn.functional.cross_entropy
            return (ce(start.float(), batch["start"]) + ce(end.float(), batch["end"])) / 2

        def dev_score(network: nn.Module) -> float:
            return self.evaluate(dev, settings)["f1"]

        return fit(
            self.network, epoch_batches, loss_fn, settings, dev_score if dev else None, desc="qa"
        )

    @torch.no_grad()
    def predict(
        self, examples: Sequence[QAExample], settings: TrainSettings | None = None
    ) -> list[str]:
        settings = settings or TrainSettings(device=self.device)
        self.device = settings.device
        self.network.to(self.device).eval()
        windows = self.windows(examples, with_answers=False)
        best: list[tuple[float, int, int, int]] = [(-float("inf"), -1, 0, 0)] * len(examples)
        widths = [len(w.input_ids) for w in windows]
        groups = group_by_tokens(
            widths, [1] * len(windows), settings.max_tokens, settings.max_batch
        )
        for group in tqdm(groups, desc="answer", disable=not settings.progress, leave=False):
            batch = self._collate([windows[i] for i in group])
            with autocast_for(self.device):
                start, end = self.network(
                    batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
                )
            start, end = start.float().cpu(), end.float().cpu()
            for row, w in enumerate(group):
                window = windows[w]
                valid = torch.zeros(start.shape[1], dtype=torch.bool)
                valid[[i for i, o in enumerate(window.offsets) if o is not None]] = True
                score, i, j = best_span(start[row], end[row], valid, self.max_answer_tokens)
                if score > best[window.example][0]:
                    best[window.example] = (score, w, i, j)
        answers = []
        for example, (_, w, i, j) in zip(examples, best):
            if w < 0:
                answers.append("")
                continue
            offsets = windows[w].offsets
            answers.append(example.context[offsets[i][0] : offsets[j][1]])
        return answers

    def _answer_position(self, example: QAExample) -> int:
        key = ("position", self.tokenizer.name_or_path, example.qid, example.answer_start)
        if key not in self._window_cache:
            self._window_cache[key] = answer_token_position(self.tokenizer, example)
        return self._window_cache[key]

    def evaluate(
        self, examples: Sequence[QAExample], settings: TrainSettings | None = None
    ) -> dict:
        """EM/F1 overall and by the answer's token position in the context."""
        predictions = self.predict(examples, settings)
        em = [exact_match(p, e.answer_text) for p, e in zip(predictions, examples)]
        f1 = [token_f1(p, e.answer_text) for p, e in zip(predictions, examples)]
        scores = {
            "em": sum(em) / max(len(em), 1),
            "f1": sum(f1) / max(len(f1), 1),
            "n": len(examples),
        }
        buckets = [position_bucket(self._answer_position(e)) for e in examples]
        for _, _, name in POSITION_BUCKETS:
            idx = [i for i, b in enumerate(buckets) if b == name]
            scores[f"{name}_n"] = len(idx)
            if idx:
                scores[f"{name}_em"] = sum(em[i] for i in idx) / len(idx)
                scores[f"{name}_f1"] = sum(f1[i] for i in idx) / len(idx)
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

"""Document classification: the long model and the short baselines behind one interface.

`DocumentClassifierModel` bundles the network, its tokenizer, label names and the segment
strategy (``long``, ``head``, ``head_tail``, ``chunk_mean``, ``chunk_max``); it trains, predicts,
scores and saves itself (safetensors + json).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path

import torch
from nlprec.clinical_longdoc.data import DocumentSet
from nlprec.clinical_longdoc.encoder import LongEncoder
from nlprec.clinical_longdoc.heads import DocumentClassifier
from nlprec.clinical_longdoc.metrics import classification_scores
from nlprec.clinical_longdoc.persist import load_task_model, save_task_model
from nlprec.clinical_longdoc.segments import aggregate_segments, make_segments, tokenize_bodies
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

LONG_NOTE_TOKENS = 512  # "notes over 512 tokens" counts [CLS] and [SEP]


class DocumentClassifierModel:
    def __init__(
        self,
        encoder: LongEncoder,
        tokenizer,
        labels: Sequence[str],
        strategy: str = "long",
        max_length: int | None = None,
        dropout: float = 0.1,
    ):
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.label_to_id = {label: i for i, label in enumerate(self.labels)}
        self.strategy = strategy
        self.max_length = min(max_length or encoder.max_length, encoder.max_length)
        self.network = DocumentClassifier(encoder, len(self.labels), dropout)
        self.device = "cpu"

    # ------------------------------------------------------------------ encoding

    def segments(self, texts: Sequence[str]) -> list[list[list[int]]]:
        bodies = tokenize_bodies(self.tokenizer, texts)
        return make_segments(
            bodies,
            self.strategy,
            self.max_length,
            self.tokenizer.cls_token_id,
            self.tokenizer.sep_token_id,
        )

    def _collate(self, docs: Sequence[list[list[int]]]) -> dict[str, torch.Tensor]:
        rows, doc_index = [], []
        for d, segments in enumerate(docs):
            rows.extend(segments)
            doc_index.extend([d] * len(segments))
        input_ids, attention_mask = pad_rows(rows, self.tokenizer.pad_token_id)
        return {
            "input_ids": input_ids.to(self.device),
            "attention_mask": attention_mask.to(self.device),
            "doc_index": torch.tensor(doc_index, device=self.device),
            "n_docs": len(docs),
        }

    def _batches(self, docs, settings: TrainSettings, rng: random.Random | None) -> list[list[int]]:
        widths = [max(len(s) for s in doc) for doc in docs]
        rows = [len(doc) for doc in docs]
        return group_by_tokens(widths, rows, settings.max_tokens, settings.max_batch, rng)

    def document_logits(self, batch: dict) -> torch.Tensor:  # (n_docs, C)
        logits = self.network(batch["input_ids"], batch["attention_mask"])  # (S, C)
        how = "max" if self.strategy == "chunk_max" else "mean"
        return aggregate_segments(logits.float(), batch["doc_index"], batch["n_docs"], how)

    # ------------------------------------------------------------------ train / predict

    def fit(self, train: DocumentSet, dev: DocumentSet | None, settings: TrainSettings) -> dict:
        unknown = sorted(set(train.labels) - set(self.labels))
        if unknown:
            raise ValueError(f"training labels not in the label list: {unknown}")
        self.device = settings.device
        docs = self.segments(train.texts)
        targets = torch.tensor([self.label_to_id[y] for y in train.labels])

        def epoch_batches(rng):
            return [
                (self._collate([docs[i] for i in group]), targets[group].to(self.device))
                for group in self._batches(docs, settings, rng)
            ]

        def loss_fn(network: nn.Module, batch) -> torch.Tensor:
            inputs, y = batch
            return nn.functional.cross_entropy(self.document_logits(inputs), y)

        def dev_score(network: nn.Module) -> float:
            return self.evaluate(dev, settings)["macro_f1"]

        return fit(
            self.network,
            epoch_batches,
            loss_fn,
            settings,
            dev_score if dev is not None and len(dev) else None,
            desc=f"classify[{self.strategy}]",
        )

    @torch.no_grad()
    def predict_proba(
        self, texts: Sequence[str], settings: TrainSettings | None = None
    ) -> torch.Tensor:
        """(N, C) class probabilities, in input order."""
        settings = settings or TrainSettings(device=self.device)
        self.device = settings.device
        self.network.to(self.device).eval()
        docs = self.segments(texts)
        probabilities = torch.zeros(len(docs), len(self.labels))
        groups = self._batches(docs, settings, rng=None)
        for group in tqdm(
            groups, desc=f"predict[{self.strategy}]", disable=not settings.progress, leave=False
        ):
            with autocast_for(self.device):
                logits = self.document_logits(self._collate([docs[i] for i in group]))
            probabilities[group] = logits.float().softmax(-1).cpu()
        return probabilities

    def predict(self, texts: Sequence[str], settings: TrainSettings | None = None) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts, settings).argmax(-1).tolist()]

    def evaluate(self, data: DocumentSet, settings: TrainSettings | None = None) -> dict:
        """Scores overall and on notes longer than 512 tokens; unseen gold labels count as errors."""
        unseen = sorted(set(data.labels) - set(self.labels))
        if unseen:
            n = sum(y in unseen for y in data.labels)
            logger.warning(
                "%d documents have labels unseen in training %s; they count as errors", n, unseen
            )
        predicted = self.predict(data.texts, settings)
        lengths = [len(b) + 2 for b in tokenize_bodies(self.tokenizer, data.texts)]
        long_idx = [i for i, n in enumerate(lengths) if n > LONG_NOTE_TOKENS]
        scores = classification_scores(data.labels, predicted)
        long_scores = classification_scores(
            [data.labels[i] for i in long_idx], [predicted[i] for i in long_idx]
        )
        scores.update({f"long_notes_{k}": v for k, v in long_scores.items()})
        return scores

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> Path:
        meta = {
            "task": "classify",
            "labels": self.labels,
            "strategy": self.strategy,
            "max_length": self.max_length,
        }
        return save_task_model(
            directory, self.network.encoder, self.tokenizer, self.network.classifier, meta
        )

    @classmethod
    def load(cls, directory: str | Path) -> DocumentClassifierModel:
        encoder, tokenizer, head, meta = load_task_model(directory, "classify")
        model = cls(encoder, tokenizer, meta["labels"], meta["strategy"], meta["max_length"])
        model.network.classifier.load_state_dict(head)
        model.network.eval()
        return model

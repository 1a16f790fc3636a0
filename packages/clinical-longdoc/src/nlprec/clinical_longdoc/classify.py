"""Document classification: the long model and the short baselines behind one interface.

`DocumentClassifierModel` bundles the network, its tokenizer, label names, the segment
strategy (``long``, ``head``, ``head_tail``, ``chunk_mean``, ``chunk_max``) and the pooling
(``cls`` or ``mean``); it trains, predicts, scores and saves itself (safetensors + json).
``fit(..., linear_probe=True)`` first fits the head as logistic regression on frozen features
(LP-FT, see `probe`); with ``epochs=0`` that probe is the whole model (the frozen baseline).
Training runs on `transformers.Trainer` (`training.fit_with_trainer`): a document is one row of a
`datasets.Dataset` holding its segments, and `SegmentCollator` pads the segments of a batch of
documents into encoder rows (`DataCollatorWithPadding`) and records each row's document.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from nlprec.clinical_longdoc.data import DocumentSet
from nlprec.clinical_longdoc.encoder import LongEncoder
from nlprec.clinical_longdoc.heads import DocumentClassifier
from nlprec.clinical_longdoc.metrics import classification_scores
from nlprec.clinical_longdoc.persist import load_task_model, save_task_model
from nlprec.clinical_longdoc.probe import fit_linear_probe
from nlprec.clinical_longdoc.segments import aggregate_segments, make_segments, tokenize_bodies
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

LONG_NOTE_TOKENS = 512  # "notes over 512 tokens" counts [CLS] and [SEP]


@dataclass
class SegmentCollator:
    """Documents ({"segments": [[ids], ...], "labels"?: int}) -> padded encoder rows (input_ids,
    attention_mask), ``doc_index`` (each row's document in the batch) and the documents' labels."""

    tokenizer: Any

    def __call__(self, documents: list[dict]) -> dict[str, torch.Tensor]:
        rows = [{"input_ids": segment} for doc in documents for segment in doc["segments"]]
        batch = dict(DataCollatorWithPadding(self.tokenizer)(rows))
        batch["doc_index"] = torch.tensor(
            [d for d, doc in enumerate(documents) for _ in doc["segments"]]
        )
        if "labels" in documents[0]:
            batch["labels"] = torch.tensor([doc["labels"] for doc in documents])
        return batch


class DocumentClassifierModel:
    def __init__(
        self,
        encoder: LongEncoder,
        tokenizer,
        labels: Sequence[str],
        strategy: str = "long",
        max_length: int | None = None,
        dropout: float = 0.1,
        pooling: str = "cls",
    ):
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.label_to_id = {label: i for i, label in enumerate(self.labels)}
        self.strategy = strategy
        self.max_length = min(max_length or encoder.max_length, encoder.max_length)
        self.network = DocumentClassifier(encoder, len(self.labels), dropout, pooling)
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
        batch = SegmentCollator(self.tokenizer)([{"segments": doc} for doc in docs])
        return {k: v.to(self.device) for k, v in batch.items()}

    def _batches(self, docs, settings: TrainSettings) -> list[list[int]]:
        widths = [max(len(s) for s in doc) for doc in docs]
        rows = [len(doc) for doc in docs]
        return group_by_tokens(widths, rows, settings.max_tokens, settings.max_batch)

    def document_logits(self, batch: dict, network: nn.Module | None = None) -> torch.Tensor:
        """(n_docs, C); ``network``: the model to run (training passes its DDP wrapper)."""
        network = network or self.network
        logits = network(batch["input_ids"], batch["attention_mask"])  # (S, C)
        how = "max" if self.strategy == "chunk_max" else "mean"
        n_docs = int(batch["doc_index"].max()) + 1
        return aggregate_segments(logits.float(), batch["doc_index"], n_docs, how)

    @torch.no_grad()
    def document_features(self, docs, settings: TrainSettings) -> torch.Tensor:  # (N, H)
        """Frozen pooled features per document (mean over its segments), in input order."""
        self.network.to(self.device).eval()
        features = torch.zeros(len(docs), self.network.encoder.hidden_size)
        for group in self._batches(docs, settings):
            batch = self._collate([docs[i] for i in group])
            with autocast_for(self.device):
                rows = self.network.features(batch["input_ids"], batch["attention_mask"])
            per_doc = aggregate_segments(rows.float(), batch["doc_index"], len(group), "mean")
            features[group] = per_doc.cpu()
        return features

    def _probe_head(self, docs, targets, dev: DocumentSet | None, settings: TrainSettings) -> dict:
        """Initialise the linear head by logistic regression on frozen features (LP-FT)."""
        dev_x = dev_y = None
        if dev is not None and len(dev):
            known = [i for i, y in enumerate(dev.labels) if y in self.label_to_id]
            dev_docs = self.segments([dev.texts[i] for i in known])
            dev_x = self.document_features(dev_docs, settings)
            dev_y = torch.tensor([self.label_to_id[dev.labels[i]] for i in known])
        weight, bias, chosen = fit_linear_probe(
            self.document_features(docs, settings), targets, len(self.labels), dev_x, dev_y
        )
        with torch.no_grad():
            self.network.classifier.weight.copy_(weight)
            self.network.classifier.bias.copy_(bias)
        logger.info("classify[%s]: head initialised by a linear probe %s", self.strategy, chosen)
        return chosen

    # ------------------------------------------------------------------ train / predict

    def dataset(self, docs: Sequence[list[list[int]]], labels: Sequence[str]) -> Dataset:
        """Segmented documents and label ids (a label unseen in training gets id 0: dev is scored
        on the label names, see `dev_metrics`; the id only feeds the dev loss)."""
        ids = [self.label_to_id.get(label, 0) for label in labels]
        return Dataset.from_dict({"segments": list(docs), "labels": ids})

    def dev_metrics(self, dev: DocumentSet):
        """``compute_metrics``: macro/micro-F1 and accuracy on the label names of ``dev`` (in
        order); a gold label unseen in training counts as an error."""

        def compute(prediction: EvalPrediction) -> dict[str, float]:
            best = np.asarray(prediction.predictions).argmax(-1)
            return classification_scores(dev.labels, [self.labels[int(i)] for i in best])

        return compute

    def fit(
        self,
        train: DocumentSet,
        dev: DocumentSet | None,
        settings: TrainSettings,
        linear_probe: bool = False,
    ) -> dict:
        """Fine-tune on ``train`` with `transformers.Trainer`, keeping the epoch with the best dev
        macro-F1.

        linear_probe: fit the head on frozen features first (LP-FT); the probed state then competes
        in the dev selection, and ``settings.epochs == 0`` leaves the probe as the final model.
        """
        unknown = sorted(set(train.labels) - set(self.labels))
        if unknown:
            raise ValueError(f"training labels not in the label list: {unknown}")
        self.device = settings.device
        docs = self.segments(train.texts)
        targets = torch.tensor([self.label_to_id[y] for y in train.labels])
        probe = self._probe_head(docs, targets, dev, settings) if linear_probe else None
        with_dev = dev is not None and len(dev) > 0
        history = fit_with_trainer(
            self.network,
            self.dataset(docs, train.labels),
            self.dataset(self.segments(dev.texts), dev.labels) if with_dev else None,
            SegmentCollator(self.tokenizer),
            lambda network, inputs: self.document_logits(inputs, network),
            nn.functional.cross_entropy,
            self.dev_metrics(dev) if with_dev else None,
            "macro_f1",
            settings,
            longest=max(len(doc) * max(len(s) for s in doc) for doc in docs),
            score_start=linear_probe,
        )
        history["probe"] = probe
        return history

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
        groups = self._batches(docs, settings)
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
        """Scores overall and on notes longer than 512 tokens; unseen gold labels count as errors.

        ``units`` holds per-document correctness (by document id) for paired tests.
        """
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
        ids = data.ids or [str(i) for i in range(len(data))]
        correct = [float(g == p) for g, p in zip(data.labels, predicted, strict=True)]
        scores["units"] = {
            "accuracy": dict(zip(ids, correct, strict=True)),
            "long_notes_accuracy": {ids[i]: correct[i] for i in long_idx},
        }
        return scores

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> Path:
        meta = {
            "task": "classify",
            "labels": self.labels,
            "strategy": self.strategy,
            "max_length": self.max_length,
            "pooling": self.network.pooling,
        }
        return save_task_model(
            directory, self.network.encoder, self.tokenizer, self.network.classifier, meta
        )

    @classmethod
    def load(cls, directory: str | Path) -> DocumentClassifierModel:
        encoder, tokenizer, head, meta = load_task_model(directory, "classify")
        model = cls(
            encoder,
            tokenizer,
            meta["labels"],
            meta["strategy"],
            meta["max_length"],
            pooling=meta.get("pooling", "cls"),  # models saved before pooling was a choice
        )
        model.network.classifier.load_state_dict(head)
        model.network.eval()
        return model

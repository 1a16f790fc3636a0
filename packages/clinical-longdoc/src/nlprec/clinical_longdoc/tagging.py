"""Token classification (NER): labels on first sub-words, word-level entity F1 with seqeval;
trained with `transformers.Trainer` on a `datasets.Dataset`.

A sentence longer than the encoder is truncated; its words past the cut are predicted ``O`` and
the number of such words is logged (never silent).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from nlprec.clinical_longdoc.data import TaggedSentence
from nlprec.clinical_longdoc.encoder import LongEncoder
from nlprec.clinical_longdoc.heads import IGNORE_INDEX, TokenTagger
from nlprec.clinical_longdoc.metrics import entity_f1, sentence_entity_f1
from nlprec.clinical_longdoc.persist import load_task_model, save_task_model
from nlprec.clinical_longdoc.training import (
    TrainSettings,
    autocast_for,
    fit_with_trainer,
    group_by_tokens,
)
from torch import nn
from tqdm.auto import tqdm
from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding, EvalPrediction

logger = logging.getLogger(__name__)
OUTSIDE = "O"


class TokenTaggerModel:
    def __init__(
        self,
        encoder: LongEncoder,
        tokenizer,
        tags: Sequence[str],
        max_length: int | None = None,
        dropout: float = 0.1,
    ):
        self.tokenizer = tokenizer
        self.tags = list(tags)
        if OUTSIDE not in self.tags:
            self.tags.insert(0, OUTSIDE)
        self.tag_to_id = {t: i for i, t in enumerate(self.tags)}
        self.max_length = min(max_length or encoder.max_length, encoder.max_length)
        self.network = TokenTagger(encoder, len(self.tags), dropout)
        self.device = "cpu"

    def encode(self, sentences: Sequence[TaggedSentence]) -> list[dict]:
        """Per sentence: input ids, first-sub-word label ids, and each word's first token index."""
        encoded = self.tokenizer(
            [s.words for s in sentences],
            is_split_into_words=True,
            truncation=True,
            max_length=self.max_length,
        )
        items, cut_words = [], 0
        for n, sentence in enumerate(sentences):
            word_ids = encoded.word_ids(n)
            first_token = {}
            for position, word in enumerate(word_ids):
                if word is not None and word not in first_token:
                    first_token[word] = position
            cut_words += len(sentence.words) - len(first_token)
            labels = [IGNORE_INDEX] * len(word_ids)
            for word, position in first_token.items():
                tag = sentence.tags[word] if sentence.tags else OUTSIDE
                labels[position] = self.tag_to_id.get(tag, self.tag_to_id[OUTSIDE])
            items.append(
                {"input_ids": encoded["input_ids"][n], "labels": labels, "first_token": first_token}
            )
        if cut_words:
            logger.warning(
                "NER: %d words beyond %d tokens were truncated (predicted O)",
                cut_words,
                self.max_length,
            )
        return items

    def dataset(self, sentences: Sequence[TaggedSentence]) -> Dataset:
        """Sentences -> a `datasets.Dataset` of input ids, attention mask and first-sub-word labels."""

        def tokenise(columns: dict[str, list]) -> dict[str, list]:
            rows = [TaggedSentence(**dict(zip(columns, values))) for values in zip(*columns.values())]
            items = self.encode(rows)
            return {
                "input_ids": [it["input_ids"] for it in items],
                "attention_mask": [[1] * len(it["input_ids"]) for it in items],
                "labels": [it["labels"] for it in items],
            }

        records = Dataset.from_list([s.__dict__ for s in sentences])
        return records.map(tokenise, batched=True, remove_columns=records.column_names)

    def dev_metrics(self, dev: Sequence[TaggedSentence]):
        """``compute_metrics``: strict entity F1 (seqeval) on the words of ``dev`` (in order), read
        from first sub-words; words cut by truncation count as O."""

        def compute(prediction: EvalPrediction) -> dict[str, float]:
            best = np.asarray(prediction.predictions).argmax(-1)
            predicted = []
            for sentence, row, labels in zip(dev, best, prediction.label_ids, strict=True):
                tags = [self.tags[t] for t, label in zip(row, labels) if label != IGNORE_INDEX]
                predicted.append(tags + [OUTSIDE] * (len(sentence.words) - len(tags)))
            return entity_f1([s.tags for s in dev], predicted)

        return compute

    def fit(
        self,
        train: Sequence[TaggedSentence],
        dev: Sequence[TaggedSentence] | None,
        settings: TrainSettings,
    ) -> dict:
        """Fine-tune with `transformers.Trainer` (see `training.fit_with_trainer`), keeping the
        epoch with the best dev entity F1."""
        unknown = sorted({t for s in train for t in s.tags} - set(self.tags))
        if unknown:
            raise ValueError(f"training tags not in the tag list: {unknown}")
        self.device = settings.device
        train_set = self.dataset(train)

        def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # (B, L, C), (B, L)
            return nn.functional.cross_entropy(
                logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX
            )

        return fit_with_trainer(
            self.network,
            train_set,
            self.dataset(dev) if dev else None,
            DataCollatorForTokenClassification(self.tokenizer),
            lambda network, inputs: network(inputs["input_ids"], inputs["attention_mask"]),
            loss_fn,
            self.dev_metrics(dev or []),
            "f1",
            settings,
            longest=max(len(ids) for ids in train_set["input_ids"]),
        )

    @torch.no_grad()
    def predict(
        self, sentences: Sequence[TaggedSentence], settings: TrainSettings | None = None
    ) -> list[list[str]]:
        settings = settings or TrainSettings(device=self.device)
        self.device = settings.device
        self.network.to(self.device).eval()
        items = self.encode(sentences)
        widths = [len(it["input_ids"]) for it in items]
        predictions: list[list[str]] = [[] for _ in sentences]
        groups = group_by_tokens(widths, [1] * len(items), settings.max_tokens, settings.max_batch)
        collator = DataCollatorWithPadding(self.tokenizer)
        for group in tqdm(groups, desc="tag", disable=not settings.progress, leave=False):
            batch = collator([{"input_ids": items[i]["input_ids"]} for i in group])
            with autocast_for(self.device):
                logits = self.network(
                    batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
                )
            best = logits.argmax(-1).cpu()  # (B, L)
            for row, i in enumerate(group):
                first = items[i]["first_token"]
                predictions[i] = [
                    self.tags[best[row, first[w]]] if w in first else OUTSIDE
                    for w in range(len(sentences[i].words))
                ]
        return predictions

    def evaluate(
        self, sentences: Sequence[TaggedSentence], settings: TrainSettings | None = None
    ) -> dict:
        """Strict entity F1 over the corpus; ``units`` holds each sentence's own entity F1 (1.0 where
        neither gold nor prediction has an entity) by position, for paired tests."""
        predicted = self.predict(sentences, settings)
        gold = [s.tags for s in sentences]
        scores = entity_f1(gold, predicted)
        scores["units"] = {
            "sentence_f1": {
                str(i): sentence_entity_f1(g, p)
                for i, (g, p) in enumerate(zip(gold, predicted, strict=True))
            }
        }
        return scores

    def save(self, directory: str | Path) -> Path:
        meta = {"task": "tag", "tags": self.tags, "max_length": self.max_length}
        return save_task_model(
            directory, self.network.encoder, self.tokenizer, self.network.classifier, meta
        )

    @classmethod
    def load(cls, directory: str | Path) -> TokenTaggerModel:
        encoder, tokenizer, head, meta = load_task_model(directory, "tag")
        model = cls(encoder, tokenizer, meta["tags"], meta["max_length"])
        model.network.classifier.load_state_dict(head)
        model.network.eval()
        return model

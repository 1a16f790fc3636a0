"""Fine-tuning any encoder on token or sequence classification, and predicting with the result.

NER labels each word on its first sub-word (the others get -100 and are ignored by the loss);
a word's prediction is read from its first sub-word too. Words cut off by truncation are tagged O.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Literal

import torch
from nlprec.core.training import BestState, Schedule, Trainer, autocast
from pydantic import Field
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    PreTrainedModel,
)

from .models import check_checkpoint
from .training import MAX_GRAD_NORM, OptimConfig, set_seed

IGNORE = -100


class FinetuneConfig(OptimConfig):
    model_config = {"extra": "forbid"}
    kind: Literal["token", "sequence"] = "sequence"
    epochs: int = Field(3, ge=1)
    max_len: int = Field(256, ge=8)


def encode_words(
    tokenizer, examples: list[dict], label2id: dict[str, int] | None, max_len: int
) -> list[dict]:
    """Token-classification features: input_ids, attention_mask, labels on first sub-words, word_starts."""
    encoded = tokenizer(
        [e["tokens"] for e in examples],
        is_split_into_words=True,
        truncation=True,
        max_length=max_len,
    )
    features = []
    for i, example in enumerate(examples):
        word_ids = encoded.word_ids(i)
        starts = [
            pos
            for pos, w in enumerate(word_ids)
            if w is not None and (pos == 0 or word_ids[pos - 1] != w)
        ]
        feature = {
            "input_ids": encoded["input_ids"][i],
            "attention_mask": encoded["attention_mask"][i],
            "word_starts": starts,
        }
        if label2id is not None:
            labels = [IGNORE] * len(word_ids)
            for pos in starts:
                labels[pos] = label2id[example["tags"][word_ids[pos]]]
            feature["labels"] = labels
        features.append(feature)
    return features


def encode_texts(
    tokenizer, examples: list[dict], label2id: dict[str, int] | None, max_len: int
) -> list[dict]:
    """Sequence-classification features; a `text_pair` truncates the pair's second text first."""
    texts = [e["text"] for e in examples]
    pairs = [e["text_pair"] for e in examples] if "text_pair" in examples[0] else None
    encoded = tokenizer(
        texts, pairs, truncation="longest_first" if pairs else True, max_length=max_len
    )
    features = [{k: encoded[k][i] for k in encoded} for i in range(len(examples))]
    if label2id is not None:
        for feature, example in zip(features, examples):
            feature["labels"] = label2id[example["label"]]
    return features


def load_for_task(model_path: str, kind: str, labels: list[str]) -> PreTrainedModel:
    """The encoder at `model_path` with a fresh classification head for `labels`."""
    check_checkpoint(model_path)
    cls = AutoModelForTokenClassification if kind == "token" else AutoModelForSequenceClassification
    return cls.from_pretrained(
        model_path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        dtype=torch.float32,
    )


def _collator(tokenizer, kind: str):
    return (
        DataCollatorForTokenClassification(tokenizer)
        if kind == "token"
        else DataCollatorWithPadding(tokenizer)
    )


def _model_inputs(features: list[dict]) -> list[dict]:
    return [{k: v for k, v in f.items() if k != "word_starts"} for f in features]


def train_classifier(
    model: PreTrainedModel,
    tokenizer,
    features: list[dict],
    cfg: FinetuneConfig,
    device: str,
    seed: int,
    show_progress: bool = False,
    desc: str = "finetune",
    dev_score: Callable[[PreTrainedModel], float] | None = None,
) -> dict:
    """Fine-tune in place on `nlprec.core.training`: shuffled epochs, AdamW with linear warm-up and
    decay, clipping, bf16 autocast on CUDA.

    With ``dev_score(model)`` the model is scored after every epoch and the weights of the best
    epoch are kept (selection on dev, never on test). Returns {"dev": per-epoch scores,
    "best_epoch": 1-based, or the last epoch without dev}.
    """
    set_seed(seed)
    rng = random.Random(seed)
    collator = _collator(tokenizer, cfg.kind)
    inputs = _model_inputs(features)
    steps_per_epoch = math.ceil(len(inputs) / cfg.batch_size)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    trainer = Trainer(
        optimizer,
        steps_per_epoch * cfg.epochs,
        schedule=Schedule(warmup_fraction=cfg.warmup_ratio),
        max_grad_norm=MAX_GRAD_NORM,
        device=device,
        progress=show_progress,
    )
    best = BestState(model)
    history: dict = {"dev": []}
    order = list(range(len(inputs)))
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        rng.shuffle(order)
        batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        for rows in trainer.iterate(batches, desc=f"{desc} epoch {epoch}"):
            batch = {k: v.to(device) for k, v in collator([inputs[i] for i in rows]).items()}
            with trainer.autocast():
                loss = model(**batch).loss
            trainer.step(loss)
        if dev_score is not None:
            history["dev"].append(dev_score(model))
            best.update(epoch, history["dev"][-1])
    history["best_epoch"] = best.restore() or cfg.epochs
    model.eval()
    return history


@torch.no_grad()
def predict_logits(
    model: PreTrainedModel,
    tokenizer,
    features: list[dict],
    kind: str,
    device: str,
    batch_size: int = 64,
) -> list[torch.Tensor]:
    """Logits per example, in input order: (L_i, C) for tokens, (C,) for sequences. Length-sorted batches."""
    collator = _collator(tokenizer, kind)
    inputs = [{k: v for k, v in f.items() if k not in ("labels", "word_starts")} for f in features]
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]["input_ids"]))
    model.to(device).eval()
    out: list[torch.Tensor | None] = [None] * len(inputs)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = {k: v.to(device) for k, v in collator([inputs[i] for i in idx]).items()}
        with autocast(device):
            logits = model(**batch).logits.float().cpu()
        for row, i in enumerate(idx):
            out[i] = logits[row, : len(inputs[i]["input_ids"])] if kind == "token" else logits[row]
    return out


def predict_word_tags(
    model, tokenizer, examples: list[dict], max_len: int, device: str
) -> list[list[str]]:
    features = encode_words(tokenizer, examples, None, max_len)
    logits = predict_logits(model, tokenizer, features, "token", device)
    id2label = model.config.id2label
    tags = []
    for example, feature, logit in zip(examples, features, logits):
        predicted = [id2label[int(logit[pos].argmax())] for pos in feature["word_starts"]]
        tags.append(predicted + ["O"] * (len(example["tokens"]) - len(predicted)))
    return tags


def predict_text_labels(
    model, tokenizer, examples: list[dict], max_len: int, device: str
) -> list[str]:
    features = encode_texts(tokenizer, examples, None, max_len)
    logits = predict_logits(model, tokenizer, features, "sequence", device)
    return [model.config.id2label[int(logit.argmax())] for logit in logits]

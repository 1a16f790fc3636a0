"""Fine-tuning any encoder on token or sequence classification (`transformers.Trainer` on a
`datasets.Dataset`), and predicting with the result.

NER labels each word on its first sub-word (the others get -100 and are ignored by the loss);
a word's prediction is read from its first sub-word too. Words cut off by truncation are tagged O.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from datasets import Dataset
from nlprec.core.hf_training import ScheduledTrainer, StepCallback, training_arguments
from nlprec.core.training import Schedule, autocast
from pydantic import Field
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    EvalPrediction,
    PreTrainedModel,
    PrinterCallback,
)

from .metrics import classification_scores, entity_f1
from .models import check_checkpoint
from .training import MAX_GRAD_NORM, OptimConfig

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


class _AnyLabel(dict):
    """Dev labels: one unseen in training gets id 0 (dev is scored on the label names, see
    `dev_metrics`; the ids only place NER words and feed the eval loss)."""

    def __missing__(self, key: str) -> int:
        return 0


def _dataset(tokenizer, examples: list[dict], label2id: dict[str, int], kind: str, max_len: int):
    """Records -> `datasets.Dataset` of model inputs (tokenised with a batched ``map``)."""
    encode = encode_words if kind == "token" else encode_texts

    def tokenise(columns: dict[str, list]) -> dict[str, list]:
        rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
        features = encode(tokenizer, rows, label2id, max_len)
        return {key: [f[key] for f in features] for key in features[0] if key != "word_starts"}

    records = Dataset.from_list(examples)
    return records.map(tokenise, batched=True, remove_columns=records.column_names)


def dev_metrics(kind: str, dev: list[dict], id2label: dict[int, str]) -> Callable:
    """``compute_metrics`` on the dev examples (in order): NER strict entity F1 (seqeval) on words
    (a word cut by truncation counts as O), or accuracy and macro-F1 (scikit-learn)."""

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        best = np.asarray(prediction.predictions).argmax(-1)
        if kind == "sequence":
            gold = [e["label"] for e in dev]
            return classification_scores(gold, [id2label[int(i)] for i in best])
        predicted = []
        for example, row, labels in zip(dev, best, prediction.label_ids):
            tags = [id2label[int(t)] for t, label in zip(row, labels) if label != IGNORE]
            predicted.append(tags + ["O"] * (len(example["tokens"]) - len(tags)))
        return {"f1": entity_f1([e["tags"] for e in dev], predicted)}

    return compute


def train_classifier(
    model: PreTrainedModel,
    tokenizer,
    train: list[dict],
    dev: list[dict],
    cfg: FinetuneConfig,
    seed: int,
    output_dir: str | Path,
    metric: str,
    log_metrics: Callable[..., None] | None = None,
    time_left: Callable[[], float | None] | None = None,
) -> dict:
    """Fine-tune in place with `transformers.Trainer` (AdamW, linear warm-up and decay, clipping,
    bf16 on CUDA), scoring ``dev`` after every epoch and keeping the best epoch on ``metric`` (a key
    of `dev_metrics`; selection on dev, never on test). Checkpoints go under ``output_dir`` (the
    caller's to remove).

    Returns {"dev": per-epoch dev scores, "best_epoch": 1-based, "stopped_early"}.
    """
    label2id = dict(model.config.label2id)
    args = training_arguments(
        output_dir,
        seed=seed,
        metric=metric,
        epochs=cfg.epochs,
        learning_rate=cfg.lr,
        weight_decay=cfg.weight_decay,
        max_grad_norm=MAX_GRAD_NORM,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=64,
        disable_tqdm=True,
    )
    step_callback = StepCallback(log_metrics, time_left)
    trainer = ScheduledTrainer(
        model=model,
        args=args,
        train_dataset=_dataset(tokenizer, train, label2id, cfg.kind, cfg.max_len),
        eval_dataset=_dataset(tokenizer, dev, _AnyLabel(label2id), cfg.kind, cfg.max_len),
        data_collator=_collator(tokenizer, cfg.kind),
        compute_metrics=dev_metrics(cfg.kind, dev, model.config.id2label),
        callbacks=[step_callback],
        schedule=Schedule(warmup_fraction=cfg.warmup_ratio),
    )
    trainer.remove_callback(PrinterCallback)  # the logs go to log_metrics
    trainer.train()
    model.eval()
    evaluations = [log for log in trainer.state.log_history if f"eval_{metric}" in log]
    best = max(evaluations, key=lambda log: log[f"eval_{metric}"]) if evaluations else None
    return {
        "dev": [log[f"eval_{metric}"] for log in evaluations],
        "best_epoch": round(best["epoch"]) if best else cfg.epochs,
        "stopped_early": step_callback.stopped_early,
    }


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

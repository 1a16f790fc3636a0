"""Continued masked-language-model pretraining at long length, as Li et al. did for
Clinical-Longformer / Clinical-BigBird (their pretraining code was never released).

Recipe: longify the short encoder, wrap it in the stock `*ForMaskedLM` class of its kind (the MLM
head's decoder is tied to the word embeddings; a sentence-transformers checkpoint ships no MLM head,
so the head's transform starts fresh), pack the corpus into ``max_length`` blocks, mask 15% of
tokens (80/10/10, `DataCollatorForLanguageModeling`), train with gradient checkpointing on
`transformers.Trainer` (constant learning rate, AdamW with weight decay 0.01, clipping at 1.0,
bf16 on CUDA, the step's time budget).

Corpus (`build_clinical_corpus`): MTSamples notes that are *not* in the split.json dev/test sets,
MTS-Dialog training dialogues and section notes, NLI4CT trial reports referenced only by training
statements.  COVID-QA articles and every evaluation text are left out.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import math
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset
from nlprec.clinical_longdoc.encoder import attention_kind
from nlprec.core.hf_training import StepCallback, training_arguments
from transformers import (
    BertForMaskedLM,
    BigBirdForMaskedLM,
    DataCollatorForLanguageModeling,
    LongformerForMaskedLM,
    PreTrainedModel,
    PrinterCallback,
    RobertaForMaskedLM,
    Trainer,
)

logger = logging.getLogger(__name__)

NLI4CT_ZIP = "clinical/nli4ct/Complete_dataset.zip"
MTS_DIALOG_TRAIN = "clinical/mts_dialog/MTS-Dialog-TrainingSet.csv"
MTSAMPLES_DIR = "clinical/mtsamples"


# ------------------------------------------------------------------ corpus


def _mtsamples_unlabelled(root: Path) -> list[str]:
    split = json.loads((root / MTSAMPLES_DIR / "split.json").read_text())
    held_out = {e["id"] for name in ("dev", "test") for e in split[name]}
    texts = []
    with gzip.open(
        root / MTSAMPLES_DIR / "mtsamples_dedup_multilabel.jsonl.gz", "rt", encoding="utf-8"
    ) as lines:
        for line in lines:
            row = json.loads(line)
            if min(row["note_ids"]) not in held_out and row["text"].strip():
                texts.append(row["text"])
    return texts


def _mts_dialog_train(root: Path) -> list[str]:
    with open(root / MTS_DIALOG_TRAIN, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [t for row in rows for t in (row["dialogue"], row["section_text"]) if t and t.strip()]


def _nli4ct_train_trials(root: Path) -> list[str]:
    with zipfile.ZipFile(root / NLI4CT_ZIP) as archive:

        def trial_ids(split_file: str) -> set[str]:
            statements = json.loads(archive.read(f"Complete_dataset/{split_file}"))
            return {
                s[key]
                for s in statements.values()
                for key in ("Primary_id", "Secondary_id")
                if s.get(key)
            }

        evaluation = trial_ids("dev.json") | trial_ids("Gold_test.json")
        train_only = sorted(trial_ids("train.json") - evaluation)
        texts = []
        for trial in train_only:
            report = json.loads(archive.read(f"Complete_dataset/CT json/{trial}.json"))
            sections = [
                " ".join(line.strip() for line in report[k])
                for k in report
                if isinstance(report[k], list)
            ]
            texts.append("\n".join(sections))
    return texts


def build_clinical_corpus(data_root: str | Path) -> dict[str, list[str]]:
    """Pretraining texts by source, with every evaluation text excluded (see module docstring)."""
    root = Path(data_root)
    return {
        "mtsamples": _mtsamples_unlabelled(root),
        "mts_dialog": _mts_dialog_train(root),
        "nli4ct_trials": _nli4ct_train_trials(root),
    }


def pack_blocks(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Concatenate documents ([SEP]-separated) and cut into blocks of [CLS] + (max_length - 2) + [SEP]."""
    body_length = max_length - 2
    stream: list[int] = []
    for ids in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]:
        stream.extend(ids + [tokenizer.sep_token_id])
    blocks = []
    for start in range(0, len(stream) - body_length + 1, body_length):
        blocks.append(
            [tokenizer.cls_token_id, *stream[start : start + body_length], tokenizer.sep_token_id]
        )
    if not blocks and stream:
        blocks.append([tokenizer.cls_token_id, *stream[:body_length], tokenizer.sep_token_id])
    return blocks


# ------------------------------------------------------------------ model


_MLM_CLASSES = {"longformer": LongformerForMaskedLM, "bigbird": BigBirdForMaskedLM}


def masked_lm_for(encoder: PreTrainedModel) -> PreTrainedModel:
    """The stock *ForMaskedLM model around ``encoder``'s weights (decoder tied to word embeddings)."""
    kind = attention_kind(encoder)
    if kind in _MLM_CLASSES:
        mlm_class = _MLM_CLASSES[kind]
    else:
        mlm_class = (
            RobertaForMaskedLM if encoder.config.model_type == "roberta" else BertForMaskedLM
        )
    config = encoder.config.__class__.from_dict(encoder.config.to_dict())
    config.tie_word_embeddings = True
    mlm = mlm_class(config)
    base = mlm.base_model
    missing, unexpected = base.load_state_dict(encoder.state_dict(), strict=False)
    missing = [k for k in missing if not k.startswith("pooler") and not k.endswith("_ids")]
    if missing or [k for k in unexpected if not k.startswith("pooler")]:
        raise RuntimeError(
            f"encoder weights did not fit {mlm_class.__name__}: missing={missing} unexpected={unexpected}"
        )
    mlm.tie_weights()
    return mlm


def continue_mlm(
    encoder: PreTrainedModel,
    tokenizer,
    texts: Sequence[str],
    max_length: int = 4096,
    steps: int = 100,
    batch_size: int = 2,
    lr: float = 3e-5,
    mlm_probability: float = 0.15,
    gradient_checkpointing: bool = True,
    device: str = "cpu",
    seed: int = 0,
    time_budget_s: float | None = None,
    progress: bool = True,
) -> dict:
    """Continue MLM pretraining of ``encoder`` in place for ``steps`` optimiser steps (shuffled
    passes over the packed blocks); returns the losses (all, and the mean of the first and last
    few) and timing. The encoder's weights are updated through the MLM model that shares them.
    """
    blocks = pack_blocks(tokenizer, texts, max_length)
    if not blocks:
        raise ValueError("the MLM corpus is empty after tokenisation")
    mlm = masked_lm_for(encoder)
    started = time.perf_counter()
    callback = StepCallback(time_left=lambda: time_budget_s)
    with tempfile.TemporaryDirectory() as scratch:
        args = training_arguments(
            scratch,
            seed=seed,
            metric="loss",
            epochs=1,
            max_steps=steps,
            eval_strategy="no",
            save_strategy="no",
            load_best_model_at_end=False,
            logging_strategy="steps",
            logging_steps=1,
            learning_rate=lr,
            lr_scheduler_type="constant",
            weight_decay=0.01,
            per_device_train_batch_size=batch_size,
            gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
            disable_tqdm=not progress,
            use_cpu=not device.startswith("cuda"),
        )
        trainer = Trainer(
            model=mlm,
            args=args,
            train_dataset=Dataset.from_dict({"input_ids": blocks}),
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability),
            callbacks=[callback],
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    if callback.stopped_early:
        logger.warning("mlm: time budget of %.0fs reached after %d steps", time_budget_s,
                       trainer.state.global_step)  # fmt: skip
    mlm.eval()
    encoder.load_state_dict(mlm.base_model.state_dict(), strict=False)
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    window = max(1, min(10, len(losses) // 4))
    return {
        "steps": len(losses),
        "n_blocks": len(blocks),
        "first_loss": sum(losses[:window]) / window,
        "last_loss": sum(losses[-window:]) / window,
        "losses": losses,
        "seconds": time.perf_counter() - started,
        "perplexity_last": math.exp(min(sum(losses[-window:]) / window, 50)),
    }

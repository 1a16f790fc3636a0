"""Masked language modelling: corpus chunking, training (with optional replay), evaluation."""

from __future__ import annotations

import random

import torch
from nlprec.core.training import autocast
from pydantic import Field
from transformers import DataCollatorForLanguageModeling, PreTrainedModel

from .training import OptimConfig, apply_update, make_optimizer, progress, shuffled_batches


class MLMConfig(OptimConfig):
    """Continued MLM; `replay_ratio` of each batch comes from general (replay) text when given."""

    steps: int = Field(200, ge=1)
    max_len: int = Field(128, ge=16)
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    replay_ratio: float = Field(0.0, ge=0, lt=1)
    seed: int = 0


def tokenize_chunks(tokenizer, texts: list[str], max_len: int) -> list[list[int]]:
    """Concatenate tokenised texts and cut them into [CLS] ... [SEP] chunks of at most `max_len` ids."""
    body = max_len - 2
    ids: list[int] = []
    for encoded in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        ids.extend(encoded + [tokenizer.sep_token_id])
    chunks = [ids[i : i + body] for i in range(0, len(ids), body)]
    return [
        [tokenizer.cls_token_id, *c, tokenizer.sep_token_id] for c in chunks if len(c) >= body // 4
    ]


def mlm_collator(tokenizer, probability: float) -> DataCollatorForLanguageModeling:
    return DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=probability)


def collate(collator, chunks: list[list[int]]) -> dict[str, torch.Tensor]:
    """Pad and mask: input_ids, attention_mask, labels (-100 where not masked), each (B, L)."""
    return collator([{"input_ids": c} for c in chunks])


def mixed_batches(primary, replay, batch_size: int, replay_ratio: float, rng: random.Random):
    """Batches with round(batch_size * replay_ratio) replay chunks and the rest from `primary`."""
    n_replay = round(batch_size * replay_ratio) if replay else 0
    main = shuffled_batches(primary, batch_size - n_replay, rng)
    extra = shuffled_batches(replay, n_replay, rng) if n_replay else None
    while True:
        yield next(main) + (next(extra) if extra else [])


def train_mlm(
    model: PreTrainedModel,
    tokenizer,
    texts: list[str],
    cfg: MLMConfig,
    device: str = "cpu",
    replay_texts: list[str] | None = None,
    show_progress: bool = True,
    desc: str = "mlm",
) -> list[float]:
    """Continued MLM of `model` in place; returns the loss of every step."""
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    chunks = tokenize_chunks(tokenizer, texts, cfg.max_len)
    replay = tokenize_chunks(tokenizer, replay_texts, cfg.max_len) if replay_texts else []
    collator = mlm_collator(tokenizer, cfg.mlm_probability)
    model.to(device).train()
    optimizer, schedule = make_optimizer(model.parameters(), cfg, cfg.steps)
    batches = mixed_batches(chunks, replay, cfg.batch_size, cfg.replay_ratio, rng)
    losses = []
    for _ in progress(range(cfg.steps), desc=desc, enabled=show_progress):
        batch = {k: v.to(device) for k, v in collate(collator, next(batches)).items()}
        with autocast(device):
            loss = model(**batch).loss
        apply_update(loss, model.parameters(), optimizer, schedule)
        losses.append(float(loss.detach()))
    return losses


@torch.no_grad()
def evaluate_mlm(
    model: PreTrainedModel,
    tokenizer,
    texts: list[str],
    max_len: int = 128,
    device: str = "cpu",
    batch_size: int = 32,
    seed: int = 1234,
) -> dict[str, float]:
    """Masked-token loss and accuracy on `texts`, with a fixed masking (same seed, same masks)."""
    chunks = tokenize_chunks(tokenizer, texts, max_len)
    collator = mlm_collator(tokenizer, 0.15)
    model.to(device).eval()
    total_loss, correct, count = 0.0, 0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(chunks), batch_size):
            batch = {
                k: v.to(device)
                for k, v in collate(collator, chunks[start : start + batch_size]).items()
            }
            with autocast(device):
                logits = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits
            masked = batch["labels"] != -100  # (B, L)
            target = batch["labels"][masked]
            pred = logits[masked].float()
            total_loss += float(torch.nn.functional.cross_entropy(pred, target, reduction="sum"))
            correct += int((pred.argmax(-1) == target).sum())
            count += int(masked.sum())
    if count == 0:
        raise ValueError("evaluation text too short: no masked tokens")
    return {"loss": total_loss / count, "accuracy": correct / count}

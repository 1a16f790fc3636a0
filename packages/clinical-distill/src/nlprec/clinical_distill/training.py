"""The pieces every training loop here shares: optimiser and schedule, mixed precision, batching."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch
from pydantic import BaseModel, Field
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup


class OptimConfig(BaseModel):
    model_config = {"extra": "forbid"}
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    batch_size: int = Field(32, ge=1)


def make_optimizer(params, cfg: OptimConfig, total_steps: int):
    """AdamW with linear warm-up and decay (the BERT recipe)."""
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = int(cfg.warmup_ratio * total_steps)
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, max(total_steps, 1))


MAX_GRAD_NORM = 1.0


def apply_update(loss: torch.Tensor, params, optimizer, schedule) -> None:
    """Backward, clip the gradient norm to MAX_GRAD_NORM, step optimiser and schedule, clear gradients."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)


def progress(iterable, desc: str, total: int | None = None, enabled: bool = True):
    return tqdm(iterable, desc=desc, total=total, disable=not enabled, mininterval=2.0)


def shuffled_batches(items: Sequence, batch_size: int, rng: random.Random) -> Iterator[list]:
    """Endless batches of exactly `batch_size` items (fewer only if there are fewer items in all).

    Each pass reshuffles; the remainder of a pass that cannot fill a batch is dropped.
    """
    if not items:
        raise ValueError("no training examples")
    order = list(range(len(items)))
    size = min(batch_size, len(items))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order) - size + 1, size):
            yield [items[i] for i in order[start : start + size]]


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)

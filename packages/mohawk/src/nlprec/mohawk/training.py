"""One optimisation loop for every stage: AdamW with a warmup-stable-decay schedule (nlprec.core.training)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from nlprec.core.training import Schedule, Trainer
from pydantic import BaseModel, Field


class OptimConfig(BaseModel):
    """AdamW and its warmup-stable-decay (WSD) learning-rate schedule."""

    model_config = {"extra": "forbid"}

    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_fraction: float = Field(0.05, ge=0, le=1)
    decay_fraction: float = Field(0.2, ge=0, le=1)
    batch_size: int = Field(16, ge=1)
    seq_len: int = Field(128, ge=2)
    grad_clip: float = Field(1.0, gt=0)


def optimise(
    params: Iterable[torch.nn.Parameter],
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[torch.Tensor],
    total_steps: int,
    cfg: OptimConfig,
    desc: str,
) -> list[float]:
    """Minimise ``loss_fn(batch)`` over ``batches`` with AdamW and the WSD schedule (warm-up,
    stable, decay over the last ``cfg.decay_fraction``); returns the loss of every step."""
    params = [p for p in params if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = Schedule(cfg.warmup_fraction, cfg.decay_fraction)
    trainer = Trainer(optimizer, total_steps, schedule=schedule, max_grad_norm=cfg.grad_clip, precision="fp32")
    for batch in trainer.iterate(batches, desc, total_steps):
        trainer.step(loss_fn(batch))
    return trainer.losses


def next_token_loss(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting input_ids[:, 1:] from logits[:, :-1]."""
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)).float(), input_ids[:, 1:].reshape(-1)
    )


def soft_cross_entropy(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Knowledge distillation: −Σ softmax(t/T) · log_softmax(s/T), times T², mean over tokens."""
    teacher_probs = F.softmax(teacher_logits.float() / temperature, dim=-1)
    student_logp = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return -(teacher_probs * student_logp).sum(-1).mean() * temperature**2

"""One optimisation loop for every stage: AdamW with a warmup-stable-decay schedule."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from tqdm.auto import tqdm


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


def wsd_multiplier(step: int, total: int, warmup_fraction: float, decay_fraction: float) -> float:
    """Linear warmup to 1, flat, then linear decay to 0 over the last ``decay_fraction``."""
    warmup = max(1, round(total * warmup_fraction))
    decay_start = total - round(total * decay_fraction)
    if step < warmup:
        return (step + 1) / warmup
    if step >= decay_start:
        return max(0.0, (total - step) / max(1, total - decay_start))
    return 1.0


def optimise(
    params: Iterable[torch.nn.Parameter],
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[torch.Tensor],
    total_steps: int,
    cfg: OptimConfig,
    desc: str,
    log_every: int = 0,
    on_log: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Minimise ``loss_fn(batch)`` over ``batches``; returns the loss of every step."""
    params = [p for p in params if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: wsd_multiplier(s, total_steps, cfg.warmup_fraction, cfg.decay_fraction),
    )
    losses = []
    bar = tqdm(batches, total=total_steps, desc=desc, leave=False, mininterval=2.0)
    for step, batch in enumerate(bar):
        loss = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        if on_log is not None and log_every and step % log_every == 0:
            on_log(step, losses[-1])
    return losses


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

"""Held-out perplexity and teacher–student KL over non-overlapping windows."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def perplexity(logits_fn: LogitsFn, windows: torch.Tensor, batch_size: int, device: str) -> float:
    """exp(mean next-token cross-entropy) over windows (n, l); every window starts fresh."""
    total, count = 0.0, 0
    for start in range(0, windows.size(0), batch_size):
        batch = windows[start : start + batch_size].to(device)
        logits = logits_fn(batch)[:, :-1].float()
        total += F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1), reduction="sum"
        ).item()
        count += batch[:, 1:].numel()
    return math.exp(total / count)


@torch.no_grad()
def window_nll(
    logits_fn: LogitsFn, windows: torch.Tensor, batch_size: int, device: str
) -> list[float]:
    """Mean next-token cross-entropy of each window (the per-unit scores of paired tests)."""
    scores: list[float] = []
    for start in range(0, windows.size(0), batch_size):
        batch = windows[start : start + batch_size].to(device)
        logits = logits_fn(batch)[:, :-1].float()
        nll = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")
        scores += nll.mean(-1).tolist()
    return scores


@torch.no_grad()
def mean_kl(
    teacher_fn: LogitsFn, student_fn: LogitsFn, windows: torch.Tensor, batch_size: int, device: str
) -> float:
    """Mean over tokens of KL(teacher ‖ student) in nats."""
    total, count = 0.0, 0
    for start in range(0, windows.size(0), batch_size):
        batch = windows[start : start + batch_size].to(device)
        teacher_logp = F.log_softmax(teacher_fn(batch).float(), -1)
        student_logp = F.log_softmax(student_fn(batch).float(), -1)
        kl = (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)
        total += kl.sum().item()
        count += kl.numel()
    return total / count


def hf_logits(model) -> LogitsFn:
    """Logits function of a Hugging Face causal LM."""
    return lambda ids: model(ids, use_cache=False).logits

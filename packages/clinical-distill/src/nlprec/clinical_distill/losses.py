"""Distillation losses. Each vectorised loss has a loop-based reference (`*_reference`) that tests compare.

Notation: B batch, L sequence length, V vocabulary, H heads, d_s / d_t student / teacher width.
`token_mask` (B, L) is 1 on real tokens, 0 on padding; `masked` (B, L) is 1 on MLM-masked positions.

Each loss also comes as `*_sum`: (sum of the per-item terms, number of items). The mean is sum / count;
data-parallel training divides the sum by the count over every rank instead (distill.py), so that N
processes minimise the loss one process minimises on the same global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-12


Term = tuple[Tensor, Tensor]  # (sum over items, number of items)


def _mean(term: Term) -> Tensor:
    total, count = term
    return total / count.clamp_min(1)


def mlm_loss_sum(student_logits: Tensor, labels: Tensor) -> Term:
    """Cross-entropy summed over masked positions (labels != -100); student_logits (B, L, V), labels (B, L)."""
    masked = labels != -100
    ce = F.cross_entropy(student_logits[masked], labels[masked], reduction="sum")
    return ce, masked.sum()


def soft_target_kl_sum(
    student_logits: Tensor, teacher_logits: Tensor, masked: Tensor, temperature: float
) -> Term:
    """T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) summed over masked positions, and their number."""
    s = student_logits[masked] / temperature  # (N, V)
    t = teacher_logits[masked] / temperature  # (N, V)
    kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="sum")
    return kl * temperature**2, masked.sum()


def soft_target_kl(
    student_logits: Tensor, teacher_logits: Tensor, masked: Tensor, temperature: float
) -> Tensor:
    """T^2 * KL(softmax(z_t / T) || softmax(z_s / T)), averaged over masked positions (Hinton et al.).

    student_logits, teacher_logits: (B, L, V); masked: (B, L) bool. The T^2 factor keeps gradient
    magnitudes comparable across temperatures. No masked position: 0 (still attached to the graph).
    """
    return _mean(soft_target_kl_sum(student_logits, teacher_logits, masked, temperature))


def soft_target_kl_reference(student_logits, teacher_logits, masked, temperature):
    terms = []
    for b, i in masked.nonzero().tolist():
        p_t = torch.softmax(teacher_logits[b, i] / temperature, -1)
        log_p_s = torch.log_softmax(student_logits[b, i] / temperature, -1)
        terms.append((p_t * (torch.log(p_t + EPS) - log_p_s)).sum())
    return torch.stack(terms).mean() * temperature**2


def hidden_state_loss_sum(
    student_hidden: Tensor, teacher_hidden: Tensor, token_mask: Tensor, kind: str
) -> Term:
    """Summed distance on real tokens; items are tokens (cosine) or token elements (mse)."""
    keep = token_mask.bool()
    s, t = student_hidden[keep], teacher_hidden[keep]  # (N, d_t)
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(s, t, dim=-1)).sum(), keep.sum()
    if kind == "mse":
        return F.mse_loss(s, t, reduction="sum"), keep.sum() * s.shape[-1]
    raise ValueError(f"hidden loss kind must be 'cosine' or 'mse', got {kind!r}")


def hidden_state_loss(
    student_hidden: Tensor, teacher_hidden: Tensor, token_mask: Tensor, kind: str
) -> Tensor:
    """Distance between projected student states (B, L, d_t) and teacher states (B, L, d_t) on real tokens.

    kind="cosine": mean of 1 - cos(h_s, h_t); kind="mse": mean squared error per element.
    """
    return _mean(hidden_state_loss_sum(student_hidden, teacher_hidden, token_mask, kind))


def hidden_state_loss_reference(student_hidden, teacher_hidden, token_mask, kind):
    terms = []
    for b, i in token_mask.nonzero().tolist():
        s, t = student_hidden[b, i], teacher_hidden[b, i]
        if kind == "cosine":
            terms.append(1.0 - (s @ t) / (s.norm().clamp_min(1e-8) * t.norm().clamp_min(1e-8)))
        else:
            terms.append(((s - t) ** 2).mean())
    return torch.stack(terms).mean()


def attention_loss(
    student_attn: Tensor, teacher_attn: Tensor, token_mask: Tensor, kind: str
) -> Tensor:
    """Distance between attention probabilities (B, H, L, L) over real query rows and key columns.

    Head counts that differ are compared head-averaged: (B, 1, L, L). kind="mse" averages the squared
    error over valid (query, key) entries; kind="kl" is KL(A_t || A_s) per query row, averaged over rows.
    """
    return _mean(attention_loss_sum(student_attn, teacher_attn, token_mask, kind))


def attention_loss_sum(
    student_attn: Tensor, teacher_attn: Tensor, token_mask: Tensor, kind: str
) -> Term:
    """Summed attention distance; items are valid (query, key) entries (mse) or query rows (kl)."""
    if student_attn.shape[1] != teacher_attn.shape[1]:
        student_attn = student_attn.mean(1, keepdim=True)
        teacher_attn = teacher_attn.mean(1, keepdim=True)
    heads = student_attn.shape[1]
    valid = token_mask.bool()  # (B, L)
    pair = valid[:, None, :, None] & valid[:, None, None, :]  # (B, 1, L, L)
    pair = pair.expand(-1, heads, -1, -1)
    if kind == "mse":
        return ((student_attn - teacher_attn) ** 2)[pair].sum(), pair.sum()
    if kind == "kl":
        row_kl = teacher_attn * (
            torch.log(teacher_attn + EPS) - torch.log(student_attn + EPS)
        )  # (B, H, L, L)
        row_kl = (row_kl * pair).sum(-1)  # (B, H, L)
        rows = valid[:, None, :].expand(-1, heads, -1)  # (B, H, L)
        return row_kl[rows].sum(), rows.sum()
    raise ValueError(f"attention loss kind must be 'mse' or 'kl', got {kind!r}")


def attention_loss_reference(student_attn, teacher_attn, token_mask, kind):
    if student_attn.shape[1] != teacher_attn.shape[1]:
        student_attn = student_attn.mean(1, keepdim=True)
        teacher_attn = teacher_attn.mean(1, keepdim=True)
    terms = []
    for b in range(token_mask.shape[0]):
        idx = token_mask[b].nonzero().flatten()
        for h in range(student_attn.shape[1]):
            s = student_attn[b, h][idx][:, idx]
            t = teacher_attn[b, h][idx][:, idx]
            if kind == "mse":
                terms.append(((s - t) ** 2).flatten())
            else:
                terms.append((t * (torch.log(t + EPS) - torch.log(s + EPS))).sum(-1))
    return torch.cat(terms).mean()

"""Scorers: (breakpoint state, proposition embedding) -> logits over true / false / unknown.

Inputs are L2-normalised vectors: breakpoint states ``b`` [B, T, d] (one per breakpoint) or
[B, T, P, d] (one per (breakpoint, proposition) pair, when a reader conditions the state on the
proposition) and propositions ``p`` [B, P, d]; every scorer returns logits [B, T, P, 3].

- dot:       logit_c = s * <normalise(W_c b), p> + bias_c   (one projection per label, scale s learnt)
- bilinear:  logit_c = b^T W_c p + bias_c
- mlp:       logits  = MLP(sqrt(d) [b; p; b * p])            (concatenation MLP)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

N_LABELS = 3
INITIAL_DOT_SCALE = 10.0


class DotScorer(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.per_label = nn.Linear(dim, N_LABELS * dim)
        self.log_scale = nn.Parameter(torch.tensor(INITIAL_DOT_SCALE).log())
        self.bias = nn.Parameter(torch.zeros(N_LABELS))

    def forward(self, b: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        per_label = rearrange(self.per_label(b), "... (c d) -> ... c d", c=N_LABELS)
        per_label = F.normalize(per_label, dim=-1)
        if b.dim() == 4:  # one state per pair
            cosine = torch.einsum("btpcd,bpd->btpc", per_label, p)
        else:
            cosine = torch.einsum("btcd,bpd->btpc", per_label, p)
        return self.log_scale.exp() * cosine + self.bias


class BilinearScorer(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(N_LABELS, dim, dim) / dim**0.5)
        self.bias = nn.Parameter(torch.zeros(N_LABELS))

    def forward(self, b: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        pattern = "btpd,cde,bpe->btpc" if b.dim() == 4 else "btd,cde,bpe->btpc"
        return torch.einsum(pattern, b, self.weight, p) * b.shape[-1] ** 0.5 + self.bias


class MLPScorer(nn.Module):
    def __init__(self, dim: int, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(3 * dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, N_LABELS)
        )

    def forward(self, b: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        T, P = b.shape[1], p.shape[1]
        b, p = b * b.shape[-1] ** 0.5, p * p.shape[-1] ** 0.5  # unit-scale entries for the MLP
        b_grid = b if b.dim() == 4 else b.unsqueeze(2).expand(-1, -1, P, -1)  # [B, T, P, d]
        p_grid = p.unsqueeze(1).expand(-1, T, -1, -1)  # [B, T, P, d]
        return self.mlp(torch.cat([b_grid, p_grid, b_grid * p_grid], dim=-1))


SCORERS = {"dot": DotScorer, "bilinear": BilinearScorer, "mlp": MLPScorer}

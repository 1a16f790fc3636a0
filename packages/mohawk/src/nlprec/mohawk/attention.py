"""Causal self-attention for the hybrid student's attention layers (weights copied from the teacher).

Biases on q, k, v and the output projection where the teacher has them, rotary embedding on the
first ``rotary_dim`` channels of each head (the "rotate half" convention of Hugging Face
Phi/Llama; 0 for GPT-2, whose positions are in the embedding), grouped-query attention with
``num_kv_heads`` key/value heads (Llama). Runs through ``scaled_dot_product_attention`` with a
key/value cache for generation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass
class KVCache:
    """Keys and values seen so far: (b, h, t, head_dim) each; grows by one column per token."""

    keys: torch.Tensor
    values: torch.Tensor

    @property
    def length(self) -> int:
        return self.keys.size(2)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for positions; frequencies θ^(-2i/rotary_dim)."""

    def __init__(self, rotary_dim: int, theta: float) -> None:
        super().__init__()
        exponents = torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim
        self.register_buffer("inv_freq", 1.0 / theta**exponents, persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions[:, None].float() * self.inv_freq[None]  # (t, rotary_dim / 2)
        angles = torch.cat([freqs, freqs], dim=-1)  # (t, rotary_dim)
        return angles.cos(), angles.sin()

    def apply(self, x: torch.Tensor, offset: int) -> torch.Tensor:
        """Rotate the leading rotary_dim channels of x: (b, h, t, head_dim)."""
        rotary_dim = 2 * self.inv_freq.numel()
        positions = torch.arange(offset, offset + x.size(2), device=x.device)
        cos, sin = self(positions)
        rotated, passed = x[..., :rotary_dim], x[..., rotary_dim:]
        rotated = rotated * cos.to(x.dtype) + rotate_half(rotated) * sin.to(x.dtype)
        return torch.cat([rotated, passed], dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        head_dim: int,
        rotary_dim: int,
        rope_theta: float,
        num_kv_heads: int | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.num_kv_heads = num_kv_heads or num_heads
        inner, kv_inner = num_heads * head_dim, self.num_kv_heads * head_dim
        self.q_proj = nn.Linear(hidden_size, inner, bias=bias)
        self.k_proj = nn.Linear(hidden_size, kv_inner, bias=bias)
        self.v_proj = nn.Linear(hidden_size, kv_inner, bias=bias)
        self.out_proj = nn.Linear(inner, hidden_size, bias=bias)
        self.rotary = RotaryEmbedding(rotary_dim, rope_theta)

    def _heads(self, proj: nn.Linear, u: torch.Tensor) -> torch.Tensor:
        return rearrange(proj(u), "b t (h d) -> b h t d", d=self.head_dim)

    def forward(
        self, u: torch.Tensor, cache: KVCache | None = None
    ) -> tuple[torch.Tensor, KVCache]:
        """u: (b, t, d). With a cache, t must be 1 (decoding); without, t tokens from position 0."""
        offset = 0 if cache is None else cache.length
        if cache is not None and u.size(1) != 1:
            raise ValueError("attention with a cache decodes one token at a time")
        q = self.rotary.apply(self._heads(self.q_proj, u), offset)
        k = self.rotary.apply(self._heads(self.k_proj, u), offset)
        v = self._heads(self.v_proj, u)
        if cache is not None:
            k = torch.cat([cache.keys, k], dim=2)
            v = torch.cat([cache.values, v], dim=2)
        grouped = self.num_kv_heads != self.num_heads
        out = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None, enable_gqa=grouped)
        return self.out_proj(rearrange(out, "b h t d -> b t (h d)")), KVCache(k, v)

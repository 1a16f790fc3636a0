"""The discrete Mamba-2 (SSD) mixer of Phi-Mamba.

    in_proj(u) -> [x | B | C] (through a depthwise causal conv), z (gate), A_log (per head)
    ℓ_t   = -softplus(A_log_t)                      (per head, per token; exp(ℓ) ∈ (0, 1))
    y     = SSD(x, ℓ, B, C) + D ∘ x                 (see ssd.py)
    out   = out_proj(y · silu(z + z_bias))

Heads line up with the teacher's attention heads: C plays Q, B plays K, x plays V and out_proj
plays the output projection (see transfer.py). No activation follows the convolution, as in
Phi-Mamba, so a mixer initialised from attention starts as linear attention with a decay.

``normalized=True`` makes the mixing matrix able to take the shape of a softmax attention
matrix (rows non-negative, summing to one), which the plain map cannot: there C·B is any real
number, so a matrix initialised from Q·K has entries of tens against attention's [0, 1] and
Stage 1 spends its whole budget shrinking the scale. The normalised map uses positive features
φ(u) = elu(u) + 1 of B and C and divides each row by its sum, as normalised linear attention does:

    y_i = Σ_j M_ij x_j / Σ_j M_ij,     M = exp(segsum(ℓ)) ∘ (φ(C) φ(B)ᵀ)

The row sums are the same scan run on a channel of ones (appended to x), so the chunked scan,
the recurrence and the constant-size state all stay; the state carries p + 1 channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from nlprec.mohawk import kernels
from nlprec.mohawk.ssd import ssd_mixing_matrix, ssd_recurrent_step
from torch import nn

# silu(OPEN_GATE_BIAS) = 1, so a zero z-projection plus this bias leaves the output ungated.
OPEN_GATE_BIAS = 1.2784645427610738
# Row sums of a normalised mixer are at least φ(C_i)·φ(B_i) > 0; the floor only guards rounding.
ROW_SUM_FLOOR = 1e-6


@dataclass
class MixerState:
    """What the mixer carries between tokens: constant size, whatever the context length."""

    conv: torch.Tensor  # (b, conv_dim, kernel - 1): the last pre-convolution inputs
    ssm: torch.Tensor  # (b, h, p, n)
    length: int = 0  # tokens seen (the position of the next one, for learned positions)


class SSDMixer(nn.Module):
    """Multi-head discrete Mamba-2 mixer; ``num_heads`` heads of size ``head_dim`` (x) and ``state_size`` (B, C).

    ``num_groups`` < num_heads shares each B head among num_heads / num_groups consecutive heads,
    as grouped-query attention shares each key head: a teacher's K heads map to B groups one to
    one, and the student's mixing matrices keep the teacher's (Q_h, K_group(h)) pairing.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        head_dim: int,
        state_size: int,
        conv_kernel: int = 4,
        chunk_size: int = 64,
        num_groups: int | None = None,
        normalized: bool = False,
    ) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.state_size = num_heads, head_dim, state_size
        self.normalized = normalized
        self.num_groups = num_groups or num_heads
        if num_heads % self.num_groups:
            raise ValueError(f"num_heads {num_heads} not a multiple of num_groups {num_groups}")
        self.inner_size = num_heads * head_dim
        self.qk_size = num_heads * state_size  # C
        self.b_size = self.num_groups * state_size  # B
        self.conv_dim = self.inner_size + self.b_size + self.qk_size  # x, B, C go through the conv
        self.conv_kernel, self.chunk_size = conv_kernel, chunk_size
        self.scan_backend = "auto"  # "reference" forces the plain-PyTorch chunked scan
        self.in_proj = nn.Linear(hidden_size, self.conv_dim + self.inner_size + num_heads)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, conv_kernel, groups=self.conv_dim)
        self.z_bias = nn.Parameter(torch.zeros(self.inner_size))
        self.D = nn.Parameter(torch.ones(num_heads))
        self.out_proj = nn.Linear(self.inner_size, hidden_size)

    # -- pieces shared by the three computations -------------------------------------------
    def _conv(
        self, xbc: torch.Tensor, conv_state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Depthwise causal convolution. xbc: (b, l, conv_dim) -> same shape, and the new conv state."""
        xbc = rearrange(xbc, "b l c -> b c l")
        if conv_state is None:
            conv_state = xbc.new_zeros(xbc.size(0), self.conv_dim, self.conv_kernel - 1)
        padded = torch.cat([conv_state, xbc], dim=-1)  # (b, c, k - 1 + l)
        out = F.conv1d(padded, self.conv1d.weight, self.conv1d.bias, groups=self.conv_dim)
        # clone: a view would keep the whole (c, k - 1 + l) input alive with the state
        new_state = padded[..., padded.size(-1) - (self.conv_kernel - 1) :].clone()
        return rearrange(out, "b c l -> b l c"), new_state

    def _split(self, u: torch.Tensor, conv_state: torch.Tensor | None = None):
        """u: (b, l, d) -> x (b,l,h,p), log_decay (b,l,h), B, C (b,l,h,n), z (b,l,h*p), conv state."""
        xbc, z, a_log = torch.split(
            self.in_proj(u), [self.conv_dim, self.inner_size, self.num_heads], dim=-1
        )
        xbc, conv_state = self._conv(xbc, conv_state)
        x, B, C = torch.split(xbc, [self.inner_size, self.b_size, self.qk_size], dim=-1)
        x = rearrange(x, "b l (h p) -> b l h p", h=self.num_heads)
        B = rearrange(B, "b l (g n) -> b l g n", g=self.num_groups)
        # head h reads group h // (heads per group), as grouped-query attention reads its K
        B = B.repeat_interleave(self.num_heads // self.num_groups, dim=2)
        C = rearrange(C, "b l (h n) -> b l h n", h=self.num_heads)
        if self.normalized:
            B, C = F.elu(B) + 1.0, F.elu(C) + 1.0
        log_decay = -F.softplus(a_log.float())  # (b, l, h), kept in float32
        return x, log_decay, B, C, z, conv_state

    def _output(self, y: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Add the D skip, gate with silu(z + z_bias), project out. y, x: (b, l, h, p)."""
        y = y + self.D[:, None] * x
        y = rearrange(y, "b l h p -> b l (h p)")
        return self.out_proj(y * F.silu(z + self.z_bias))

    def _with_ones(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., p) -> (..., p + 1) with a channel of ones (the row sums) when normalised."""
        if not self.normalized:
            return x
        return torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)

    def _divide(self, y: torch.Tensor) -> torch.Tensor:
        """Undo ``_with_ones``: divide by the row-sum channel (positive: the diagonal term is)."""
        if not self.normalized:
            return y
        return y[..., :-1] / y[..., -1:].clamp_min(ROW_SUM_FLOOR)

    # -- the three computations ----------------------------------------------------------------
    def forward(
        self, u: torch.Tensor, state: MixerState | None = None
    ) -> tuple[torch.Tensor, MixerState]:
        """Chunked scan over a whole sequence (training and prefill). u: (b, l, d)."""
        x, log_decay, B, C, z, conv_state = self._split(u, None if state is None else state.conv)
        y, ssm_state = kernels.chunked_scan(
            self._with_ones(x),
            log_decay.to(x.dtype),
            B,
            C,
            chunk_size=self.chunk_size,
            initial_state=None if state is None else state.ssm,
            backend=self.scan_backend,
        )
        seen = 0 if state is None else state.length
        y = self._divide(y)
        return self._output(y, x, z), MixerState(conv_state, ssm_state, seen + u.size(1))

    def step(self, u: torch.Tensor, state: MixerState | None) -> tuple[torch.Tensor, MixerState]:
        """One token through the recurrence (generation). u: (b, 1, d)."""
        x, log_decay, B, C, z, conv_state = self._split(u, None if state is None else state.conv)
        ssm = state.ssm if state is not None else self.empty_state(u.size(0), u).ssm
        y, ssm = ssd_recurrent_step(
            ssm, self._with_ones(x[:, 0]), log_decay[:, 0].to(x.dtype), B[:, 0], C[:, 0]
        )
        y = self._divide(y)
        seen = 0 if state is None else state.length
        return self._output(y[:, None], x, z), MixerState(conv_state, ssm, seen + 1)

    def mixing_matrix(self, u: torch.Tensor) -> torch.Tensor:
        """The full mixing matrix M = exp(segsum(ℓ)) ∘ (C Bᵀ) + diag(D) that maps x to y
        (rows divided by their sums before D is added, when normalised).

        u: (b, l, d) -> (b, h, l, l). This is what Stage 1 aligns with the attention matrix.
        """
        x, log_decay, B, C, _, _ = self._split(u)
        matrix = ssd_mixing_matrix(log_decay.to(x.dtype), B, C)
        if self.normalized:
            matrix = matrix / matrix.sum(-1, keepdim=True).clamp_min(ROW_SUM_FLOOR)
        eye = torch.eye(u.size(1), device=u.device, dtype=matrix.dtype)
        return matrix + self.D[:, None, None] * eye

    def forward_by_matrix(self, u: torch.Tensor) -> torch.Tensor:
        """The mixer's output computed as out_proj(gate · (M x)) with the materialised M (reference)."""
        x, _, _, _, z, _ = self._split(u)
        y = torch.einsum("bhij,bjhp->bihp", self.mixing_matrix(u), x)
        y = rearrange(y, "b l h p -> b l (h p)")
        return self.out_proj(y * F.silu(z + self.z_bias))

    def empty_state(self, batch: int, like: torch.Tensor) -> MixerState:
        """The zero state of a fresh sequence."""
        conv = like.new_zeros(batch, self.conv_dim, self.conv_kernel - 1)
        channels = self.head_dim + int(self.normalized)
        ssm = like.new_zeros(batch, self.num_heads, channels, self.state_size)
        return MixerState(conv, ssm)

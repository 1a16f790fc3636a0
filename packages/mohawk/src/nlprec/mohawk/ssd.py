"""State-space duality (SSD): three computations of one sequence map.

The discrete Mamba-2 map used by Phi-Mamba is, per head h with scalar log-decay ℓ_t ≤ 0,

    state_t = exp(ℓ_t) · state_{t-1} + x_t B_tᵀ          (state: p × n)
    y_t     = state_t C_t

which unrolls to y = M x with the lower-triangular mixing matrix

    M[i, j] = exp(ℓ_{j+1} + … + ℓ_i) · (C_i · B_j)    for j ≤ i, else 0.

Three ways to compute it, which agree to float32 precision (tests/mohawk/test_ssd.py):

* ``ssd_chunked_scan``   – training: quadratic inside chunks of Q tokens, linear across chunks.
* ``ssd_recurrent_step`` – generation: one token, constant-size state.
* ``ssd_mixing_matrix``  – Stage 1 of MOHAWK: the full (L × L) matrix, compared with attention.

The D skip connection (``+ D x``) is added by the mixer, not here.
Shapes use b batch, l length, h heads, p head dimension of x, n state size (of B and C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat


def segsum(log_decay: torch.Tensor) -> torch.Tensor:
    """Segment sums S[..., i, j] = ℓ_{j+1} + … + ℓ_i for j ≤ i, and -inf above the diagonal.

    Computed by masking then cumulative summation (never as a difference of two cumulative sums),
    so no large numbers cancel and exp(S) is exactly 1 on the diagonal.
    log_decay: (..., T) -> (..., T, T)
    """
    length = log_decay.size(-1)
    ones = torch.ones(length, length, dtype=torch.bool, device=log_decay.device)
    spread = repeat(log_decay, "... i -> ... i j", j=length)  # spread[..., i, j] = ℓ_i
    spread = spread.masked_fill(~torch.tril(ones, diagonal=-1), 0.0)  # keep ℓ_i only for i > j
    sums = torch.cumsum(spread, dim=-2)  # sums[..., i, j] = Σ_{j<k≤i} ℓ_k
    return sums.masked_fill(~torch.tril(ones, diagonal=0), float("-inf"))


def ssd_mixing_matrix(log_decay: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """The materialised mixing matrix M = exp(segsum(ℓ)) ∘ (C Bᵀ), per head.

    log_decay: (b, l, h); B, C: (b, l, h, n) -> M: (b, h, l, l)
    """
    decay = torch.exp(segsum(rearrange(log_decay, "b l h -> b h l")))  # (b, h, l, l)
    scores = torch.einsum("bihn,bjhn->bhij", C, B)  # (b, h, l, l)
    return decay * scores


def ssd_by_matrix(
    x: torch.Tensor, log_decay: torch.Tensor, B: torch.Tensor, C: torch.Tensor
) -> torch.Tensor:
    """y = M x with M from ``ssd_mixing_matrix``. x: (b, l, h, p) -> y: (b, l, h, p)."""
    return torch.einsum("bhij,bjhp->bihp", ssd_mixing_matrix(log_decay, B, C), x)


def ssd_recurrent_step(
    state: torch.Tensor,
    x: torch.Tensor,
    log_decay: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token of the recurrence.

    state: (b, h, p, n); x: (b, h, p); log_decay: (b, h); B, C: (b, h, n)
    returns y: (b, h, p) and the new state (b, h, p, n).
    """
    decay = torch.exp(log_decay)[..., None, None]  # (b, h, 1, 1)
    state = decay * state + torch.einsum("bhp,bhn->bhpn", x, B)
    y = torch.einsum("bhpn,bhn->bhp", state, C)
    return y, state


def ssd_recurrent_scan(
    x: torch.Tensor,
    log_decay: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``ssd_recurrent_step`` over a whole sequence (slow; reference and tests only)."""
    batch, length, heads, head_dim = x.shape
    state = initial_state
    if state is None:
        state = x.new_zeros(batch, heads, head_dim, B.size(-1))
    outputs = []
    for t in range(length):
        y, state = ssd_recurrent_step(state, x[:, t], log_decay[:, t], B[:, t], C[:, t])
        outputs.append(y)
    return torch.stack(outputs, dim=1), state


def ssd_chunked_scan(
    x: torch.Tensor,
    log_decay: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int = 64,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunked SSD algorithm (Dao & Gu 2024, listing 1), in plain PyTorch.

    x: (b, l, h, p); log_decay: (b, l, h); B, C: (b, l, h, n); initial_state: (b, h, p, n)
    returns y: (b, l, h, p) and the final state (b, h, p, n).
    The sequence is zero-padded to a multiple of ``chunk_size``: padded steps have ℓ = 0 and
    B = 0, so they change neither the outputs kept nor the final state.
    """
    length = x.size(1)
    pad = (-length) % chunk_size
    if pad:
        x, B, C = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x, B, C))
        log_decay = F.pad(log_decay, (0, 0, 0, pad))
    x, B, C = (rearrange(t, "b (c q) h d -> b c q h d", q=chunk_size) for t in (x, B, C))
    log_decay = rearrange(log_decay, "b (c q) h -> b h c q", q=chunk_size)  # (b, h, c, q)
    cumulative = torch.cumsum(log_decay, dim=-1)  # (b, h, c, q)

    # 1. Inside each chunk: the quadratic (attention-like) form.
    within = torch.exp(segsum(log_decay))  # (b, h, c, q, q)
    y_within = torch.einsum("bcihn,bcjhn,bhcij,bcjhp->bcihp", C, B, within, x)

    # 2. The state each chunk leaves behind, as if it had started from zero.
    decay_to_end = torch.exp(cumulative[..., -1:] - cumulative)  # (b, h, c, q)
    chunk_states = torch.einsum("bcjhn,bhcj,bcjhp->bchpn", B, decay_to_end, x)

    # 3. Across chunks: carry the states forward (a small recurrence over c chunks).
    if initial_state is None:
        initial_state = chunk_states.new_zeros(chunk_states[:, :1].shape)
    else:
        initial_state = initial_state[:, None]
    chunk_states = torch.cat([initial_state, chunk_states], dim=1)  # (b, c+1, h, p, n)
    chunk_decay = F.pad(cumulative[..., -1], (1, 0))  # (b, h, c+1)
    across = torch.exp(segsum(chunk_decay))  # (b, h, c+1, c+1)
    carried = torch.einsum("bhzc,bchpn->bzhpn", across, chunk_states)
    # clone: a view of ``carried`` would keep every chunk's state alive with the final one
    states_in, final_state = carried[:, :-1], carried[:, -1].clone()

    # 4. Each chunk's incoming state, read out at every position of the chunk.
    decay_from_start = torch.exp(cumulative)  # (b, h, c, q)
    y_carried = torch.einsum("bcihn,bchpn,bhci->bcihp", C, states_in, decay_from_start)

    y = rearrange(y_within + y_carried, "b c q h p -> b (c q) h p")
    return y[:, :length], final_state

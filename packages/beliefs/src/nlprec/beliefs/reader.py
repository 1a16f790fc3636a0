"""Proposition-conditioned reading of the breakpoint states.

Without a reader, the state ``b_t`` of breakpoint t is one vector that must hold every fact true
at t (where each person is, who holds what), and the scorer must decode a (person, location)
binding from it given a proposition embedding that is close to a bag of words. End to end this
did not train in our budget: every model stayed at the accuracy of "false once the person is
mentioned" and QA from beliefs at chance (see benchmarks/RESULTS.md).

The reader lets each proposition look back over the breakpoints read so far. Each breakpoint's
encoder output ``h_i`` (which, under prefix attention, has seen sentences 1..i) is a key and a
value; the proposition is the query; attention for breakpoint t covers breakpoints i <= t only,
with a per-head recency bias (ALiBi-style) so that the latest relevant sentence can win, plus a
learnt "nothing relevant" slot so that a proposition about an unmentioned entity can attend to
nothing:

    e[h, t, p, i]    = <q_h(p), k_h(h_i)> / sqrt(d_h) - slope_h (t - i)      for i <= t
    e[h, t, p, null] = <q_h(p), k_null_h> / sqrt(d_h)
    r[t, p]          = W_o concat_h  sum_i softmax_i(e[h, t, p, .]) v_h(i)
    s[t, p]          = normalise(b_t + r[t, p])           -> scorer(s[t, p], p)

The story is still encoded once; the reader costs O(T * P * T * d) per story, small next to the
encoder. Breakpoint t's beliefs still depend on no text after sentence t under prefix attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

INITIAL_SLOPE_BASE = 2.0  # head k starts with recency slope 2^-(k+1), as in ALiBi


class BreakpointReader(nn.Module):
    def __init__(self, hidden: int, dim: int, heads: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"reader: proj_dim={dim} is not divisible by reader_heads={heads}")
        self.heads = heads
        self.key = nn.Linear(hidden, dim)
        self.value = nn.Linear(hidden, dim)
        self.query = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.null_key = nn.Parameter(torch.zeros(heads, dim // heads))
        self.null_value = nn.Parameter(torch.zeros(heads, dim // heads))
        slopes = INITIAL_SLOPE_BASE ** -torch.arange(1.0, heads + 1.0)
        self.log_slope = nn.Parameter(slopes.log())

    def forward(
        self,
        hidden: torch.Tensor,  # [B, T, H] encoder output at each breakpoint
        breakpoint_mask: torch.Tensor,  # [B, T] bool
        states: torch.Tensor,  # [B, T, d] normalised breakpoint states
        props: torch.Tensor,  # [B, P, d] normalised proposition embeddings
    ) -> torch.Tensor:
        """Proposition-conditioned states [B, T, P, d], L2-normalised."""
        T = hidden.shape[1]
        keys = rearrange(self.key(hidden), "B T (h e) -> B h T e", h=self.heads)
        values = rearrange(self.value(hidden), "B T (h e) -> B h T e", h=self.heads)
        queries = rearrange(self.query(props), "B P (h e) -> B h P e", h=self.heads)
        scale = keys.shape[-1] ** -0.5
        match = torch.einsum("bhpe,bhie->bhpi", queries, keys) * scale  # [B, h, P, Ti]
        null = torch.einsum("bhpe,he->bhp", queries, self.null_key) * scale  # [B, h, P]

        steps = torch.arange(T, device=hidden.device)
        distance = (steps[:, None] - steps[None, :]).to(match.dtype)  # [Tt, Ti]: t - i
        visible = (distance >= 0) & breakpoint_mask[:, None, :]  # [B, Tt, Ti]
        bias = -self.log_slope.exp()[:, None, None] * distance  # [h, Tt, Ti]
        bias = bias.unsqueeze(0).masked_fill(~visible.unsqueeze(1), float("-inf"))  # [B,h,Tt,Ti]

        scores = match.unsqueeze(2) + bias.unsqueeze(3)  # [B, h, Tt, P, Ti]
        null = null[:, :, None, :, None].expand(-1, -1, T, -1, 1)  # [B, h, Tt, P, 1]
        weights = torch.cat([scores, null], dim=-1).softmax(-1)
        read = torch.einsum("bhtpi,bhie->bhtpe", weights[..., :T], values)
        read = read + weights[..., T:] * self.null_value[None, :, None, None, :]
        read = rearrange(read, "B h T P e -> B T P (h e)")
        return F.normalize(states.unsqueeze(2) + self.out(read), dim=-1)


def reference_read(
    reader: BreakpointReader,
    hidden: torch.Tensor,
    breakpoint_mask: torch.Tensor,
    states: torch.Tensor,
    props: torch.Tensor,
) -> torch.Tensor:
    """Slow reference: one (story, breakpoint, proposition) at a time with explicit loops."""
    B, T, _ = hidden.shape
    P, d = props.shape[1], props.shape[2]
    heads, width = reader.heads, d // reader.heads
    out = torch.zeros(B, T, P, d)
    slopes = reader.log_slope.exp()
    for b in range(B):
        keys = reader.key(hidden[b]).view(T, heads, width)
        values = reader.value(hidden[b]).view(T, heads, width)
        for t in range(T):
            seen = [i for i in range(t + 1) if breakpoint_mask[b, i]]
            for p in range(P):
                query = reader.query(props[b, p]).view(heads, width)
                read = []
                for h in range(heads):
                    scores = [
                        float(query[h] @ keys[i, h]) / width**0.5 - float(slopes[h]) * (t - i)
                        for i in seen
                    ] + [float(query[h] @ reader.null_key[h]) / width**0.5]
                    weights = torch.tensor(scores).softmax(0)
                    rows = [values[i, h] for i in seen] + [reader.null_value[h]]
                    read.append(sum(w * v for w, v in zip(weights, rows)))
                combined = states[b, t] + reader.out(torch.cat(read))
                out[b, t, p] = F.normalize(combined, dim=-1)
    return out

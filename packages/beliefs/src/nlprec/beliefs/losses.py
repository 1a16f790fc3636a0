"""Training losses: cross-entropy over real propositions plus a fuzzy logical-constraint loss.

A constraint says: antecedents a_1 (and a_2) true  =>  consequent c has label y. With the product
t-norm, the truth of the antecedent is  A = P(a_1 = true) * P(a_2 = true), and the implication's
truth (Reichenbach) is  I = 1 - A * (1 - P(c = y)).  The loss is  -log I  averaged over every
(breakpoint, constraint) pair; it is zero exactly when the model never believes a violation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from nlprec.beliefs.records import IGNORE, TRUE

MIN_TRUTH = 1e-6


def belief_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits [B, T, P, 3], labels [B, T, P] with IGNORE on padding."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE
    )


def implication_truth(probs: torch.Tensor, constraints: torch.Tensor) -> torch.Tensor:
    """Truth [B, T, C] of every constraint at every breakpoint under the product t-norm.

    probs [B, T, P, 3]; constraints [B, C, 4] = (antecedent 1, antecedent 2 or -1, consequent, label).
    """
    B, T, P, _ = probs.shape
    p_true = probs[..., TRUE]  # [B, T, P]

    def gather(
        values: torch.Tensor, index: torch.Tensor
    ) -> torch.Tensor:  # [B,T,P],[B,C] -> [B,T,C]
        return torch.gather(values, 2, index.clamp_min(0).unsqueeze(1).expand(-1, T, -1))

    first, second, consequent, label = constraints.unbind(-1)  # each [B, C]
    antecedent = gather(p_true, first)
    has_second = (second >= 0).unsqueeze(1)
    antecedent = antecedent * torch.where(
        has_second, gather(p_true, second), torch.ones_like(antecedent)
    )
    C = constraints.shape[1]
    at_consequent = torch.gather(
        probs, 2, consequent.clamp_min(0).view(B, 1, C, 1).expand(-1, T, -1, probs.shape[-1])
    )  # [B, T, C, 3]
    p_consequent = torch.gather(at_consequent, 3, label.view(B, 1, C, 1).expand(-1, T, -1, 1))
    return 1 - antecedent * (1 - p_consequent.squeeze(3))


def constraint_loss(
    logits: torch.Tensor,
    constraints: torch.Tensor,
    constraint_mask: torch.Tensor,
    breakpoint_mask: torch.Tensor,
) -> torch.Tensor:
    """Mean of -log(truth) over real (breakpoint, constraint) pairs; 0 when there are none."""
    truth = implication_truth(logits.softmax(-1), constraints)  # [B, T, C]
    weight = (breakpoint_mask.unsqueeze(2) & constraint_mask.unsqueeze(1)).to(truth.dtype)
    if weight.sum() == 0:
        return truth.new_zeros(())
    return -(truth.clamp_min(MIN_TRUTH).log() * weight).sum() / weight.sum()

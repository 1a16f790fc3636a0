"""Linear probe on frozen features: the head initialisation of LP-FT and the frozen baseline.

LP-FT (Kumar et al., 2022, "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution"): fit the linear head on frozen encoder features first, then fine-tune
everything from there, so the first gradient steps do not push a random head's errors into the
encoder.  The probe is multinomial logistic regression, full batch, L-BFGS, on standardised
features; the standardisation is folded back into the weights so the head reads raw features.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from sklearn.metrics import f1_score

logger = logging.getLogger(__name__)

DEFAULT_L2 = (1e-4, 1e-3, 1e-2)  # penalty on the mean cross-entropy, chosen on dev when given


def _fit_one(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float, iterations: int
) -> torch.nn.Linear:
    """Logistic regression on standardised x (N, H) -> a linear layer (H -> C)."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(x.shape[1], n_classes).to(x.device)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    optimizer = torch.optim.LBFGS(
        layer.parameters(), lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(x), y) + l2 * layer.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return layer


def _macro_f1(layer: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        predicted = layer(x).argmax(-1)
    return float(f1_score(y.cpu(), predicted.cpu(), average="macro", zero_division=0))


def fit_linear_probe(
    features: torch.Tensor,  # (N, H) frozen features of the training documents
    targets: torch.Tensor,  # (N,) class ids
    n_classes: int,
    dev_features: torch.Tensor | None = None,  # (M, H)
    dev_targets: torch.Tensor | None = None,  # (M,)
    l2_grid: Sequence[float] = DEFAULT_L2,
    iterations: int = 200,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Weight (C, H) and bias (C,) for raw features, and what was chosen ({"l2", "dev_macro_f1"}).

    Without dev data the middle of ``l2_grid`` is used.
    """
    if features.ndim != 2 or len(features) != len(targets):
        raise ValueError(
            f"features must be (N, H) with one target each; got {tuple(features.shape)} and {len(targets)} targets"
        )
    x = features.float()
    mean, scale = x.mean(0), x.std(0).clamp(min=1e-6)
    x = (x - mean) / scale
    y = targets.to(x.device)
    has_dev = dev_features is not None and dev_targets is not None and len(dev_targets) > 0
    grid = list(l2_grid) if has_dev else [sorted(l2_grid)[len(l2_grid) // 2]]
    best: tuple[float, float, torch.nn.Linear] | None = None
    for l2 in grid:
        layer = _fit_one(x, y, n_classes, l2, iterations)
        score = (
            _macro_f1(layer, (dev_features.float() - mean) / scale, dev_targets.to(x.device))
            if has_dev
            else float("nan")
        )
        logger.info("linear probe: l2 %g, dev macro-F1 %.4f", l2, score)
        if best is None or score > best[0]:
            best = (score, l2, layer)
    score, l2, layer = best
    with torch.no_grad():
        weight = layer.weight / scale  # (C, H): W (x - m) / s = (W / s) x - (W / s) m
        bias = layer.bias - weight @ mean
    return weight, bias, {"l2": l2, "dev_macro_f1": score}

"""Statistics of a study: spread over seeds, paired tests between systems, multiple-testing correction.

Every package reports seeds and significance through these functions, so a `.ci95` or a `p_vs_`
means the same thing everywhere:

- `seed_statistics`: mean, sample standard deviation (ddof=1), half-width of the 95 % Student-t
  interval of the mean (t_{0.975, n-1} * std / sqrt(n)) and the count.
- `paired_randomization_test`: two-sided test of "no difference" on paired per-unit scores, by
  flipping the sign of each unit's difference (scipy's `permutation_test` with paired samples;
  exact when 2^n is at most the number of resamples).
- `holm`: Holm's step-down adjustment of p-values for the systems compared against one reference.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
_MAX_FLOATS_PER_BATCH = 4_000_000  # resamples x units held at once by the randomization test


def seed_statistics(values: Iterable[float]) -> dict[str, float]:
    """`{"mean", "std", "ci95", "n"}` of one metric over seeds; `std` and `ci95` need two values or more."""
    array = np.asarray(list(values), dtype=float)
    if array.size == 0:
        raise ValueError("seed_statistics needs at least one value")
    result = {"mean": float(array.mean()), "n": int(array.size)}
    if array.size >= 2:
        std = float(array.std(ddof=1))
        t_quantile = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df=array.size - 1))
        result["std"] = std
        result["ci95"] = t_quantile * std / math.sqrt(array.size)
    return result


def metrics_over_seeds(per_seed: Sequence[dict[str, float]]) -> dict[str, float]:
    """Metrics of several seeds -> `<key>` (mean), `<key>.std`, `<key>.ci95`, `<key>.n` for every key."""
    keys = sorted({key for metrics in per_seed for key in metrics})
    summary: dict[str, float] = {}
    for key in keys:
        statistics = seed_statistics(metrics[key] for metrics in per_seed if key in metrics)
        summary[key] = statistics.pop("mean")
        summary.update({f"{key}.{name}": value for name, value in statistics.items()})
    return summary


def paired_randomization_test(
    scores: Sequence[float], reference: Sequence[float], resamples: int = 10_000, seed: int = 0
) -> float:
    """Two-sided p-value of mean(scores - reference) under random sign flips of the paired differences."""
    a = np.asarray(scores, dtype=float)
    b = np.asarray(reference, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired scores must be two equal-length, non-empty vectors (got {a.shape} and {b.shape})")
    if np.allclose(a, b):
        return 1.0

    def mean_difference(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
        return np.mean(x - y, axis=axis)

    result = stats.permutation_test(
        (a, b),
        mean_difference,
        permutation_type="samples",
        vectorized=True,
        n_resamples=resamples,
        alternative="two-sided",
        batch=max(1, _MAX_FLOATS_PER_BATCH // a.size),
        rng=np.random.default_rng(seed),
    )
    return float(min(1.0, result.pvalue))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order: sorted ascending, the i-th (from 0) is multiplied by
    (m - i), then made monotone and capped at 1."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda index: pvalues[index])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(pvalues[index])))
        adjusted[index] = running
    return adjusted

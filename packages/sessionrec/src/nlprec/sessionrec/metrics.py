"""Next-session metrics, repeat- and explore-aware.

For a case with truth set T (the target session's items), history H (items of every earlier
session) and top-k list R:

- Recall@k = |R ∩ T| / |T|;  PHR@k (personal hit ratio) = 1[|R ∩ T| > 0];
- NDCG@k = Σ_{i: R_i ∈ T} 1/log2(i+2) / IDCG, with IDCG over min(k, |T|) items, or over all
  |T| items with ``ideal="all"`` (the Reality-Check definition);
- the ``_rep`` / ``_exp`` variants use T ∩ H / T \\ H as truth and average over the cases
  where that set is non-empty;
- RepR@k = |R ∩ H| / k (repeat share of what is recommended);
- Pop@k = mean over R of train popularity / max train popularity.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from nlprec.sessionrec.split import Case, Split

IDEAL_CHOICES = ("k", "all")


def top_k(scores: np.ndarray, k: int) -> list[np.ndarray]:
    """Indices of the k best finite scores per row, best first, ties to the lower item index.
    [B, n] -> B arrays of <= k. (torch.topk finds each row's k-th value, far faster than a
    partition of a catalogue-wide row; the rows are then cut at that value.)"""
    k = min(k, scores.shape[1])
    scores = np.ascontiguousarray(scores)
    if np.isnan(scores).any():
        raise ValueError("top_k: NaN scores")
    kth = torch.topk(torch.from_numpy(scores), k, dim=1).values.numpy()[:, -1]  # [B]
    out = []
    for row, bound in zip(scores, kth):
        above = np.flatnonzero(row > bound)
        tied = np.flatnonzero(row == bound)[: k - len(above)]
        best = np.concatenate([above, tied])
        best = best[np.argsort(-row[best], kind="stable")]
        out.append(best[np.isfinite(row[best])])
    return out


def dcg(ranked: np.ndarray, truth: set[int]) -> float:
    return sum(1.0 / np.log2(i + 2) for i, item in enumerate(ranked.tolist()) if item in truth)


def ideal_dcg(n_true: int, k: int, ideal: str) -> float:
    n = n_true if ideal == "all" else min(n_true, k)
    return float(np.sum(1.0 / np.log2(np.arange(n) + 2)))


def case_metrics(
    ranked: np.ndarray,
    truth: set[int],
    history: set[int],
    k: int,
    popularity: np.ndarray,
    ideal: str = "k",
) -> dict[str, float]:
    """Every metric of one case (keys without the @k); missing keys = not defined here."""
    if ideal not in IDEAL_CHOICES:
        raise ValueError(f"ideal must be one of {IDEAL_CHOICES}, got {ideal!r}")
    ranked = ranked[:k]
    out: dict[str, float] = {}
    for suffix, target in (("", truth), ("_rep", truth & history), ("_exp", truth - history)):
        if not target:
            continue
        hits = len(set(ranked.tolist()) & target)
        out[f"recall{suffix}"] = hits / len(target)
        out[f"phr{suffix}"] = float(hits > 0)
        out[f"ndcg{suffix}"] = dcg(ranked, target) / ideal_dcg(len(target), k, ideal)
    out["repr"] = sum(item in history for item in ranked.tolist()) / k
    top = popularity.max() if popularity.max() > 0 else 1.0
    out["pop"] = float(popularity[ranked].mean() / top) if len(ranked) else 0.0
    return out


def evaluate(model, split: Split, cases: list[Case], **options) -> dict[str, float]:
    """Mean of every metric over ``cases``; ``model.score(data, cases) -> [B, n_items]``.

    Keys look like ``ndcg@10``, ``recall@10_rep``. Every case is scored (none skipped).
    ``options``: those of :func:`evaluate_units` (k, batch_size, ideal, progress).
    """
    return evaluate_units(model, split, cases, **options)[0]


def unit_name(split: Split, case: Case) -> str:
    """The user's id; with several target sessions per user, ``<user>#<position>``."""
    return f"{split.data.users[case.user].user}#{case.position}"


def evaluate_units(
    model,
    split: Split,
    cases: list[Case],
    k: int = 10,
    batch_size: int = 256,
    ideal: str = "k",
    progress=None,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(:func:`evaluate`'s means, per-case values ``{metric: {unit: value}}``).

    Units are user ids when each user has one case (``<user>#<position>`` otherwise); a
    metric undefined for a case (e.g. ``ndcg@10_exp`` without explore targets) has no entry."""
    if not cases:
        raise ValueError("no cases to evaluate")
    popularity = split.train_popularity()
    per_user = len({c.user for c in cases}) == len(cases)
    units: dict[str, dict[str, float]] = defaultdict(dict)
    batches = range(0, len(cases), batch_size)
    for start in progress(batches, desc="evaluate") if progress else batches:
        chunk = cases[start : start + batch_size]
        ranked = top_k(model.score(split.data, chunk), k)
        for case, items in zip(chunk, ranked):
            user = split.data.users[case.user]
            truth = set(user.sessions[case.position].tolist())
            history = set(np.concatenate(user.sessions[: case.position]).tolist())
            unit = user.user if per_user else unit_name(split, case)
            for name, value in case_metrics(items, truth, history, k, popularity, ideal).items():
                base, _, suffix = name.partition("_")
                units[f"{base}@{k}" + (f"_{suffix}" if suffix else "")][unit] = value
    means = {name: float(np.mean(list(values.values()))) for name, values in units.items()}
    return means, dict(units)

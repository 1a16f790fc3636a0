"""IR evaluation with ir-measures, per-query scores, and paired significance tests.

Every judged query counts: a query with qrels but no retrieved documents scores 0 (pytrec_eval
alone would skip it and inflate the mean). Queries without qrels are left out.
"""

from __future__ import annotations

import ir_measures
import numpy as np
from ir_measures import AP, RR, R, nDCG
from nlprec.ranking.data import Qrels, Run
from scipy import stats

MEASURES = {
    "ndcg@10": nDCG @ 10,
    "mrr@10": RR @ 10,
    "recall@100": R @ 100,
    "recall@1000": R @ 1000,
    "map": AP,
}
MEASURE_NAMES = {str(m): name for name, m in MEASURES.items()}


def per_query_scores(
    qrels: Qrels, run: Run, measures: list[str] | None = None
) -> dict[str, dict[str, float]]:
    """``{metric: {query_id: value}}`` over every judged query (missing from the run = 0)."""
    names = measures or list(MEASURES)
    judged_run = {qid: docs for qid, docs in run.items() if qid in qrels and docs}
    out = {name: dict.fromkeys(qrels, 0.0) for name in names}
    for metric in ir_measures.iter_calc([MEASURES[n] for n in names], qrels, judged_run):
        out[MEASURE_NAMES[str(metric.measure)]][metric.query_id] = float(metric.value)
    return out


def evaluate_run(qrels: Qrels, run: Run, measures: list[str] | None = None) -> dict[str, float]:
    """Mean of each metric over the judged queries, as a fraction in [0, 1]."""
    if not qrels:
        raise ValueError("no judged queries to evaluate")
    return {
        name: float(np.mean(list(v.values())))
        for name, v in per_query_scores(qrels, run, measures).items()
    }


def ndcg10(qrels: Qrels, run: Run) -> float:
    return evaluate_run(qrels, run, ["ndcg@10"])["ndcg@10"]


def paired_randomization_test(
    a: np.ndarray, b: np.ndarray, n_permutations: int = 10_000, seed: int = 0
) -> float:
    """Two-sided p-value of mean(a - b) under random sign flips of the per-query differences."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    observed = abs(diff.mean())
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_permutations, len(diff)))
    permuted = np.abs((signs * diff).mean(axis=1))
    return float((np.sum(permuted >= observed - 1e-12) + 1) / (n_permutations + 1))


def compare_systems(
    per_query: dict[str, dict[str, float]], baseline: str, metric: str = "ndcg@10"
) -> list[dict[str, float | str]]:
    """Each system against ``baseline`` on ``metric``: mean difference, paired t-test and randomisation p."""
    base = per_query[baseline]
    qids = sorted(base)
    rows = []
    for system, scores in per_query.items():
        if system == baseline:
            continue
        a = np.array([scores.get(q, 0.0) for q in qids])
        b = np.array([base[q] for q in qids])
        t_p = float(stats.ttest_rel(a, b).pvalue) if np.any(a != b) else 1.0
        rows.append(
            {
                "system": system,
                "baseline": baseline,
                "metric": metric,
                "delta": float(a.mean() - b.mean()),
                "p_ttest": t_p,
                "p_randomization": paired_randomization_test(a, b),
            }
        )
    return rows


def comparison_figure(results: dict[str, dict[str, float]], metrics: list[str] | None = None):
    """Grouped bar chart: one group per metric, one bar per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = metrics or ["ndcg@10", "mrr@10", "recall@100"]
    systems = list(results)
    width = 0.8 / max(1, len(systems))
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(metrics), 3.5))
    for i, system in enumerate(systems):
        xs = np.arange(len(metrics)) + i * width
        ax.bar(xs, [results[system].get(m, 0.0) for m in metrics], width, label=system)
    ax.set_xticks(np.arange(len(metrics)) + width * (len(systems) - 1) / 2, metrics)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=2)
    ax.set_title("retrieval quality by system")
    fig.tight_layout()
    return fig

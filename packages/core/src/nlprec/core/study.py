"""The comparison step: paired significance of every system against a reference, from per-unit scores.

Upstream steps write per-unit scores with `ctx.log_unit_scores(system, metric, scores)`. This step
(`uses: nlprec.core.study:compare`) runs once across seeds and:

1. reads `unit_scores/<system>.<metric>.json` from every upstream step and seed;
2. averages each unit's score over seeds (the units themselves, e.g. test queries, are the sample);
3. per metric, tests each system against the reference with a paired randomization test on the
   seed-averaged unit scores and Holm-corrects the p-values across the systems compared;
4. logs `<system>.<metric>.delta_vs_<ref>` (mean difference) and `<system>.<metric>.p_vs_<ref>`
   (Holm-adjusted), and writes `comparison.md`, `comparison.json` and `comparison.png`.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Literal

import numpy as np
from nlprec.core.errors import UserError
from nlprec.core.stats import holm, paired_randomization_test, seed_statistics
from nlprec.core.step import UNIT_SCORES_DIR, StepContext, across_seeds
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("nlprec.study")

UnitScores = dict[str, float]


class CompareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reference: str = Field(min_length=1, description="the system every other system is compared with")
    metrics: list[str] | None = Field(None, min_length=1, description="metric names; default: all of the reference's")
    test: Literal["randomization"] = "randomization"
    resamples: int = Field(10_000, ge=100, description="random sign flips per test")
    alpha: float = Field(0.05, gt=0, lt=1, description="level marked as significant in the table and plot")


def read_unit_scores(upstream_dirs: dict[str, dict[int, Path]]) -> dict[tuple[str, str], dict[int, UnitScores]]:
    """(system, metric) -> seed -> unit -> score, from every upstream step's `unit_scores/` folder."""
    found: dict[tuple[str, str], dict[int, UnitScores]] = defaultdict(dict)
    owner: dict[tuple[str, str], str] = {}
    for step, by_seed in sorted(upstream_dirs.items()):
        for seed, folder in sorted(by_seed.items()):
            for path in sorted((Path(folder) / UNIT_SCORES_DIR).glob("*.json")):
                record = json.loads(path.read_text())
                pair = (record["system"], record["metric"])
                if owner.setdefault(pair, step) != step:
                    raise UserError(f"steps {owner[pair]!r} and {step!r} both log unit scores for {pair[0]}.{pair[1]}")
                found[pair][seed] = {unit: float(score) for unit, score in record["scores"].items()}
    return dict(found)


def average_over_seeds(system: str, metric: str, by_seed: dict[int, UnitScores]) -> UnitScores:
    """Each unit's mean over seeds; every seed must have scored the same units."""
    seeds = sorted(by_seed)
    units = set(by_seed[seeds[0]])
    for seed in seeds[1:]:
        if set(by_seed[seed]) != units:
            raise UserError(
                f"{system}.{metric}: seed {seed} scored {len(by_seed[seed])} units, seed {seeds[0]} {len(units)}; "
                "the units must be the same for every seed"
            )
    return {unit: float(np.mean([by_seed[seed][unit] for seed in seeds])) for unit in sorted(units)}


def compare_systems(
    scores: dict[tuple[str, str], dict[int, UnitScores]],
    reference: str,
    metrics: list[str] | None,
    resamples: int,
    seed: int,
) -> list[dict]:
    """One row per (metric, system): mean, unit-level 95 % interval, delta and Holm p vs the reference."""
    available = sorted({metric for system, metric in scores if system == reference})
    wanted = metrics if metrics is not None else available
    if not wanted:
        systems = sorted({system for system, _ in scores}) or ["none"]
        raise UserError(f"no unit scores for the reference {reference!r} (systems with scores: {', '.join(systems)})")
    rows = []
    for metric in wanted:
        if (reference, metric) not in scores:
            raise UserError(f"no unit scores for the reference {reference}.{metric} (it has: {', '.join(available) or 'none'})")
        ref = average_over_seeds(reference, metric, scores[(reference, metric)])
        ref_vector = np.array(list(ref.values()))
        group = [_row(reference, metric, ref, scores[(reference, metric)], None, None)]
        others = sorted(system for system, m in scores if m == metric and system != reference)
        raw_p = []
        for system in others:
            units = average_over_seeds(system, metric, scores[(system, metric)])
            if set(units) != set(ref):
                missing = len(set(ref) ^ set(units))
                raise UserError(f"{system}.{metric} and {reference}.{metric} differ in {missing} units; a paired test needs the same units")
            vector = np.array([units[unit] for unit in ref])
            raw_p.append(paired_randomization_test(vector, ref_vector, resamples=resamples, seed=seed))
            group.append(_row(system, metric, units, scores[(system, metric)], float(vector.mean() - ref_vector.mean()), None))
        for row, p in zip(group[1:], holm(raw_p), strict=True):
            row["p"] = p
        for row, p in zip(group[1:], raw_p, strict=True):
            row["p_unadjusted"] = p
        rows.extend(group)
    return rows


def _row(system: str, metric: str, units: UnitScores, by_seed: dict[int, UnitScores], delta, p) -> dict:
    spread = seed_statistics(units.values())
    return {
        "system": system,
        "metric": metric,
        "units": len(units),
        "seeds": len(by_seed),
        "mean": spread["mean"],
        "ci95": spread.get("ci95", 0.0),
        "delta": delta,
        "p": p,
    }


def markdown_table(rows: list[dict], reference: str, alpha: float) -> str:
    lines = [
        f"Paired randomization test against `{reference}` (per-unit scores averaged over seeds; p Holm-adjusted "
        f"across systems per metric; * p < {alpha:g}).",
        "",
        "| metric | system | units | seeds | mean ± 95 % CI (units) | Δ vs reference | p |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        is_reference = row["system"] == reference
        system = f"**{row['system']}** (reference)" if is_reference else row["system"]
        delta = "" if row["delta"] is None else f"{row['delta']:+.4f}"
        p = "" if row["p"] is None else f"{row['p']:.4f}{' *' if row['p'] < alpha else ''}"
        lines.append(
            f"| {row['metric']} | {system} | {row['units']} | {row['seeds']} | {row['mean']:.4f} ± {row['ci95']:.4f} "
            f"| {delta} | {p} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], reference: str, alpha: float, path: Path) -> Path | None:
    """Each metric's systems as points with their unit-level 95 % interval; the reference marked."""
    try:
        import matplotlib
    except ImportError:  # a bare compute node: the table and JSON carry the numbers
        log.warning("matplotlib is not installed: no comparison plot")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(row["metric"] for row in rows))
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 0.6 * max(3, len(rows)) + 1), squeeze=False)
    for axis, metric in zip(axes[0], metrics, strict=True):
        group = [row for row in rows if row["metric"] == metric]
        positions = np.arange(len(group))
        colours = ["tab:gray" if row["system"] == reference else "tab:blue" for row in group]
        axis.errorbar([r["mean"] for r in group], positions, xerr=[r["ci95"] for r in group], fmt="none", ecolor=colours)
        axis.scatter([r["mean"] for r in group], positions, c=colours, zorder=3)
        labels = []
        for row in group:
            if row["system"] == reference:
                labels.append(f"{row['system']} (ref)")
            else:
                labels.append(f"{row['system']}  p={row['p']:.3g}{' *' if row['p'] < alpha else ''}")
        axis.set_yticks(positions, labels)
        axis.invert_yaxis()
        axis.set_xlabel(f"{metric} (mean over units, 95 % CI)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


@across_seeds
def compare(ctx: StepContext, cfg: CompareConfig) -> dict:
    """Compare every upstream system with `cfg.reference` on per-unit scores (see the module docstring)."""
    scores = read_unit_scores(ctx.upstream_dirs)
    rows = compare_systems(scores, cfg.reference, cfg.metrics, cfg.resamples, ctx.seed)
    reference = cfg.reference
    for row in rows:
        if row["system"] != reference:
            prefix = f"{row['system']}.{row['metric']}"
            ctx.log_metrics({f"{prefix}.delta_vs_{reference}": row["delta"], f"{prefix}.p_vs_{reference}": row["p"]})
    outputs = {"table": ctx.output_dir / "comparison.md", "json": ctx.output_dir / "comparison.json"}
    outputs["table"].write_text(markdown_table(rows, reference, cfg.alpha))
    outputs["json"].write_text(json.dumps({"reference": reference, "test": cfg.test, "resamples": cfg.resamples,
                                           "alpha": cfg.alpha, "rows": rows}, indent=2))
    figure = plot(rows, reference, cfg.alpha, ctx.output_dir / "comparison.png")
    if figure is not None:
        outputs["plot"] = figure
    for path in outputs.values():
        ctx.log_artifact(path, "comparison")
    return {name: str(path) for name, path in outputs.items()}

"""The results table (teacher / students / mlm_only / random_init) and the checks against the targets.

Targets (issue 9): a student with <= 1/3 of the teacher's parameters keeps >= 95% of the teacher's
NER F1 and >= 90% of its classification scores at >= 2.5x its CPU throughput; distillation beats
MLM-only training at equal size and steps.
"""

from __future__ import annotations

import math

Scores = dict[str, dict[str, tuple[float, float, int]]]  # model -> metric -> (mean, std, n)
TASK_METRICS = ["ner_f1", "section_acc", "section_macro_f1", "nli_acc"]
CLASSIFICATION = ["section_acc", "section_macro_f1", "nli_acc"]
MAX_PARAM_RATIO = 1 / 3
MIN_NER_RATIO = 0.95
MIN_CLASSIFICATION_RATIO = 0.90
MIN_SPEEDUP = 2.5
BASELINES = ("teacher", "mlm_only", "random_init")


def summary_metrics(scores: Scores, speed: dict[str, dict]) -> dict[str, float]:
    """Flat `<model>.<metric>` means (and `_std`), plus params, disk_mb, cpu_ms, cpu_seq_per_s."""
    metrics = {}
    for model, values in scores.items():
        for metric, (mean, std, _) in values.items():
            metrics[f"{model}.{metric}"] = mean
            metrics[f"{model}.{metric}_std"] = std
    for model, figures in speed.items():
        metrics.update({f"{model}.{k}": float(v) for k, v in figures.items()})
    return metrics


def _cell(values: dict, metric: str, seeds: int) -> str:
    """mean ± std, with the seed count when fewer seeds finished than the metric's full count."""
    if metric not in values:
        return "–"
    mean, std, n = values[metric]
    return f"{mean:.3f} ± {std:.3f}" + (f" ({n} seeds)" if n < seeds else "")


def full_seed_counts(scores: Scores) -> dict[str, int]:
    """Per metric, the most seeds any model finished: the run's count for that task (NER may have more)."""
    return {
        metric: max(
            (values[metric][2] for values in scores.values() if metric in values), default=0
        )
        for metric in TASK_METRICS
    }


def _seeds_text(full: dict[str, int]) -> str:
    counts = sorted(set(full.values()))
    if len(counts) == 1:
        return f"{counts[0]} fine-tuning seeds"
    return "fine-tuning seeds (" + ", ".join(f"{metric}: {n}" for metric, n in full.items()) + ")"


def _ratio(value: float, suffix: str = "") -> str:
    return "–" if math.isnan(value) else f"{value:.2f}{suffix}"


def results_table(
    scores: Scores, speed: dict[str, dict], teacher: str = "teacher", mlm_only: str = "mlm_only"
) -> str:
    """Markdown: one row per model, then the target checks for every student."""
    full = full_seed_counts(scores)
    header = ["model", "params (M)", "disk MB", "CPU ms (b=1)", "seq/s (b=32)", *TASK_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, values in scores.items():
        fig = speed.get(model, {})
        size = (
            [
                f"{fig['params'] / 1e6:.2f}",
                f"{fig['disk_mb']:.1f}",
                f"{fig['cpu_ms']:.1f}",
                f"{fig['cpu_seq_per_s']:.1f}",
            ]
            if fig
            else ["–"] * 4
        )
        lines.append(
            "| "
            + " | ".join([model, *size, *(_cell(values, m, full[m]) for m in TASK_METRICS)])
            + " |"
        )
    lines.append(
        f"\nMean ± standard deviation over {_seeds_text(full)}; CPU figures: 2 threads, 128 tokens."
    )
    lines += target_checks(scores, speed, teacher, mlm_only)
    lines += baseline_differences(scores, speed, mlm_only)
    return "\n".join(lines) + "\n"


def _mean(scores: Scores, model: str, metric: str) -> float:
    """The seed mean, NaN where no run of that task finished (a budget cut)."""
    return scores[model][metric][0] if metric in scores[model] else float("nan")


def _is_baseline(model: str, mlm_only: str) -> bool:
    return model in BASELINES or model.startswith(mlm_only)


def _same_size_mlm_baseline(
    model: str, scores: Scores, speed: dict[str, dict], mlm_only: str
) -> str | None:
    """The MLM-only model (`mlm_only` or `mlm_only_<suffix>`) with exactly this student's parameter count."""
    params = speed.get(model, {}).get("params")
    for name in scores:
        if (
            name.startswith(mlm_only)
            and params is not None
            and speed.get(name, {}).get("params") == params
        ):
            return name
    return None


def target_checks(scores: Scores, speed: dict[str, dict], teacher: str, mlm_only: str) -> list[str]:
    if teacher not in scores:
        return []
    lines = [
        "",
        "| student | params / teacher | NER F1 / teacher | min classification / teacher | "
        "throughput / teacher | size+accuracy+speed target | beats mlm_only |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in scores:
        if _is_baseline(model, mlm_only):
            continue
        ner = _mean(scores, model, "ner_f1") / max(_mean(scores, teacher, "ner_f1"), 1e-9)
        ratios = [
            _mean(scores, model, m) / max(_mean(scores, teacher, m), 1e-9) for m in CLASSIFICATION
        ]
        cls = float("nan") if any(math.isnan(r) for r in ratios) else min(ratios)
        params = speedup = float("nan")
        if model in speed and teacher in speed:
            params = speed[model]["params"] / speed[teacher]["params"]
            speedup = speed[model]["cpu_seq_per_s"] / speed[teacher]["cpu_seq_per_s"]
        met = (
            params <= MAX_PARAM_RATIO
            and ner >= MIN_NER_RATIO
            and cls >= MIN_CLASSIFICATION_RATIO
            and speedup >= MIN_SPEEDUP
        )
        beats = "–"
        baseline = _same_size_mlm_baseline(model, scores, speed, mlm_only)
        if baseline is not None:
            pairs = [(_mean(scores, model, m), _mean(scores, baseline, m)) for m in TASK_METRICS]
            measured = [(a, b) for a, b in pairs if not (math.isnan(a) or math.isnan(b))]
            wins = sum(a > b for a, b in measured)
            beats = f"{wins}/{len(measured)} metrics ({baseline})"
        accurate = ner >= MIN_NER_RATIO and cls >= MIN_CLASSIFICATION_RATIO
        verdict = (
            "unmeasured (no CPU figures)"
            if accurate and math.isnan(speedup)
            else ("met" if met else "missed")
        )
        if math.isnan(ner) or math.isnan(cls):
            verdict = "not measured (task scores missing)"
        lines.append(
            f"| {model} | {_ratio(params)} | {_ratio(ner)} | {_ratio(cls)} | {_ratio(speedup, 'x')} | {verdict} | {beats} |"
        )
    return lines


def difference(a: tuple[float, float, int], b: tuple[float, float, int]) -> tuple[float, float]:
    """Difference of two seed means and its standard error sqrt(s_a^2/n_a + s_b^2/n_b) (NaN below 2 seeds)."""
    (mean_a, std_a, n_a), (mean_b, std_b, n_b) = a, b
    if min(n_a, n_b) < 2:
        return mean_a - mean_b, float("nan")
    return mean_a - mean_b, math.sqrt(std_a**2 / n_a + std_b**2 / n_b)


def _reading(diff: float, se: float) -> str:
    if math.isnan(se):
        return "too few seeds"
    if abs(diff) <= 2 * se:
        return "within 2 SE"
    return "student better (> 2 SE)" if diff > 0 else "MLM-only better (> 2 SE)"


def baseline_differences(scores: Scores, speed: dict[str, dict], mlm_only: str) -> list[str]:
    """Each student against its same-size MLM-only model: difference of means, its standard error, reading.

    A win count alone treats a 0.001 lead like a 0.05 one; with 3-5 seeds and seed standard deviations
    of 0.01-0.05, only differences beyond about two standard errors say which training is better.
    """
    lines = []
    for model in scores:
        baseline = (
            None
            if _is_baseline(model, mlm_only)
            else _same_size_mlm_baseline(model, scores, speed, mlm_only)
        )
        if baseline is None:
            continue
        if not lines:
            lines = [
                "",
                "| student - MLM-only | metric | difference | standard error | reading |",
                "|---|---|---|---|---|",
            ]
        for metric in TASK_METRICS:
            if metric in scores[model] and metric in scores[baseline]:
                diff, se = difference(scores[model][metric], scores[baseline][metric])
                se_text = "–" if math.isnan(se) else f"{se:.3f}"
                lines.append(
                    f"| {model} - {baseline} | {metric} | {diff:+.3f} | {se_text} | {_reading(diff, se)} |"
                )
    return lines

"""Evaluation harness: fine-tune every encoder on every task over several seeds, and tabulate.

Tasks: NCBI-disease NER (word-level strict entity F1), MTS-Dialog section header (accuracy,
macro-F1), NLI4CT entailment (accuracy), or the user's own NER / text-label data. Every model gets
the same settings per task; each fine-tuning run keeps the epoch with the best dev score
(NER F1, section macro-F1, NLI accuracy) and only then is scored on test.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Literal

from nlprec.core.stats import seed_statistics
from pydantic import BaseModel, Field

from .finetune import (
    FinetuneConfig,
    load_for_task,
    predict_text_labels,
    predict_word_tags,
    train_classifier,
)
from .metrics import classification_scores, entity_f1, sentence_entity_f1
from .models import load_tokenizer
from .training import progress, set_seed

TaskName = Literal["ner", "section", "nli"]


class TaskSettings(BaseModel):
    model_config = {"extra": "forbid"}
    epochs: int = Field(3, ge=1)
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(32, ge=1)
    max_len: int = Field(128, ge=8)
    max_train: int | None = Field(None, ge=1)  # cap on training examples (tiny CI / demo runs)
    max_test: int | None = Field(None, ge=1)


DEFAULT_SETTINGS: dict[str, TaskSettings] = {
    "ner": TaskSettings(epochs=3, max_len=128),
    "section": TaskSettings(epochs=6, max_len=256),
    "nli": TaskSettings(epochs=4, max_len=256),
}
TASK_KIND = {"ner": "token", "section": "sequence", "nli": "sequence"}


def task_labels(task: str, train: list[dict]) -> list[str]:
    if TASK_KIND[task] == "token":
        return sorted({tag for example in train for tag in example["tags"]})
    return sorted({example["label"] for example in train})


def evaluate_on_task(
    model_path: str,
    task: str,
    data: dict[str, list[dict]],
    settings: TaskSettings,
    seed: int,
    device: str = "cpu",
    save_dir: str | None = None,
    split: Literal["dev", "test"] = "test",
    work_dir: str | None = None,
    log_metrics: Callable[..., None] | None = None,
) -> dict:
    """Fine-tune the encoder at `model_path` on data["train"] (`finetune.train_classifier`, its
    checkpoints in a temporary folder under `work_dir`), keep the epoch with the best dev score,
    and score data[split] with that model only; keys `ner_f1`, `section_acc`, ..., `best_epoch`,
    the best epoch's dev score (`dev_metric(task)`), and `units` (per-example scores, keyed by
    position in the split, for paired tests).
    `log_metrics(metrics, step=...)` receives the training curves."""
    if not data.get("dev"):
        raise ValueError(
            f"task {task!r} has no dev split: selection needs one (see load_eval_tasks)"
        )
    tokenizer = load_tokenizer(model_path)
    train = data["train"][: settings.max_train]
    dev, scored = data["dev"][: settings.max_test], data[split][: settings.max_test]
    labels = task_labels(task, train)
    kind = TASK_KIND[task]
    cfg = FinetuneConfig(
        kind=kind,
        epochs=settings.epochs,
        lr=settings.lr,
        batch_size=settings.batch_size,
        max_len=settings.max_len,
    )
    set_seed(seed)  # the fresh head's initialisation
    model = load_for_task(model_path, kind, labels)
    with tempfile.TemporaryDirectory(dir=work_dir) as checkpoints:
        history = train_classifier(
            model, tokenizer, train, dev, cfg, seed, checkpoints, SELECT_ON[task], log_metrics
        )
    if save_dir:
        model.save_pretrained(save_dir)
        tokenizer.save_pretrained(save_dir)
    scores, units = task_scores(task, model, tokenizer, scored, settings.max_len, device)
    dev = {dev_metric(task): max(history["dev"])} if history["dev"] else {}
    return {**scores, **dev, "best_epoch": history["best_epoch"], "units": units}


SELECT_ON = {"ner": "f1", "section": "macro_f1", "nli": "acc"}  # keys of finetune.dev_metrics


def dev_metric(task: str) -> str:
    """The row key of the best epoch's dev score (`ner_dev_f1`, ...): what registered models are
    promoted on (never a test score)."""
    return f"{task}_dev_{SELECT_ON[task]}"


def task_scores(task: str, model, tokenizer, examples: list[dict], max_len: int, device: str):
    """({metric: value}, {metric: {example position: score}}) of a fine-tuned model on examples."""
    if TASK_KIND[task] == "token":
        predicted = predict_word_tags(model, tokenizer, examples, max_len, device)
        gold = [e["tags"] for e in examples]
        per_sentence = {
            str(i): sentence_entity_f1(g, p) for i, (g, p) in enumerate(zip(gold, predicted))
        }
        return {"ner_f1": entity_f1(gold, predicted)}, {"ner_sentence_f1": per_sentence}
    predicted = predict_text_labels(model, tokenizer, examples, max_len, device)
    gold = [e["label"] for e in examples]
    scores = classification_scores(gold, predicted)
    correct = {str(i): float(g == p) for i, (g, p) in enumerate(zip(gold, predicted))}
    return {f"{task}_{name}": value for name, value in scores.items()}, {f"{task}_acc": correct}


def _run_job(job: dict) -> dict:
    scores = evaluate_on_task(
        job["path"],
        job["task"],
        job["data"],
        TaskSettings(**job["settings"]),
        job["seed"],
        job["device"],
        job.get("save_dir"),
        job.get("split", "test"),
        job.get("work_dir"),
        job.get("log_metrics"),
    )
    return {"model": job["model"], "task": job["task"], "seed": job["seed"], **scores}


def run_harness(
    models: dict[str, str],
    tasks: dict[str, dict[str, list[dict]]],
    seeds: list[int],
    device: str = "cpu",
    settings: dict[str, TaskSettings] | None = None,
    workers: int = 1,
    save_root: str | None = None,
    on_result=None,
    task_seeds: dict[str, list[int]] | None = None,
    split: Literal["dev", "test"] = "test",
    work_dir: str | None = None,
    log_metrics: Callable[..., None] | None = None,
) -> list[dict]:
    """Every (model, task, seed) fine-tuning run; rows of {"model", "task", "seed", <metric>: value}.

    `workers` > 1 runs jobs in separate processes (useful on a GPU, where one small model leaves the
    card mostly idle). With `save_root`, the first seed's fine-tuned model of each (model, task) is
    saved under save_root/<model>-<task> for batch inference. `on_result(row)` is called as rows
    finish. `task_seeds` gives some tasks their own seeds (e.g. more for NER, whose differences
    between models are small); the others use `seeds`. Every run keeps its best epoch on the dev
    split and scores `split` ("dev" in a search trial). Checkpoints go under `work_dir`;
    `log_metrics` (in-process runs only) receives each run's curves under `<model>.<task>.`.
    """
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    unknown = set(task_seeds or {}) - set(tasks)
    if unknown:
        raise ValueError(f"task_seeds: unknown tasks {sorted(unknown)} (tasks: {sorted(tasks)})")
    seeds_of = {task: (task_seeds or {}).get(task, seeds) for task in tasks}
    if not all(seeds_of.values()):
        raise ValueError(f"every task needs at least one seed, got {seeds_of}")
    jobs = [
        {
            "model": name,
            "path": path,
            "task": task,
            "data": tasks[task],
            "seed": seed,
            "device": device,
            "settings": settings[task].model_dump(),
            "split": split,
            "work_dir": work_dir,
            "save_dir": f"{save_root}/{name}-{task}"
            if save_root and seed == seeds_of[task][0]
            else None,
        }
        for name, path in models.items()
        for task in tasks
        for seed in seeds_of[task]
    ]
    rows = []
    if workers <= 1:
        for job in progress(jobs, desc="evaluate"):
            rows.append(_run_job({**job, "log_metrics": _prefixed(log_metrics, job)}))
            if on_result:
                on_result(rows[-1])
        return rows
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        for row in progress(pool.map(_run_job, jobs), desc="evaluate", total=len(jobs)):
            rows.append(row)
            if on_result:
                on_result(row)
    return rows


def _prefixed(log_metrics: Callable[..., None] | None, job: dict) -> Callable[..., None] | None:
    if log_metrics is None:
        return None
    prefix = f"{job['model']}.{job['task']}.seed{job['seed']}."

    def log(metrics: dict, step: int | None = None) -> None:
        log_metrics({prefix + key: value for key, value in metrics.items()}, step=step)

    return log


def unit_scores(rows: list[dict]) -> dict[tuple[str, str], dict[str, float]]:
    """{(model, metric): {example: score averaged over fine-tuning seeds}}; pops `units` from rows."""
    runs: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        for metric, scores in row.pop("units", {}).items():
            runs.setdefault((row["model"], metric), []).append(scores)
    return {
        key: {unit: statistics.fmean(run[unit] for run in seeds) for unit in seeds[0]}
        for key, seeds in runs.items()
    }


def aggregate(rows: list[dict]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """{model: {metric: (mean, std, n_seeds)}} over seeds."""
    values: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key not in ("model", "task", "seed", "seconds", "units"):  # seconds span every task
                values.setdefault(row["model"], {}).setdefault(key, []).append(value)
    stats = {
        m: {k: seed_statistics(v) for k, v in metrics.items()} for m, metrics in values.items()
    }
    return {
        model: {k: (s["mean"], s.get("std", 0.0), s["n"]) for k, s in metrics.items()}
        for model, metrics in stats.items()
    }

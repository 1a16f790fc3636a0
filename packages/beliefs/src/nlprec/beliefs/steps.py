"""Pipeline steps (see pipelines/beliefs-*.yaml). Metrics are logged as ``<model>.<metric>``.

``load`` returns the stories as a typed ``StoriesOutput``; every other step takes it through a
``stories: ${steps.<load step>}`` reference (docs/steps.md). Model steps return their prediction
files (``PredictionsOutput``); ``compare`` reads those of the steps in its ``needs:``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nlprec.beliefs.baselines import (
    FlatPairModel,
    MajorityBaseline,
    predict_flat,
    predict_last_mention,
    train_flat,
)
from nlprec.beliefs.metrics import accuracy_by, evaluate, unit_scores
from nlprec.beliefs.model import BreakpointConfig, BreakpointModel
from nlprec.beliefs.records import Story
from nlprec.beliefs.sources import (
    SourceConfig,
    carve_validation,
    load_sources,
    task_hooks_path,
)
from nlprec.beliefs.tasks import TaskHooks, hooks_for
from nlprec.beliefs.training import TrainConfig, predict_breakpoint, train_breakpoint
from nlprec.core.data import read_jsonl, write_jsonl_atomic
from nlprec.core.distributed import DistributedContext
from nlprec.core.launch import run_distributed
from nlprec.core.step import StepContext, StepOutput, StepSkipped, across_seeds
from nlprec.core.threads import cpu_threads, set_threads
from pydantic import BaseModel, Field


class StoriesOutput(StepOutput):
    """What ``load`` wrote: JSONL files of stories (``Story.to_dict``) and how they were made."""

    train: Path
    validation: Path | None = None  # None without validation_fraction
    test: Path | None = None  # None in search trials
    n_train: int
    n_validation: int
    test_stories: int | None = None
    eval_set: str
    task_hooks: str | None = None  # "module:Class" of the dataset's TaskHooks (tasks.py)


class PredictionsOutput(StepOutput):
    """A model step's per-story probabilities on the eval stories, by model name."""

    predictions: dict[str, Path]
    model_dir: Path | None = None
    efficiency: dict[str, Any] = {}


def _stories(path: str | Path) -> list[Story]:
    return [Story.from_dict(r) for r in read_jsonl(path)]


def _inputs(ctx: StepContext, stories: StoriesOutput) -> tuple[list[Story], list[Story]]:
    """(train, eval) stories written by the ``load`` step, eval being the validation stories in
    search trials (``ctx.split``) and the test stories otherwise; sets the CPU threads (NLPREC_THREADS)."""
    set_threads(cpu_threads())
    if ctx.split == "validation":
        if stories.validation is None:
            raise ValueError("a search needs validation stories: set validation_fraction in load")
        return _stories(stories.train), _stories(stories.validation)
    return _stories(stories.train), _stories(stories.test)


def _hooks(stories: StoriesOutput, **options) -> TaskHooks:
    """The task hooks the load step named (TRIP's tiers, ...); with ``options`` (a learned rule)
    fitted on the train stories."""
    hooks = hooks_for(stories.task_hooks, **options)
    if options:
        hooks.fit(_stories(stories.train))
    return hooks


def _save_predictions(
    path: Path, predictions: list[np.ndarray], indices: list[int] | None = None
) -> str:
    """Probabilities per story, and which eval stories they belong to (all when ``indices`` is None)."""
    arrays = {f"s{i}": p.astype(np.float32) for i, p in enumerate(predictions)}
    arrays["story_index"] = np.asarray(indices if indices is not None else range(len(predictions)))
    np.savez_compressed(path, **arrays)
    return str(path)


def _load_predictions(path: str) -> tuple[list[np.ndarray], list[int]]:
    with np.load(path) as data:
        indices = data["story_index"].tolist()
        return [data[f"s{i}"].astype(np.float32) for i in range(len(indices))], indices


def evenly_spaced(n_items: int, n_wanted: int | None) -> list[int]:
    """``n_wanted`` indices spread over ``range(n_items)`` (all of them when None or too many),
    so that a subset covers every task / length / k of an ordered eval set."""
    if n_wanted is None or n_wanted >= n_items:
        return list(range(n_items))
    return [round(i * n_items / n_wanted) for i in range(n_wanted)]


def _report(
    ctx: StepContext,
    hooks: TaskHooks,
    name: str,
    stories: list[Story],
    predictions: list[np.ndarray],
    units: bool = True,
) -> dict:
    """Log ``<name>.<metric>``; with ``units``, also the per-unit scores of paired tests (per
    story, and the task's own units such as TRIP example pairs)."""
    metrics = evaluate(stories, predictions, hooks)
    ctx.log_metrics({f"{name}.{k}": v for k, v in metrics.items()})
    if units:
        per_unit = unit_scores(stories, predictions) | hooks.unit_scores(stories, predictions)
        for metric, scores in per_unit.items():
            if scores:
                ctx.log_unit_scores(name, metric, scores)
    return metrics


# ---------------------------------------------------------------------------------------- data
@across_seeds
def load(ctx: StepContext, cfg: SourceConfig) -> StoriesOutput:
    """Read (or generate) the stories; write train.jsonl and eval.jsonl."""
    train, evaluation, described = load_sources(cfg)
    train, validation = carve_validation(train, cfg.validation_fraction, cfg.seed)
    out = ctx.output_dir
    write_jsonl_atomic(out / "train.jsonl", (s.to_dict() for s in train))
    write_jsonl_atomic(out / "test.jsonl", (s.to_dict() for s in evaluation))
    if validation:
        write_jsonl_atomic(out / "validation.jsonl", (s.to_dict() for s in validation))
    if cfg.data != "generated":
        ctx.log_input(name=Path(cfg.data).name, source=cfg.data, context="train")
    ctx.log_params(
        {
            "data": cfg.data,
            "eval_set": described,
            "n_train": len(train),
            "n_validation": len(validation),
            "n_eval": len(evaluation),
        }
    )
    return StoriesOutput(
        train=out / "train.jsonl",
        validation=out / "validation.jsonl" if validation else None,
        test=out / "test.jsonl",
        n_train=len(train),
        n_validation=len(validation),
        test_stories=len(evaluation),
        eval_set=described,
        task_hooks=task_hooks_path(cfg),
    )


# ---------------------------------------------------------------------------------------- models
class BreakpointStepConfig(BaseModel):
    model_config = {"extra": "forbid"}
    stories: StoriesOutput = Field(description="${steps.<load step>}")
    name: str = Field("breakpoint", description="metric prefix")
    model: BreakpointConfig = BreakpointConfig()
    train: TrainConfig = TrainConfig()
    eval_batch_size: int = Field(32, ge=1)
    register_as: str | None = None
    nproc_per_node: int = Field(
        1, ge=1, description="> 1: train under torchrun with DDP (gloo on CPU, NCCL on GPUs)"
    )


def _train_with_torchrun(
    ctx: StepContext, cfg: BreakpointStepConfig
) -> tuple[BreakpointModel, dict[str, Any]]:
    """Train in ``cfg.nproc_per_node`` processes (:func:`train_worker`); load what rank 0 saved."""
    out = ctx.output_dir / "ddp"
    settings = {"model": cfg.model.model_dump(), "train": cfg.train.model_dump()}
    stats = run_distributed(
        "nlprec.beliefs.steps:train_worker",
        settings,
        {"train": str(cfg.stories.train)},
        out,
        cfg.nproc_per_node,
    )
    return BreakpointModel.load(out / "model", ctx.device), stats


def train_worker(dist_ctx: DistributedContext, config: dict, inputs: dict, out: Path) -> dict:
    """One torchrun rank of the breakpoint training (``nlprec.core.launch``): ``train.batch_size``
    is the global batch, in stories; rank 0 saves ``out/model`` and returns the statistics."""
    model_cfg = BreakpointConfig(**config.get("model", {}))
    train_cfg = TrainConfig(**config.get("train", {}))
    stories = _stories(inputs["train"])
    torch.manual_seed(train_cfg.seed)  # same initial heads on every rank
    model = BreakpointModel(model_cfg)
    stats = train_breakpoint(model, stories, train_cfg, dist_ctx.device, dist_ctx)
    if dist_ctx.is_main:
        model.save(out / "model")
    return stats


def breakpoint_model(ctx: StepContext, cfg: BreakpointStepConfig) -> PredictionsOutput:
    """Train the breakpoint transformer, evaluate it, save and register it."""
    train_stories, eval_stories = _inputs(ctx, cfg.stories)
    if not train_stories:
        raise StepSkipped("no training stories")
    ctx.log_params({"model": cfg.model.model_dump(), "train": cfg.train.model_dump()})
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": ctx.seed})})
    if cfg.nproc_per_node > 1:
        model, stats = _train_with_torchrun(ctx, cfg)
    else:
        torch.manual_seed(ctx.seed)
        model = BreakpointModel(cfg.model)
        stats = train_breakpoint(model, train_stories, cfg.train, ctx.device)
    predictions, infer_rate = predict_breakpoint(
        model, eval_stories, ctx.device, cfg.eval_batch_size
    )
    hooks = _hooks(cfg.stories)
    _report(ctx, hooks, cfg.name, eval_stories, predictions)
    if ctx.split == "test" and cfg.stories.validation is not None:
        _log_validation(ctx, cfg, model, hooks)
    out = ctx.output_dir
    efficiency = {**stats, "infer_pairs_per_s": infer_rate, "device": ctx.device}
    ctx.log_dict(efficiency, f"{cfg.name}_efficiency.json")
    model_dir = model.save(out / "model")
    if cfg.register_as:
        ctx.log_model(model_dir, name=cfg.register_as, flavor="dir")
    return PredictionsOutput(
        predictions={cfg.name: _save_predictions(out / "predictions.npz", predictions)},
        model_dir=model_dir,
        efficiency=efficiency,
    )


def _log_validation(
    ctx: StepContext, cfg: BreakpointStepConfig, model: BreakpointModel, hooks: TaskHooks
) -> None:
    """``<name>.val_<metric>`` on the validation stories: the evidence a promote rule compares
    (choosing the model to serve is a selection, so it never reads test metrics)."""
    stories = _stories(cfg.stories.validation)
    predictions, _ = predict_breakpoint(model, stories, ctx.device, cfg.eval_batch_size)
    metrics = evaluate(stories, predictions, hooks)
    ctx.log_metrics({f"{cfg.name}.val_{k}": v for k, v in metrics.items()})


class FlatStepConfig(BaseModel):
    model_config = {"extra": "forbid"}
    stories: StoriesOutput = Field(description="${steps.<load step>}")
    name: str = "flat"
    encoder: str = "minilm"
    encoder_layers: int | None = Field(None, ge=1)
    hypothesis_only: bool = False
    train: TrainConfig = TrainConfig(batch_size=64)
    pairs_per_epoch: int | None = Field(None, ge=1, description="sample this many pairs per epoch")
    eval_stories: int | None = Field(
        None, ge=1, description="score N evenly spaced eval stories (one forward pass per pair)"
    )
    eval_batch_size: int = Field(128, ge=1)


def flat(ctx: StepContext, cfg: FlatStepConfig) -> PredictionsOutput:
    """The flat pairwise cross-encoder (or its hypothesis-only variant)."""
    train_stories, eval_stories = _inputs(ctx, cfg.stories)
    if not train_stories:
        raise StepSkipped("no training stories")
    ctx.log_params(cfg.model_dump(exclude={"stories"}))
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": ctx.seed})})
    torch.manual_seed(ctx.seed)
    model = FlatPairModel(cfg.encoder, cfg.encoder_layers, cfg.hypothesis_only)
    stats = train_flat(model, train_stories, cfg.train, ctx.device, cfg.pairs_per_epoch)
    every = len(eval_stories)
    hooks = _hooks(cfg.stories)
    subset = hooks.eval_subset(evenly_spaced(every, cfg.eval_stories), eval_stories)
    eval_stories = [eval_stories[i] for i in subset]
    predictions, infer_rate = predict_flat(model, eval_stories, ctx.device, cfg.eval_batch_size)
    # paired tests need the same units as every other model: only when all stories were scored
    _report(ctx, hooks, cfg.name, eval_stories, predictions, units=len(subset) == every)
    efficiency = {**stats, "infer_pairs_per_s": infer_rate, "device": ctx.device}
    ctx.log_dict(efficiency, f"{cfg.name}_efficiency.json")
    path = _save_predictions(ctx.output_dir / "predictions.npz", predictions, subset)
    return PredictionsOutput(predictions={cfg.name: path}, efficiency=efficiency)


class RuleBaselinesConfig(BaseModel):
    model_config = {"extra": "forbid"}
    stories: StoriesOutput = Field(description="${steps.<load step>}")


def rule_baselines(ctx: StepContext, cfg: RuleBaselinesConfig) -> PredictionsOutput:
    """majority (most frequent training label) and last_mention."""
    train_stories, eval_stories = _inputs(ctx, cfg.stories)
    hooks = _hooks(cfg.stories)
    out: dict[str, Path] = {}
    baselines = {"last_mention": predict_last_mention(eval_stories)}
    if train_stories:
        baselines["majority"] = MajorityBaseline().fit(train_stories).predict(eval_stories)
    for name, predictions in baselines.items():
        _report(ctx, hooks, name, eval_stories, predictions)
        out[name] = _save_predictions(ctx.output_dir / f"{name}.npz", predictions)
    return PredictionsOutput(predictions=out)


# ---------------------------------------------------------------------------------------- report
class CompareConfig(BaseModel):
    model_config = {"extra": "forbid"}
    stories: StoriesOutput = Field(description="${steps.<load step>}")
    group_by: str = Field("length", description="story meta field for the accuracy breakdown")
    task_options: dict[str, Any] = Field(
        {},
        description="options of the dataset's task hooks (tasks.py), e.g. TRIP's "
        "{detector: learned} (trip_task.TripHooks)",
    )


def _collect_predictions(ctx: StepContext) -> dict[str, Path]:
    """Prediction files of the model steps in ``needs:`` (skipped ones are absent)."""
    found: dict[str, Path] = {}
    for output in ctx.inputs.values():
        if isinstance(output, PredictionsOutput):
            found.update(output.predictions)
    return found


def compare(ctx: StepContext, cfg: CompareConfig) -> dict[str, Any]:
    """One table of every model's metrics and a figure of accuracy by ``group_by``."""
    _, eval_stories = _inputs(ctx, cfg.stories)
    hooks = _hooks(cfg.stories, **cfg.task_options)
    rows, breakdown = [], {}
    for name, path in _collect_predictions(ctx).items():
        predictions, indices = _load_predictions(path)
        scored = [eval_stories[i] for i in indices]  # flat models may score a subset
        metrics = evaluate(scored, predictions, hooks)
        if cfg.task_options:  # what the options add to what the model's own step logged
            logged = evaluate(scored, predictions, _hooks(cfg.stories))
            ctx.log_metrics({f"{name}.{k}": v for k, v in metrics.items() if k not in logged})
        rows.append({"model": name, "stories": len(scored), **metrics})
        breakdown[name] = accuracy_by(scored, predictions, cfg.group_by)
    columns = [
        "model",
        "stories",
        "prop_acc",
        "macro_f1",
        "all_correct",
        "constraint_violation",
        "qa_acc",
    ]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [row["model"], str(row["stories"])] + [
            f"{row[c]:.4f}" if isinstance(row.get(c), float) else "–" for c in columns[2:]
        ]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    out = ctx.output_dir
    (out / "comparison.md").write_text(table)
    (out / "breakdown.json").write_text(json.dumps(breakdown, indent=2))
    ctx.log_text(table, "comparison.md")
    ctx.log_dict(breakdown, f"accuracy_by_{cfg.group_by}.json")
    ctx.log_figure(_breakdown_figure(breakdown, cfg.group_by), f"accuracy_by_{cfg.group_by}.png")
    ctx.logger.info("model comparison\n%s", table)
    return {"table": str(out / "comparison.md"), "breakdown": str(out / "breakdown.json")}


def _breakdown_figure(breakdown: dict[str, dict[str, float]], group_by: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    for name, values in breakdown.items():
        keys = [k for k in values if k != "None"]
        try:
            keys.sort(key=float)
        except ValueError:
            keys.sort()
        axis.plot(keys, [values[k] for k in keys], marker="o", label=name)
    axis.set_xlabel(group_by)
    axis.set_ylabel("proposition accuracy")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure

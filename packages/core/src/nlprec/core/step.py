"""`StepContext`: everything a step function gets besides its config.

Steps are plain functions `fn(ctx: StepContext, cfg: SomeConfig) -> SomeOutput` (a `StepOutput`
model, or a dict). They get upstream results through `${steps.<step>.<field>}` references in their
config or from `ctx.inputs`, write files under `ctx.output_dir`, and log through the `ctx.log_*`
methods; they never import MLflow. A step that cannot run raises `StepSkipped(reason)`
(docs/steps.md). Metrics a step logs are also kept for the run summary and the cache, so a cached
step reports the same figures as the run that produced it.

In a study (docs/studies.md) the runner also sets `ctx.split` ("validation" in search trials, "test"
otherwise), the time budget (`ctx.max_seconds`, `ctx.time_left()`), and collects per-unit scores
(`ctx.log_unit_scores`) for the comparison step.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from nlprec.core.tracking import Tracker
from pydantic import BaseModel, ConfigDict

T = TypeVar("T")
F = TypeVar("F", bound=Callable)

UNIT_SCORES_DIR = "unit_scores"
_ACROSS_SEEDS = "_nlprec_across_seeds"
_NEVER_CACHED = "_nlprec_never_cached"


class StepOutput(BaseModel):
    """Base of a step's typed output: declare it as the step function's return annotation.

    The runner stores it in the cache as JSON and hands downstream steps the validated model, so
    `${steps.<step>.<field>}` references to it are checked against its fields before anything runs.
    Fields named `test` or `test_*` hold test data: give them a default of None, since a search
    trial sees them as None.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


class StepSkipped(Exception):
    """Raised by a step that cannot run (no train split, no registry, ...): the summary shows the step
    as skipped with `reason`, and downstream steps see it as absent (docs/steps.md)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


def output_class_of(function: Callable) -> type[StepOutput] | None:
    """The `StepOutput` model a step declares as its return annotation, or None (a dict step)."""
    import inspect

    target = inspect.unwrap(function)
    try:
        returned = inspect.get_annotations(target, eval_str=True).get("return")
    except NameError:
        return None
    return returned if inspect.isclass(returned) and issubclass(returned, StepOutput) else None


def across_seeds(function: F) -> F:
    """Mark a step that runs once per pipeline run instead of once per seed.

    For steps whose result does not depend on the seed (loading or generating data: they get the
    pipeline's `seed:`) and for steps that combine every seed (the comparison: `ctx.inputs_by_seed`
    and `ctx.upstream_dirs` hold each seed's upstream results).
    """
    setattr(function, _ACROSS_SEEDS, True)
    return function


def runs_across_seeds(function: Callable) -> bool:
    return bool(getattr(function, _ACROSS_SEEDS, False))


def never_cached(function: F) -> F:
    """Mark a step that acts on the world outside its outputs (moving a registry alias): it runs on
    every invocation, because a cached result would replay what it decided, not do it again. A
    promotion skipped in an untracked run must still happen in the next tracked one."""
    setattr(function, _NEVER_CACHED, True)
    return function


def is_never_cached(function: Callable) -> bool:
    return bool(getattr(function, _NEVER_CACHED, False))


def unit_scores_path(output_dir: Path, system: str, metric: str) -> Path:
    return Path(output_dir) / UNIT_SCORES_DIR / f"{system}.{metric}.json"


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class StepContext:
    """Handed to every step by the runner."""

    name: str
    output_dir: Path
    inputs: dict[str, Any]  # upstream step -> its output (a StepOutput model or a dict); skipped steps absent
    params: dict[str, Any]
    seed: int
    tracker: Tracker | None = None
    device: str = field(default_factory=default_device)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("nlprec.step"))
    metrics: dict[str, float] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    model_requests: list[dict[str, Any]] = field(default_factory=list)
    split: str = "test"
    max_seconds: float | None = None
    started_at: float = field(default_factory=time.monotonic)
    inputs_by_seed: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)
    upstream_dirs: dict[str, dict[int, Path]] = field(default_factory=dict)
    register_models: bool = True

    # ------------------------------------------------------------------ budget

    def time_left(self) -> float | None:
        """Seconds left of the step's `max_seconds` (never below 0), or None without a budget."""
        if self.max_seconds is None:
            return None
        return max(0.0, self.max_seconds - (time.monotonic() - self.started_at))

    # ------------------------------------------------------------------ logging

    def log_params(self, params: dict[str, Any]) -> None:
        if self.tracker:
            self.tracker.log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log metrics; the last value of each key goes into the run summary."""
        clean = {key: float(value) for key, value in metrics.items()}
        self.metrics.update(clean)  # for curves (step=...) the summary keeps the last point
        if self.tracker:
            self.tracker.log_metrics(clean, step=step)

    def log_unit_scores(self, system: str, metric: str, scores: dict[str, float]) -> Path:
        """Per-unit scores (per query, user, story, example) of `system` on `metric`, for paired tests.

        Written as `unit_scores/<system>.<metric>.json` under the output directory and logged as an
        artifact; `nlprec.core.study:compare` reads them from its upstream steps. Units must be the
        same for every system compared (the same test queries, users, ...).
        """
        if not scores:
            raise ValueError(f"log_unit_scores({system!r}, {metric!r}): no scores")
        clean = {}
        for unit, score in scores.items():
            value = float(score)
            if not math.isfinite(value):
                raise ValueError(f"log_unit_scores({system!r}, {metric!r}): unit {unit!r} has score {score!r}")
            clean[str(unit)] = value
        path = unit_scores_path(self.output_dir, system, metric)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"system": system, "metric": metric, "split": self.split, "seed": self.seed, "scores": clean}
        path.write_text(json.dumps(payload))
        self.log_artifact(path, UNIT_SCORES_DIR)
        return path

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.tracker:
            self.tracker.log_artifact(Path(path), artifact_path)

    def log_figure(self, figure: Any, name: str) -> None:
        if self.tracker:
            self.tracker.log_figure(figure, name)

    def log_dict(self, obj: Any, name: str) -> None:
        if self.tracker:
            self.tracker.log_dict(obj, name)

    def log_text(self, text: str, name: str) -> None:
        if self.tracker:
            self.tracker.log_text(text, name)

    def log_input(
        self, name: str, source: str | Path, digest: str | None = None, context: str | None = None
    ) -> None:
        """Record a dataset this step read (`mlflow.log_input`), with a content digest by default."""
        if self.tracker:
            self.tracker.log_input(name, str(source), digest, context)

    def log_model(
        self, model: Any, name: str, flavor: str = "dir", alias: str | None = "challenger", **options: Any
    ) -> str:
        """Register a model as a new `@challenger` version (`nlprec.core.registry`); returns its URI
        (`models:/name@alias`), or the path when untracked. A smoke run's version never promotes.
        Search trials register nothing (a trial is not a candidate for serving): they get the path back."""
        from nlprec.core.registry import is_smoke

        if not self.register_models:
            return str(model)

        options.setdefault("smoke", is_smoke(self.params))
        if isinstance(model, str | Path):  # a saved model: the cache can register it again on a hit
            self.model_requests.append({"model": str(model), "name": name, "flavor": flavor, "alias": alias, **options})
        if not self.tracker:
            return str(model)
        uri = self.tracker.log_model(model, name=name, flavor=flavor, alias=alias, **options)
        self.models[name] = uri
        return uri

    # ------------------------------------------------------------------ progress

    def progress(self, iterable: Iterable[T], desc: str | None = None, total: int | None = None) -> Iterator[T]:
        from tqdm.auto import tqdm

        yield from tqdm(iterable, desc=desc or self.name, total=total, leave=False, dynamic_ncols=True)

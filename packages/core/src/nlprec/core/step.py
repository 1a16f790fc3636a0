"""`StepContext`: everything a step function gets besides its config.

Steps are plain functions `fn(ctx: StepContext, cfg: SomeConfig) -> dict`. They read upstream results
from `ctx.inputs`, write files under `ctx.output_dir`, and log through the `ctx.log_*` methods; they
never import MLflow. Metrics a step logs are also kept for the run summary and the cache, so a cached
step reports the same figures as the run that produced it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from nlprec.core.tracking import Tracker

T = TypeVar("T")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class StepContext:
    """Handed to every step by the runner."""

    name: str
    output_dir: Path
    inputs: dict[str, dict[str, Any]]
    params: dict[str, Any]
    seed: int
    tracker: Tracker | None = None
    device: str = field(default_factory=default_device)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("nlprec.step"))
    metrics: dict[str, float] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    model_requests: list[dict[str, Any]] = field(default_factory=list)

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
        (`models:/name@alias`), or the path when untracked. A smoke run's version never promotes."""
        from nlprec.core.registry import is_smoke

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

"""Run a validated pipeline: cache lookups, step execution, MLflow runs and the summary.

Per step: compute its cache key; on a hit, reuse the stored result (child run tagged cache_hit=true);
otherwise run the function with a fresh output directory in a staging area and move the finished
entry into the cache in one rename. An exception or Ctrl-C marks the step's and the parent's runs
FAILED or KILLED and leaves the cache as it was, so the next invocation resumes after the last
finished step.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nlprec.core.cache import StepCache, package_versions, step_key
from nlprec.core.paths import cache_root
from nlprec.core.spec import Pipeline, ResolvedStep
from nlprec.core.step import StepContext
from nlprec.core.tracking import Tracker, git_commit, nlprec_versions
from rich.console import Console

log = logging.getLogger("nlprec.runner")


class StepFailed(Exception):
    """A step raised; the summary (if requested) was written before this propagates."""

    def __init__(self, step: str, cause: BaseException):
        self.step, self.cause = step, cause
        super().__init__(f"step {step!r} failed: {type(cause).__name__}: {cause}")


@dataclass
class StepReport:
    status: str  # finished | cached | failed | killed | skipped | not_run
    cached: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    key: str = ""
    run_id: str = ""
    result: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunSummary:
    pipeline: str
    file: str
    run_id: str
    status: str
    steps: dict[str, StepReport]
    seconds: float

    @property
    def metrics(self) -> dict[str, float]:
        """Flat metrics: a step's keys as logged (`<model>.<metric>`); bare keys get the step's name."""
        flat: dict[str, float] = {}
        for name, report in self.steps.items():
            for key, value in report.metrics.items():
                flat[key if "." in key else f"{name}.{key}"] = value
        return flat

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "file": self.file,
            "run_id": self.run_id,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "steps": {
                name: {
                    "status": r.status,
                    "cached": r.cached,
                    "seconds": round(r.seconds, 3),
                    "metrics": r.metrics,
                    "key": r.key,
                    "run_id": r.run_id,
                    **({"skipped": r.result["skipped"]} if "skipped" in r.result else {}),
                }
                for name, r in self.steps.items()
            },
            "metrics": self.metrics,
        }

    def write(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(path.suffix + ".tmp")
        temporary.write_text(json.dumps(self.to_json(), indent=2))
        os.replace(temporary, path)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _downstream_of(pipeline: Pipeline, roots: set[str]) -> set[str]:
    """`--force STEP` re-runs STEP and every step that (transitively) needs it."""
    forced = set(roots)
    for step in pipeline.steps:  # topological order: one pass suffices
        if forced.intersection(step.spec.needs):
            forced.add(step.spec.name)
    return forced


class Runner:
    def __init__(self, console: Console | None = None, track: bool = True, tracker: Tracker | None = None):
        """`tracker` replaces the MLflow tracker (e.g. a `RecordTracker` writing an exportable run record)."""
        self.console = console or Console(stderr=True)
        self.tracker = tracker or (Tracker() if track else None)
        self.cache = StepCache(cache_root())

    def run(
        self,
        pipeline: Pipeline,
        force: set[str] | None = None,
        use_cache: bool = True,
        summary_path: Path | None = None,
    ) -> RunSummary:
        unknown = (force or set()) - {s.spec.name for s in pipeline.steps}
        if unknown:
            from nlprec.core.errors import PipelineError

            raise PipelineError(pipeline.file, "--force", f"no step named {sorted(unknown)[0]!r}")
        forced = _downstream_of(pipeline, force or set())
        spec = pipeline.spec
        started = time.perf_counter()
        self._experiment_id = self.tracker.experiment_id(spec.experiment) if self.tracker else ""
        parent_id = self._start_parent(pipeline)
        reports = {s.spec.name: StepReport(status="not_run") for s in pipeline.steps}
        summary = RunSummary(spec.name, pipeline.file, parent_id, "running", reports, 0.0)
        self.console.print(f"[bold]{spec.name}[/bold]  run {parent_id or '(untracked)'}  ({len(pipeline.steps)} steps)")
        keys: dict[str, str] = {}
        results: dict[str, dict[str, Any]] = {}
        status = "FINISHED"
        try:
            for step in pipeline.steps:
                name = step.spec.name
                upstream = {u: keys[u] for u in step.spec.needs}
                keys[name] = step_key(step.function, step.config, upstream, spec.seed)
                report = self._run_step(
                    pipeline, step, keys[name], {u: results[u] for u in step.spec.needs},
                    use_cache=use_cache and name not in forced, replace=name in forced,
                )
                reports[name] = report
                results[name] = report.result
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except Exception:
            status = "FAILED"
            raise
        finally:
            summary.status = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}[status]
            summary.seconds = time.perf_counter() - started
            if self.tracker:
                self.tracker.log_metrics({"pipeline.seconds": summary.seconds})
                self.tracker.log_dict(summary.to_json(), "summary.json")
                self.tracker.end_run(status)
            if summary_path:
                summary.write(summary_path)
            self._print_footer(summary)
        return summary

    # ------------------------------------------------------------------ parts

    def _start_parent(self, pipeline: Pipeline) -> str:
        if not self.tracker:
            return ""
        spec = pipeline.spec
        tags = {
            "nlprec.pipeline": spec.name,
            "nlprec.pipeline_file": pipeline.file,
            "git.commit": git_commit(),
            **{f"version.{k}": v for k, v in nlprec_versions().items()},
        }
        run_id = self.tracker.start_run(self._experiment_id, spec.name, nested=False, tags=tags)
        self.tracker.log_params({"params": spec.params, "seed": spec.seed})
        if Path(pipeline.file).exists():
            self.tracker.log_artifact(Path(pipeline.file), "pipeline")
        return run_id

    def _run_step(
        self,
        pipeline: Pipeline,
        step: ResolvedStep,
        key: str,
        inputs: dict[str, dict[str, Any]],
        use_cache: bool,
        replace: bool,
    ) -> StepReport:
        name = step.spec.name
        tags = {"nlprec.step": name, "nlprec.step_key": key, "nlprec.uses": step.spec.uses}
        tags.update({f"version.{k}": v for k, v in package_versions(step.function.__module__).items()})
        entry = self.cache.lookup(name, key) if use_cache else None
        child_id = ""
        if self.tracker:
            tags["cache_hit"] = "true" if entry else "false"
            child_id = self.tracker.start_run(self._experiment_id, name, nested=True, tags=tags)
            self.tracker.log_params(step.config.model_dump(mode="json"))
        if entry is not None:
            stored = entry.result
            if self.tracker:
                if stored.get("metrics"):
                    self.tracker.log_metrics(stored["metrics"])
                for request in stored.get("model_requests", []):  # a hit registers what it produced
                    self.tracker.log_model(**request)
                self.tracker.end_run("FINISHED")
            self.console.print(f"  [green]✓[/green] {name} [dim](cached {key[:8]})[/dim]")
            return StepReport("cached", True, stored.get("metrics", {}), 0.0, key, child_id, stored["outputs"])
        return self._execute(pipeline, step, key, inputs, child_id, replace)

    def _execute(self, pipeline, step, key, inputs, child_id, replace) -> StepReport:
        name = step.spec.name
        staging = self.cache.new_staging_dir(name)
        context = StepContext(
            name=name,
            output_dir=staging / "outputs",
            inputs=inputs,
            params=pipeline.spec.params,
            seed=pipeline.spec.seed,
            tracker=self.tracker,
            logger=logging.getLogger(f"nlprec.step.{name}"),
        )
        self.console.print(f"  [cyan]▶[/cyan] {name} [dim]({step.spec.uses})[/dim]")
        seed_everything(pipeline.spec.seed)
        started = time.perf_counter()
        try:
            result = step.function(context, step.config)
            if result is None:
                result = {}
            if not isinstance(result, dict):
                raise TypeError(f"step {name!r} returned {type(result).__name__}, expected a dict")
            json.dumps(result, default=str)
        except KeyboardInterrupt:
            self.cache.discard(staging)
            if self.tracker:
                self.tracker.end_run("KILLED")
            self.console.print(f"  [yellow]■[/yellow] {name} interrupted")
            raise
        except Exception as exc:
            self.cache.discard(staging)
            if self.tracker:
                self.tracker.set_tags({"error": f"{type(exc).__name__}: {exc}"[:5000]})
                self.tracker.end_run("FAILED")
            self.console.print(f"  [red]✗[/red] {name}: {type(exc).__name__}: {exc}")
            log.debug("step failed", exc_info=True)
            raise StepFailed(name, exc) from exc
        seconds = time.perf_counter() - started
        stored = {
            "outputs": result,
            "metrics": context.metrics,
            "models": context.models,
            "model_requests": context.model_requests,
            "seconds": seconds,
        }
        entry = self.cache.commit(staging, name, key, stored, replace=replace)
        if self.tracker:
            self.tracker.log_metrics({"step.seconds": seconds})
            self.tracker.end_run("FINISHED")
        status = "skipped" if "skipped" in result else "finished"
        mark = "[yellow]–[/yellow]" if status == "skipped" else "[green]✓[/green]"
        extra = f" skipped: {result['skipped']}" if status == "skipped" else ""
        self.console.print(f"  {mark} {name} [dim]{seconds:.1f}s[/dim]{extra}")
        return StepReport(status, False, context.metrics, seconds, key, child_id, entry.result["outputs"])

    def _print_footer(self, summary: RunSummary) -> None:
        cached = sum(r.cached for r in summary.steps.values())
        self.console.print(
            f"[bold]{summary.pipeline}[/bold] {summary.status} in {summary.seconds:.1f}s "
            f"({cached}/{len(summary.steps)} steps from cache)"
        )

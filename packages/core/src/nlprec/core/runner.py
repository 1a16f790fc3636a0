"""Run a validated pipeline: cache lookups, step execution, MLflow runs and the summary.

Per step: compute its cache key; on a hit, reuse the stored result (child run tagged cache_hit=true);
otherwise run the function with a fresh output directory in a staging area and move the finished
entry into the cache in one rename. An exception or Ctrl-C marks the step's and the parent's runs
FAILED or KILLED and leaves the cache as it was, so the next invocation resumes after the last
finished step.

Studies (docs/studies.md) add three things around that:
- seeds: with `seeds:` every step runs once per seed (a step marked `across_seeds` runs once), and
  the summary reports each metric's mean with `.std`, `.ci95` and `.n`;
- search: a step with `search:` first runs each candidate configuration on the validation split
  (`ctx.split == "validation"`, upstream `test`/`test_*` outputs removed), each as a nested run under
  a `<step> search` run; the best by the named metric (mean over seeds) then runs on test;
- budget: `max_seconds` reaches the step as `ctx.max_seconds` / `ctx.time_left()`.

Outputs (docs/steps.md): a step returns a `StepOutput` model (stored as JSON, handed downstream as
the validated model) or a dict; `${steps.<step>.<field>}` references in `with:` are resolved here,
per seed and split. A step that raises `StepSkipped` is reported as skipped and is absent for the
steps after it: a reference falls back to its next alternative, or skips the referring step.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nlprec.core.cache import StepCache, package_versions, step_key
from nlprec.core.errors import UserError
from nlprec.core.hashing import hash_text
from nlprec.core.io import atomic_write_json
from nlprec.core.memory import PeakMemory
from nlprec.core.paths import cache_root
from nlprec.core.spec import Pipeline, Reference, ResolvedStep, SearchSpec
from nlprec.core.stats import metrics_over_seeds
from nlprec.core.step import StepContext, StepOutput, StepSkipped, is_never_cached, output_class_of
from nlprec.core.tracking import Tracker, git_commit, nlprec_versions
from pydantic import BaseModel
from rich.console import Console

log = logging.getLogger("nlprec.runner")

VALIDATION, TEST = "validation", "test"


class StepFailed(Exception):
    """A step raised; the summary (if requested) was written before this propagates."""

    def __init__(self, step: str, cause: BaseException):
        self.step, self.cause = step, cause
        super().__init__(f"step {step!r} failed: {type(cause).__name__}: {cause}")


@dataclass
class StepReport:
    """One step in the summary. With several seeds, `seeds` holds each seed's run and `metrics` the
    statistics over them (`key`, `run_id` and `result` are those of the first seed)."""

    status: str  # finished | cached | failed | killed | skipped | not_run
    cached: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    key: str = ""
    run_id: str = ""
    result: Any = field(default_factory=dict)  # a StepOutput model or a dict
    output_dir: str = ""
    over_budget: bool = False
    seeds: dict[int, StepReport] = field(default_factory=dict)
    search: dict[str, Any] | None = None  # {"metric", "direction", "method"}
    selected: dict[str, Any] | None = None
    trials: list[dict[str, Any]] | None = None
    skipped: str | None = None  # the reason a step raised StepSkipped
    memory: dict[str, float] = field(default_factory=dict)  # peak_rss_mb and friends (core.memory)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "status": self.status,
            "cached": self.cached,
            "seconds": round(self.seconds, 3),
            "metrics": self.metrics,
            "key": self.key,
            "run_id": self.run_id,
        }
        if self.skipped is not None:
            data["skipped"] = self.skipped
        if self.over_budget:
            data["over_budget"] = True
        if self.memory:
            data["memory"] = self.memory
        if self.seeds:
            data["seeds"] = {str(seed): report.to_json() for seed, report in self.seeds.items()}
        if self.search is not None:
            data.update(search=self.search, selected=self.selected, trials=self.trials)
        return data


@dataclass
class RunSummary:
    pipeline: str
    file: str
    run_id: str
    status: str
    steps: dict[str, StepReport]
    seconds: float
    seeds: list[int] | None = None
    report: dict[str, Any] | None = None

    @property
    def metrics(self) -> dict[str, float]:
        """Flat metrics: a step's keys as logged (`<model>.<metric>`); bare keys get the step's name."""
        flat: dict[str, float] = {}
        for name, report in self.steps.items():
            for key, value in report.metrics.items():
                flat[key if "." in key else f"{name}.{key}"] = value
        return flat

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "pipeline": self.pipeline,
            "file": self.file,
            "run_id": self.run_id,
            "status": self.status,
            "seconds": round(self.seconds, 3),
        }
        if self.seeds is not None:
            data["seeds"] = self.seeds
        if self.report is not None:
            data["report"] = self.report
        data["steps"] = {name: report.to_json() for name, report in self.steps.items()}
        data["metrics"] = self.metrics
        return data

    def write(self, path: Path) -> None:
        atomic_write_json(path, self.to_json(), indent=2)


@dataclass
class _Unit:
    """One execution of a step: a config, a seed, a split, and what it reads from upstream."""

    step: ResolvedStep
    config: BaseModel
    seed: int
    split: str
    inputs: dict[str, Any]
    upstream_keys: dict[str, str]
    upstream_dirs: dict[str, dict[int, Path]] = field(default_factory=dict)
    inputs_by_seed: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)
    run_name: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    trial: bool = False
    values: dict[str, Any] = field(default_factory=dict)  # a search trial's values
    skipped: str | None = None  # a hard reference to a skipped step: the unit does not run

    @property
    def key(self) -> str:
        if self.skipped is not None:
            return hash_text(f"skipped:{self.step.spec.name}:{self.skipped}", length=32)
        key = step_key(self.step.function, self.config, self.upstream_keys, self.seed)
        if self.split == TEST:  # the usual key: a plain run of the same config shares its cache entry
            return key
        return hash_text(f"{key}:{self.split}", length=32)


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


def is_test_key(key: str) -> bool:
    """Upstream outputs a search trial must not see: `test` and `test_*`."""
    return key == TEST or key.startswith(f"{TEST}_")


def without_test(inputs: dict[str, Any]) -> dict[str, Any]:
    """Upstream outputs with test data removed (dict keys) or set to None (StepOutput fields)."""
    return {name: _without_test(result) for name, result in inputs.items()}


def _without_test(result: Any) -> Any:
    if isinstance(result, StepOutput):
        return result.model_copy(update={k: None for k in type(result).model_fields if is_test_key(k)})
    return {k: v for k, v in result.items() if not is_test_key(k)}


def _field_json(output: Any, name: str, reference: Reference) -> Any:
    """One field of an upstream output, as JSON (the config being validated converts it back)."""
    if isinstance(output, StepOutput):
        return output.model_dump(mode="json", include={name})[name]
    if name not in output:
        if is_test_key(name):  # hidden from a search trial
            return None
        raise UserError(f"{reference.text}: the output has no {name!r} (outputs: {', '.join(output) or 'none'})")
    return output[name]


def resolve(reference: Reference, upstream: dict[str, StepReport], inputs: dict[str, Any]) -> Any:
    """The value of the first target whose step was not skipped; StepSkipped when every one was."""
    reasons = []
    for target in reference.targets:
        if target.step is None:  # `?? null`
            return None
        report = upstream[target.step]
        if report.skipped is not None:
            reasons.append(f"{target.step} skipped: {report.skipped}")
            continue
        output = inputs[target.step]
        if target.field is None:
            return output.model_dump(mode="json") if isinstance(output, StepOutput) else output
        return _field_json(output, target.field, reference)
    raise StepSkipped(f"{reference.text}: " + "; ".join(reasons))


def stored_outputs(name: str, result: Any, output_class: type[StepOutput] | None) -> dict[str, Any]:
    """What a step returned, as the JSON the cache keeps (a declared output model is validated)."""
    if result is None and output_class is None:
        return {}
    if isinstance(result, dict) and "skipped" in result:
        raise TypeError(f"step {name!r} returned a 'skipped' key: raise nlprec.core.step.StepSkipped(reason)")
    if output_class is not None:
        if isinstance(result, StepOutput) and not isinstance(result, output_class):
            raise TypeError(f"step {name!r} returned {type(result).__name__}, declared {output_class.__name__}")
        if not isinstance(result, StepOutput | dict):
            raise TypeError(f"step {name!r} returned {type(result).__name__}, expected {output_class.__name__}")
        return output_class.model_validate(result).model_dump(mode="json")
    if isinstance(result, StepOutput):
        return result.model_dump(mode="json")
    if not isinstance(result, dict):
        raise TypeError(f"step {name!r} returned {type(result).__name__}, expected a StepOutput or a dict")
    json.dumps(result, default=str)
    return result


def loaded_outputs(outputs: dict[str, Any], output_class: type[StepOutput] | None) -> Any:
    """Stored JSON back as the step's output model (or the dict a dict step returned)."""
    return output_class.model_validate(outputs) if output_class is not None else outputs


def _tracked_params(config: BaseModel, references: dict[tuple, Reference]) -> dict[str, Any]:
    """The step's config as MLflow params, each upstream reference logged as written
    (`${steps.generate}`): what an upstream step produced is an input, not a parameter, and its
    paths differ from machine to machine."""
    params = config.model_dump(mode="json")
    for location, reference in references.items():
        target = params
        try:
            for part in location[:-1]:
                target = target[part]
            target[location[-1]] = reference.text
        except (KeyError, IndexError, TypeError):  # a config that reshapes its input keeps its dump
            continue
    return params


def _largest(memories: Iterable[dict[str, float]]) -> dict[str, float]:
    """Per key, the largest value over a step's seeds (a peak over seeds is the largest seed's)."""
    largest: dict[str, float] = {}
    for memory in memories:
        for key, value in memory.items():
            largest[key] = max(value, largest.get(key, value))
    return largest


def _qualified(metrics: dict[str, float], step_name: str) -> dict[str, float]:
    return {key if "." in key else f"{step_name}.{key}": value for key, value in metrics.items()}


def _describe(values: dict[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in values.items())


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
        summary = RunSummary(
            spec.name, pipeline.file, parent_id, "running", reports, 0.0, seeds=spec.seeds,
            report=spec.report.model_dump() if spec.report else None,
        )
        seeds = f" × {len(spec.seeds)} seeds" if spec.seeds else ""
        self.console.print(f"[bold]{spec.name}[/bold]  run {parent_id or '(untracked)'}  ({len(pipeline.steps)} steps{seeds})")
        self._done: dict[tuple[str, int], StepReport] = {}
        self._params = spec.params
        status = "FINISHED"
        try:
            for step in pipeline.steps:
                name = step.spec.name
                self._use_cache, self._replace = use_cache and name not in forced, name in forced
                reports[name] = self._run_step(pipeline, step)
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
                self.tracker.log_metrics({**summary.metrics, "pipeline.seconds": summary.seconds})
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
        params: dict[str, Any] = {"params": spec.params, "seed": spec.seed}
        if spec.seeds is not None:
            params["seeds"] = spec.seeds
        self.tracker.log_params(params)
        if Path(pipeline.file).exists():
            self.tracker.log_artifact(Path(pipeline.file), "pipeline")
        return run_id

    def _run_step(self, pipeline: Pipeline, step: ResolvedStep) -> StepReport:
        """A step over the pipeline's seeds (or once, across them), after its search if it has one."""
        name, seeds = step.spec.name, pipeline.spec.run_seeds
        if step.across_seeds:
            report = self._run_unit(self._across_seeds_unit(pipeline, step))
            for seed in seeds:
                self._done[(name, seed)] = report
            return report
        selected, search = {}, None
        if step.spec.search is not None:
            search = self._search(pipeline, step)
            selected = search["selected"]
        per_seed = {}
        for seed in seeds:
            unit = self._seed_unit(pipeline, step, selected, seed, TEST)
            per_seed[seed] = self._done[(name, seed)] = self._run_unit(unit)
        report = self._combine(name, per_seed, several=pipeline.spec.seeds is not None)
        if search is not None:
            report.search, report.selected, report.trials = search["search"], search["selected"], search["trials"]
        return report

    def _seed_unit(self, pipeline: Pipeline, step: ResolvedStep, overrides: dict[str, Any], seed: int, split: str,
                   trial: str = "", values: dict[str, Any] | None = None) -> _Unit:
        name = step.spec.name
        upstream = {u: self._done[(u, seed)] for u in step.spec.needs}
        inputs = {u: report.result for u, report in upstream.items() if report.skipped is None}
        trial_run = split != TEST
        config, skipped = self._config(step, overrides, upstream, without_test(inputs) if trial_run else inputs)
        several = pipeline.spec.seeds is not None
        run_name = f"{name} {trial}".strip() + (f" seed={seed}" if several else "")
        tags = {"nlprec.seed": str(seed), "nlprec.split": split}
        if trial:
            tags["nlprec.trial"] = trial
        return _Unit(
            step=step, config=config, seed=seed, split=split,
            inputs=without_test(inputs) if trial_run else inputs,
            upstream_keys={u: report.key for u, report in upstream.items()},
            upstream_dirs={} if trial_run else {
                u: {seed: Path(r.output_dir)} for u, r in upstream.items() if r.skipped is None
            },
            run_name=run_name, tags=tags, trial=trial_run, values=values or {}, skipped=skipped,
        )

    @staticmethod
    def _config(step: ResolvedStep, overrides: dict[str, Any], upstream: dict[str, StepReport],
                inputs: dict[str, Any]) -> tuple[BaseModel, str | None]:
        """The unit's config with references resolved, or (the unresolved config, why it is skipped)."""
        try:
            return step.config_with(overrides, lambda reference: resolve(reference, upstream, inputs)), None
        except StepSkipped as skip:
            return step.config, skip.reason

    def _across_seeds_unit(self, pipeline: Pipeline, step: ResolvedStep) -> _Unit:
        """A step that runs once: it sees every seed's upstream results; its key covers them all."""
        seeds, spec_seed = pipeline.spec.run_seeds, pipeline.spec.seed
        inputs_by_seed = {
            s: {u: self._done[(u, s)].result for u in step.spec.needs if self._done[(u, s)].skipped is None}
            for s in seeds
        }
        first_upstream = {u: self._done[(u, seeds[0])] for u in step.spec.needs}
        config, skipped = self._config(step, {}, first_upstream, inputs_by_seed[seeds[0]])
        upstream_keys: dict[str, str] = {}
        for u in step.spec.needs:
            keys = {s: self._done[(u, s)].key for s in seeds}
            if len(set(keys.values())) == 1:
                upstream_keys[u] = keys[seeds[0]]
            else:
                upstream_keys.update({f"{u}@{s}": key for s, key in keys.items()})
        return _Unit(
            step=step, config=config, seed=spec_seed, split=TEST, skipped=skipped,
            inputs=inputs_by_seed[seeds[0]], inputs_by_seed=inputs_by_seed,
            upstream_keys=upstream_keys,
            upstream_dirs={
                u: {s: Path(self._done[(u, s)].output_dir) for s in seeds if self._done[(u, s)].skipped is None}
                for u in step.spec.needs if any(self._done[(u, s)].skipped is None for s in seeds)
            },
            run_name=step.spec.name, tags={"nlprec.seed": "all" if pipeline.spec.seeds else str(spec_seed)},
        )

    def _combine(self, name: str, per_seed: dict[int, StepReport], several: bool) -> StepReport:
        """One seed: its report. Several: mean, .std, .ci95, .n of each metric, the first seed's ids."""
        first = next(iter(per_seed.values()))
        if not several:
            return first
        reports = list(per_seed.values())
        statuses = {r.status for r in reports}
        skipped = next((r.skipped for r in reports if r.skipped is not None), None)
        return StepReport(
            status="skipped" if skipped is not None else ("cached" if statuses == {"cached"} else "finished"),
            cached=all(r.cached for r in reports),
            metrics=metrics_over_seeds([_qualified(r.metrics, name) for r in reports]),
            seconds=sum(r.seconds for r in reports),
            key=first.key, run_id=first.run_id, result=first.result, output_dir=first.output_dir,
            over_budget=any(r.over_budget for r in reports), seeds=per_seed, skipped=skipped,
            memory=_largest(r.memory for r in reports),
        )

    # ------------------------------------------------------------------ search

    def _search(self, pipeline: Pipeline, step: ResolvedStep) -> dict[str, Any]:
        """Run every candidate on validation (each seed), pick the best mean of the search metric."""
        search: SearchSpec = step.spec.search  # type: ignore[assignment]
        name, seeds = step.spec.name, pipeline.spec.run_seeds
        candidates = search.candidates(seed=pipeline.spec.seed)
        if self.tracker:
            tags = {"nlprec.step": name, "nlprec.search": "true", "nlprec.uses": step.spec.uses}
            self.tracker.start_run(self._experiment_id, f"{name} search", nested=True, tags=tags)
            self.tracker.log_params({"search": search.model_dump(mode="json")})
        trials: list[dict[str, Any]] = []
        try:
            for index, values in enumerate(candidates):
                by_seed, seconds = {}, 0.0
                for seed in seeds:
                    unit = self._seed_unit(pipeline, step, values, seed, VALIDATION,
                                           trial=f"trial {index + 1}/{len(candidates)}", values=values)
                    report = self._run_unit(unit)
                    by_seed[seed] = self._trial_metric(name, search.metric, report, values)
                    seconds += report.seconds
                value = sum(by_seed.values()) / len(by_seed)
                trials.append({"values": values, "value": value, "by_seed": by_seed, "seconds": seconds})
                if self.tracker:
                    self.tracker.log_metrics({search.metric: value}, step=index)
            best = _best(trials, search.direction)
            if self.tracker:
                self.tracker.log_params({"selected": best["values"]})
                self.tracker.end_run("FINISHED")
        except KeyboardInterrupt:
            if self.tracker:
                self.tracker.end_run("KILLED")
            raise
        except Exception:
            if self.tracker:
                self.tracker.end_run("FAILED")
            raise
        self.console.print(
            f"  [magenta]★[/magenta] {name} selected {_describe(best['values'])} "
            f"[dim]({search.metric} {best['value']:.4f} on validation; {len(trials)} trials × {len(seeds)} seeds)[/dim]"
        )
        return {
            "search": {"metric": search.metric, "direction": search.direction, "method": search.method},
            "selected": best["values"],
            "trials": trials,
        }

    @staticmethod
    def _trial_metric(name: str, metric: str, report: StepReport, values: dict[str, Any]) -> float:
        logged = _qualified(report.metrics, name)
        if metric not in logged:
            known = ", ".join(sorted(logged)) or "none"
            cause = UserError(f"search metric {metric!r} was not logged by the trial {_describe(values)} (logged: {known})")
            raise StepFailed(name, cause)
        return logged[metric]

    # ------------------------------------------------------------------ one execution

    def _run_unit(self, unit: _Unit) -> StepReport:
        name = unit.step.spec.name
        key = unit.key
        if unit.skipped is not None:  # nothing to run, nothing to cache
            self._print_done(unit, f"skipped: {unit.skipped}", {}, skipped=True)
            return StepReport("skipped", key=key, skipped=unit.skipped)
        tags = {"nlprec.step": name, "nlprec.step_key": key, "nlprec.uses": unit.step.spec.uses, **unit.tags}
        tags.update({f"version.{k}": v for k, v in package_versions(unit.step.function.__module__).items()})
        cacheable = self._use_cache and not is_never_cached(unit.step.function)
        entry = self.cache.lookup(name, key) if cacheable else None
        child_id = ""
        if self.tracker:
            tags["cache_hit"] = "true" if entry else "false"
            child_id = self.tracker.start_run(self._experiment_id, unit.run_name or name, nested=True, tags=tags)
            self.tracker.log_params(_tracked_params(unit.config, unit.step.references))
        if entry is None:
            return self._execute(unit, key, child_id)
        stored = entry.result
        if self.tracker:
            if stored.get("metrics"):
                self.tracker.log_metrics(stored["metrics"])
            for request in stored.get("model_requests", []):  # a hit registers what it produced
                self.tracker.log_model(**request)
            self.tracker.end_run("FINISHED")
        skipped = stored.get("skipped")
        detail = f"[dim](cached {key[:8]})[/dim]" + (f" skipped: {skipped}" if skipped is not None else "")
        self._print_done(unit, detail, stored.get("metrics", {}), skipped=skipped is not None)
        outputs = loaded_outputs(stored["outputs"], output_class_of(unit.step.function)) if skipped is None else {}
        return StepReport("skipped" if skipped is not None else "cached", True, stored.get("metrics", {}), 0.0, key,
                          child_id, outputs, output_dir=str(entry.outputs), skipped=skipped)

    def _execute(self, unit: _Unit, key: str, child_id: str) -> StepReport:
        step, name = unit.step, unit.step.spec.name
        staging = self.cache.new_staging_dir(name)
        context = StepContext(
            name=name,
            output_dir=staging / "outputs",
            inputs=unit.inputs,
            params=self._params,
            seed=unit.seed,
            tracker=self.tracker,
            logger=logging.getLogger(f"nlprec.step.{name}"),
            split=unit.split,
            max_seconds=step.spec.max_seconds,
            inputs_by_seed=unit.inputs_by_seed,
            upstream_dirs=unit.upstream_dirs,
            register_models=not unit.trial,
        )
        if not unit.trial:
            self.console.print(f"  [cyan]▶[/cyan] {unit.run_name or name} [dim]({step.spec.uses})[/dim]")
        seed_everything(unit.seed)
        memory = PeakMemory.start()
        started = time.perf_counter()
        context.started_at = time.monotonic()
        output_class, skipped = output_class_of(step.function), None
        try:
            outputs = stored_outputs(name, step.function(context, unit.config), output_class)
        except StepSkipped as skip:
            outputs, skipped = {}, skip.reason
        except KeyboardInterrupt:
            self.cache.discard(staging)
            if self.tracker:
                self.tracker.end_run("KILLED")
            self.console.print(f"  [yellow]■[/yellow] {unit.run_name or name} interrupted")
            raise
        except Exception as exc:
            self.cache.discard(staging)
            if self.tracker:
                self.tracker.set_tags({"error": f"{type(exc).__name__}: {exc}"[:5000]})
                self.tracker.end_run("FAILED")
            self.console.print(f"  [red]✗[/red] {unit.run_name or name}: {type(exc).__name__}: {exc}")
            log.debug("step failed", exc_info=True)
            raise StepFailed(name, exc) from exc
        seconds = time.perf_counter() - started
        peak = memory.peak_mb()
        over_budget = step.spec.max_seconds is not None and seconds > step.spec.max_seconds
        stored = {
            "outputs": outputs,
            **({"skipped": skipped} if skipped is not None else {}),
            "metrics": context.metrics,
            "models": context.models,
            "model_requests": context.model_requests,
            "seconds": seconds,
        }
        replace = self._replace or is_never_cached(step.function)  # a never-cached step's newest result stands
        entry = self.cache.commit(staging, name, key, stored, replace=replace)
        if self.tracker:
            self.tracker.log_metrics({"step.seconds": seconds, "step.peak_rss_mb": peak["peak_rss_mb"]})
            if over_budget:
                self.tracker.set_tags({"nlprec.over_budget": "true"})
            self.tracker.end_run("FINISHED")
        status = "skipped" if skipped is not None else "finished"
        extra = f" skipped: {skipped}" if skipped is not None else ""
        if over_budget:
            extra += f" [yellow]over its budget of {step.spec.max_seconds:g}s[/yellow]"
        self._print_done(unit, f"[dim]{seconds:.1f}s[/dim]{extra}", context.metrics, skipped=status == "skipped")
        result = loaded_outputs(entry.result["outputs"], output_class) if skipped is None else {}
        return StepReport(status, False, context.metrics, seconds, key, child_id, result,
                          output_dir=str(entry.outputs), over_budget=over_budget, skipped=skipped, memory=peak)

    def _print_done(self, unit: _Unit, detail: str, metrics: dict[str, float], skipped: bool = False) -> None:
        label = unit.run_name or unit.step.spec.name
        search = unit.step.spec.search
        if unit.trial and search is not None:
            value = _qualified(metrics, unit.step.spec.name).get(search.metric, math.nan)
            self.console.print(
                f"    [dim]· {label} {_describe(unit.values)}: {value:.4f} {detail}[/dim]"
            )
            return
        mark = "[yellow]–[/yellow]" if skipped else "[green]✓[/green]"
        self.console.print(f"  {mark} {label} {detail}")

    def _print_footer(self, summary: RunSummary) -> None:
        cached = sum(r.cached for r in summary.steps.values())
        self.console.print(
            f"[bold]{summary.pipeline}[/bold] {summary.status} in {summary.seconds:.1f}s "
            f"({cached}/{len(summary.steps)} steps from cache)"
        )


def _best(trials: list[dict[str, Any]], direction: str) -> dict[str, Any]:
    """The best trial (first on ties); a NaN metric never wins."""
    sign = 1.0 if direction == "maximize" else -1.0

    def score(trial: dict[str, Any]) -> float:
        value = trial["value"]
        return -math.inf if math.isnan(value) else sign * value

    return max(trials, key=score)

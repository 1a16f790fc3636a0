"""Pipeline files: YAML -> validated `Pipeline`, with interpolation, overrides and step resolution.

Everything here runs before any step does, so a malformed pipeline fails in well under a second with
one message that names the file, the offending key and what was expected. That includes references
to upstream outputs (`${steps.<step>.<field>}`, docs/steps.md): each must name an earlier step and,
where that step declares a `StepOutput`, one of its fields; a reference adds its steps to `needs`.
"""

from __future__ import annotations

import copy
import graphlib
import importlib
import inspect
import itertools
import os
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from nlprec.core.errors import PipelineError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_\-]*$"
_REFERENCE = re.compile(r"\$\{([^}]+)\}")
_STEP_TARGET = re.compile(r"^steps\.([A-Za-z][A-Za-z0-9_\-]*)(?:\.([A-Za-z_]\w*))?$")
_REFERENCE_FORM = "${steps.<step>.<field>}, ${steps.<step>.<field> ?? steps.<other>.<field>} or ... ?? null"


class Target(BaseModel):
    """One alternative of a reference: a step's whole output (field None), one of its fields, or
    `null` (step None: the value None, as the last alternative)."""

    model_config = ConfigDict(frozen=True)
    step: str | None
    field: str | None = None


class Reference(BaseModel):
    """`${steps.a.x ?? steps.b.x ?? null}`: the first alternative whose step was not skipped."""

    model_config = ConfigDict(frozen=True)
    text: str
    targets: tuple[Target, ...]

    @classmethod
    def parse(cls, text: str, file: str, key: str) -> Reference | None:
        """The reference a whole `with:` value spells, or None for any other value."""
        whole = _REFERENCE.fullmatch(text.strip())
        if not whole or not whole.group(1).strip().startswith("steps."):
            if any(m.group(1).strip().startswith("steps.") for m in _REFERENCE.finditer(text)):
                raise PipelineError(file, key, f"a step reference must be the whole value ({_REFERENCE_FORM})")
            return None
        targets = []
        parts = whole.group(1).split("??")
        for index, part in enumerate(parts):
            if part.strip() == "null" and index == len(parts) - 1 and index > 0:
                targets.append(Target(step=None))
                continue
            match = _STEP_TARGET.match(part.strip())
            if not match:
                raise PipelineError(file, key, f"{part.strip()!r} is not a step reference ({_REFERENCE_FORM})")
            targets.append(Target(step=match.group(1), field=match.group(2)))
        return cls(text=text.strip(), targets=tuple(targets))


def find_references(value: Any, file: str, key: str, path: tuple = ()) -> dict[tuple, Reference]:
    """Every step reference in a `with:` mapping, by its location (keys and list indices)."""
    found: dict[tuple, Reference] = {}
    if isinstance(value, str):
        reference = Reference.parse(value, file, key)
        if reference is not None:
            found[path] = reference
    elif isinstance(value, dict):
        for k, v in value.items():
            found.update(find_references(v, file, f"{key}.{k}", (*path, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found.update(find_references(v, file, f"{key}[{i}]", (*path, i)))
    return found


def resolve_references(value: Any, lookup: Callable[[Reference], Any], file: str = "", key: str = "") -> Any:
    """`value` with every step reference replaced by `lookup(reference)`."""
    if isinstance(value, str):
        reference = Reference.parse(value, file, key)
        return value if reference is None else lookup(reference)
    if isinstance(value, dict):
        return {k: resolve_references(v, lookup, file, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_references(v, lookup, file, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


class SearchSpec(BaseModel):
    """A step's `search:`: which `with:` values to try and the validation metric that picks one."""

    model_config = ConfigDict(extra="forbid")
    space: dict[str, list[Any]] = Field(min_length=1, description="`with:` key (dotted for nested) -> values")
    method: Literal["grid", "random"] = "grid"
    trials: int | None = Field(None, ge=1, description="random: how many configurations to draw")
    metric: str = Field(min_length=1, description="the validation metric, as the step logs it")
    direction: Literal["maximize", "minimize"] = "maximize"

    @model_validator(mode="after")
    def _trials_match_method(self) -> SearchSpec:
        if self.method == "random" and self.trials is None:
            raise ValueError("method random needs trials: N")
        if self.method == "grid" and self.trials is not None:
            raise ValueError("trials is for method random; a grid tries every combination")
        return self

    def candidates(self, seed: int) -> list[dict[str, Any]]:
        """The configurations to try, in a fixed order: every combination (grid), or `trials` distinct
        combinations drawn without replacement (random, reproducible from `seed`)."""
        keys = list(self.space)
        sizes = [len(self.space[key]) for key in keys]
        total = 1
        for size in sizes:
            total *= size
        if self.method == "grid" or (self.trials or 0) >= total:
            return [dict(zip(keys, combination, strict=True)) for combination in itertools.product(*self.space.values())]
        rng = random.Random(seed)
        indices: list[int] = []
        seen: set[int] = set()
        while len(indices) < (self.trials or 0):
            index = rng.randrange(total)
            if index not in seen:
                seen.add(index)
                indices.append(index)
        return [self._combination(index, keys, sizes) for index in indices]

    def _combination(self, index: int, keys: list[str], sizes: list[int]) -> dict[str, Any]:
        values = {}
        for key, size in zip(reversed(keys), reversed(sizes), strict=True):
            index, position = divmod(index, size)
            values[key] = self.space[key][position]
        return {key: values[key] for key in keys}


class StepSpec(BaseModel):
    """One `steps:` entry."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=_NAME_PATTERN)
    uses: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description="module:function")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    needs: list[str] = Field(default_factory=list)
    description: str = ""
    max_seconds: float | None = Field(None, gt=0, description="time budget: ctx.max_seconds, ctx.time_left()")
    search: SearchSpec | None = None


class ReportSpec(BaseModel):
    """`report:`: the headline metrics (`<system>.<metric>` suffixes) and the reference system."""

    model_config = ConfigDict(extra="forbid")
    metrics: list[str] = Field(min_length=1)
    reference: str | None = Field(None, min_length=1)


class PipelineSpec(BaseModel):
    """A whole pipeline file."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=_NAME_PATTERN)
    description: str = ""
    experiment: str = Field(default="nlprec", min_length=1)
    seed: int = 0
    seeds: list[int] | None = Field(None, min_length=1, description="run every seeded step once per seed")
    params: dict[str, Any] = Field(default_factory=dict)
    report: ReportSpec | None = None
    steps: list[StepSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct_seeds(self) -> PipelineSpec:
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct (got {self.seeds})")
        return self

    @property
    def run_seeds(self) -> list[int]:
        """The seeds every seeded step runs with: `seeds:`, or the single `seed:`."""
        return list(self.seeds) if self.seeds is not None else [self.seed]


class ResolvedStep(BaseModel):
    """A step whose function was imported and whose `with:` passed its config class."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    spec: StepSpec
    function: Callable[..., dict]
    config: BaseModel
    values: dict[str, Any] = Field(default_factory=dict, description="the interpolated `with:` mapping")
    references: dict[tuple, Reference] = Field(default_factory=dict, description="location -> reference")

    def config_with(self, overrides: dict[str, Any], lookup: Callable[[Reference], Any] | None = None) -> BaseModel:
        """The config with search values put in (dotted keys reach into nested mappings) and each
        step reference replaced by `lookup(reference)`; without `lookup` (before the run) references
        stay as written and only the other values are checked."""
        values = with_values(self.values, overrides)
        if lookup is not None:
            return type(self.config).model_validate(resolve_references(values, lookup))
        return validate_config(type(self.config), values, self.references)

    @property
    def across_seeds(self) -> bool:
        from nlprec.core.step import runs_across_seeds

        return runs_across_seeds(self.function)


class Pipeline(BaseModel):
    """A validated pipeline: steps in a runnable order, each with its parsed config."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    file: str
    spec: PipelineSpec
    steps: list[ResolvedStep]  # topological order


def with_values(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`values` with each dotted key of `overrides` set (a copy; `values` is left as it was)."""
    merged = copy.deepcopy(values)
    for dotted, value in overrides.items():
        target = merged
        *parents, last = dotted.split(".")
        for part in parents:
            child = target.get(part)
            target[part] = child = dict(child) if isinstance(child, dict) else {}
            target = child
        target[last] = value
    return merged


# ---------------------------------------------------------------- loading and overrides


def _coerce_override(text: str) -> Any:
    """`--set a.b=VALUE`: VALUE is read as YAML, so 3 is an int, true a bool, [1,2] a list."""
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict, overrides: list[str], file: str) -> dict:
    """Apply `a.b=c` overrides to the raw YAML mapping. `steps.<name>.with.x=...` addresses a step."""
    for item in overrides:
        if "=" not in item:
            raise PipelineError(file, item, "an override must look like key.path=value")
        dotted, value = item.split("=", 1)
        parts = [p for p in dotted.strip().split(".") if p]
        if not parts:
            raise PipelineError(file, item, "an override needs a key before '='")
        target: Any = raw
        for depth, part in enumerate(parts[:-1]):
            if isinstance(target, list):  # steps.<name>
                matches = [s for s in target if isinstance(s, dict) and s.get("name") == part]
                if not matches:
                    raise PipelineError(file, ".".join(parts[: depth + 1]), "no step of that name")
                target = matches[0]
                continue
            if not isinstance(target, dict):
                raise PipelineError(file, ".".join(parts[:depth]), "is not a mapping")
            target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise PipelineError(file, dotted, "its parent is not a mapping")
        target[parts[-1]] = _coerce_override(value)
    return raw


def _read_yaml(path: Path) -> dict:
    if not path.exists():
        raise PipelineError(str(path), "<file>", "no such pipeline file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "<yaml>"
        raise PipelineError(str(path), where, f"not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise PipelineError(str(path), "<top level>", "expected a mapping with name, steps, ...")
    return raw


# ---------------------------------------------------------------- interpolation


def _lookup(expr: str, params: dict, file: str, key: str) -> Any:
    if expr.startswith("params."):
        value: Any = params
        for part in expr.split(".")[1:]:
            if not isinstance(value, dict) or part not in value:
                raise PipelineError(file, key, f"${{{expr}}} names no pipeline param")
            value = value[part]
        return value
    name, _, default = expr.partition(":-")
    if name in os.environ:
        return os.environ[name]
    if default or expr.endswith(":-"):
        return default
    if name == "NLPREC_DATA":
        from nlprec.core.data import data_root

        return str(data_root())
    raise PipelineError(file, key, f"${{{name}}} is not set in the environment (use ${{{name}:-default}})")


def interpolate(value: Any, params: dict, file: str, key: str) -> Any:
    """Replace `${params.x}` and `${ENV}` / `${ENV:-default}`. A whole-string reference keeps its type.
    Step references (`${steps...}`) are left for the runner."""
    if isinstance(value, str):
        if Reference.parse(value, file, key) is not None:
            return value
        whole = _REFERENCE.fullmatch(value)
        if whole:
            return interpolate(_lookup(whole.group(1), params, file, key), params, file, key)
        return _REFERENCE.sub(lambda m: str(_lookup(m.group(1), params, file, key)), value)
    if isinstance(value, dict):
        return {k: interpolate(v, params, file, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, params, file, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


# ---------------------------------------------------------------- validation


def _describe_validation(exc: ValidationError, prefix: str) -> tuple[str, str]:
    """The first pydantic error as (dotted key, readable message)."""
    return _describe_error(exc.errors()[0], prefix)


def _describe_error(first: Any, prefix: str) -> tuple[str, str]:
    location = ".".join(str(p) for p in first["loc"] if p != "with_")
    location = location.replace("with_", "with")
    key = f"{prefix}.{location}" if prefix and location else (prefix or location or "<top level>")
    kind = first["type"]
    if kind == "value_error":
        return key, first["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return key, "unknown key"
    if kind == "missing":
        return key, "required key is missing"
    expected = first["msg"]
    got = first.get("input")
    shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
    return key, f"{expected} (got {shown})"


def validate_config(config_class: type[BaseModel], values: dict, references: dict[tuple, Reference],
                    file: str = "", key: str = "") -> BaseModel:
    """The config of `values`; errors at the locations of step references (resolved only at run time)
    are set aside, and the config then holds the references as written."""
    try:
        return config_class.model_validate(values)
    except ValidationError as exc:
        errors = [e for e in exc.errors() if not any(tuple(e["loc"][: len(p)]) == p for p in references)]
        if errors:
            if not file:
                raise
            raise PipelineError(file, *_describe_error(errors[0], key)) from None
        return config_class.model_construct(**values)


def import_step_function(uses: str, file: str, key: str) -> Callable[..., dict]:
    module_name, _, function_name = uses.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise PipelineError(file, key, f"cannot import module {module_name!r} ({exc})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise PipelineError(file, key, f"module {module_name!r} has no function {function_name!r}")
    return function


def config_class_of(function: Callable, file: str, key: str) -> type[BaseModel]:
    """A step is `fn(ctx, cfg: SomeConfig)`; SomeConfig must be a pydantic model."""
    parameters = list(inspect.signature(function).parameters.values())
    if len(parameters) != 2:
        raise PipelineError(file, key, f"{function.__qualname__} must take (ctx, cfg)")
    hints = inspect.get_annotations(function, eval_str=True)
    config_class = hints.get(parameters[1].name)
    if not (inspect.isclass(config_class) and issubclass(config_class, BaseModel)):
        raise PipelineError(file, key, f"{function.__qualname__}'s cfg must be annotated with a pydantic model")
    return config_class


def _reject_duplicate_names(spec: PipelineSpec, file: str) -> None:
    seen: set[str] = set()
    for index, step in enumerate(spec.steps):
        if step.name in seen:
            raise PipelineError(file, f"steps[{index}].name", f"duplicate step name {step.name!r}")
        seen.add(step.name)


def _location(key: str, path: tuple) -> str:
    return key + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _add_referenced_needs(spec: PipelineSpec, functions: dict[str, Callable], references: dict[str, dict],
                          file: str) -> PipelineSpec:
    """Check every reference (an earlier step; a field its output model has) and add its steps to
    the referring step's `needs`."""
    from nlprec.core.step import output_class_of

    order = [step.name for step in spec.steps]
    steps = []
    for position, step in enumerate(spec.steps):
        needs = list(step.needs)
        for path, reference in references[step.name].items():
            key = _location(f"steps.{step.name}.with", path)
            for target in reference.targets:
                if target.step is None:
                    continue
                if target.step not in order:
                    raise PipelineError(file, key, f"no step {target.step!r} (steps: {', '.join(order)})")
                if order.index(target.step) >= position:
                    raise PipelineError(file, key, f"step {target.step!r} is not above {step.name!r} "
                                                   "(a reference names an earlier step)")
                output_class = output_class_of(functions[target.step])
                if target.field is not None and output_class is not None and target.field not in output_class.model_fields:
                    fields = ", ".join(output_class.model_fields)
                    raise PipelineError(file, key, f"step {target.step!r} has no output {target.field!r} "
                                                   f"({output_class.__name__}: {fields})")
                if target.step not in needs:
                    needs.append(target.step)
        steps.append(step.model_copy(update={"needs": needs}))
    return spec.model_copy(update={"steps": steps})


def _order_steps(spec: PipelineSpec, file: str) -> list[StepSpec]:
    by_name = {step.name: step for step in spec.steps}
    graph = {}
    for step in spec.steps:
        for upstream in step.needs:
            if upstream not in by_name:
                known = ", ".join(by_name)
                raise PipelineError(file, f"steps.{step.name}.needs", f"no step named {upstream!r} (steps: {known})")
        graph[step.name] = step.needs
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise PipelineError(file, "steps.needs", f"cycle in needs: {cycle}") from None
    # Acyclic: take steps in file order, each as soon as everything it needs is placed.
    ordered: list[StepSpec] = []
    placed: set[str] = set()
    while len(ordered) < len(spec.steps):
        step = next(s for s in spec.steps if s.name not in placed and placed.issuperset(s.needs))
        ordered.append(step)
        placed.add(step.name)
    return ordered


def _reject_unknown_keys(config_class: type[BaseModel], values: dict, file: str, key: str) -> None:
    """Unknown `with:` keys are errors even when a config class would silently ignore them."""
    accepted = set()
    for name, field in config_class.model_fields.items():
        accepted |= {name, field.alias} if field.alias else {name}
    unknown = sorted(set(values) - accepted)
    if unknown and config_class.model_config.get("extra") != "allow":
        expected = ", ".join(sorted(config_class.model_fields)) or "no keys"
        raise PipelineError(file, f"{key}.{unknown[0]}", f"unknown key (expected one of: {expected})")


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> Pipeline:
    """Read, override, interpolate and validate a pipeline file; import every step and check its config."""
    path = Path(path)
    file = str(path)
    raw = apply_overrides(_read_yaml(path), overrides or [], file)
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        key, message = _describe_validation(exc, "")
        if key.startswith("steps."):  # name the step rather than its index when we can
            parts = key.split(".")
            index = int(parts[1]) if parts[1].isdigit() else None
            steps = raw.get("steps") or []
            if index is not None and index < len(steps) and isinstance(steps[index], dict) and steps[index].get("name"):
                key = ".".join(["steps", str(steps[index]["name"]), *parts[2:]])
        raise PipelineError(file, key, message) from None
    params = interpolate(spec.params, spec.params, file, "params")
    spec = spec.model_copy(update={"params": params})
    _reject_duplicate_names(spec, file)
    functions, values, references = {}, {}, {}
    for step in spec.steps:
        key = f"steps.{step.name}"
        functions[step.name] = import_step_function(step.uses, file, f"{key}.uses")
        values[step.name] = interpolate(step.with_, params, file, f"{key}.with")
        references[step.name] = find_references(values[step.name], file, f"{key}.with")
    spec = _add_referenced_needs(spec, functions, references, file)
    resolved = []
    for step in _order_steps(spec, file):
        key = f"steps.{step.name}"
        function = functions[step.name]
        config_class = config_class_of(function, file, f"{key}.uses")
        config_values = values[step.name]
        _reject_unknown_keys(config_class, config_values, file, f"{key}.with")
        config = validate_config(config_class, config_values, references[step.name], file, f"{key}.with")
        resolved_step = ResolvedStep(spec=step, function=function, config=config, values=config_values,
                                     references=references[step.name])
        if step.search is not None:
            resolved_step = _check_search(resolved_step, params, file, f"{key}.search")
        resolved.append(resolved_step)
    return Pipeline(file=file, spec=spec, steps=resolved)


def _check_search(step: ResolvedStep, params: dict, file: str, key: str) -> ResolvedStep:
    """Every value of the search space must give a valid config, and so must every grid combination."""
    if step.across_seeds:
        raise PipelineError(file, key, f"{step.spec.uses} runs across seeds and cannot be searched")
    search = step.spec.search
    assert search is not None
    space = interpolate(search.space, params, file, f"{key}.space")
    config_class = type(step.config)
    for dotted, options in space.items():
        if not isinstance(options, list) or not options:
            raise PipelineError(file, f"{key}.space.{dotted}", "expected a non-empty list of values to try")
        _reject_unknown_keys(config_class, {dotted.split(".")[0]: None}, file, f"{key}.space")
        for index, option in enumerate(options):
            _validate_candidate(step, {dotted: option}, file, f"{key}.space.{dotted}[{index}]")
    search = search.model_copy(update={"space": space})
    if search.method == "grid":
        for candidate in search.candidates(seed=0):
            _validate_candidate(step, candidate, file, f"{key}.space")
    spec = step.spec.model_copy(update={"search": search})
    return step.model_copy(update={"spec": spec})


def _validate_candidate(step: ResolvedStep, candidate: dict[str, Any], file: str, key: str) -> None:
    try:
        step.config_with(candidate)
    except ValidationError as exc:
        location, message = _describe_validation(exc, "")
        shown = ", ".join(f"{k}={v!r}" for k, v in candidate.items())
        raise PipelineError(file, key, f"{shown} gives an invalid config: {location}: {message}") from None

"""The model registry: what a run registers, under which flavor, and when `@champion` moves.

Registration (`log_model`): every new version gets the alias `@challenger`. A saved directory is
logged with the MLflow flavor its contents call for, so `mlflow.pyfunc.load_model` and
`mlflow models serve --env-manager local` can use it:

- a sentence-transformers folder (`modules.json`): the `sentence_transformers` flavor;
- a Hugging Face model folder (`config.json`): the `transformers` flavor, as a pipeline whose task
  follows the architecture (token / sequence classification, question answering, generation);
- a `nlprec.ranking` SearchEngine folder: a pyfunc whose `predict` searches;
- a `nlprec.sessionrec` OnlineRecommender folder: a pyfunc whose `predict` recommends;
- a `nlprec.mohawk` student folder: a pyfunc whose `predict` generates text;
- a `nlprec.beliefs` breakpoint-model folder: a pyfunc whose `predict` returns belief tables;
- anything else: a pyfunc holding the directory (its `predict` returns the local path).

Promotion (`promote_by_evidence`): `@champion` moves to a version only with evidence: its metric on
an evaluation beats the champion's on the same evaluation by at least `min_gain`. A smoke run
(subsampled data, see `is_smoke`) never promotes. The only exception is an empty slot: the first
non-smoke version of a name becomes champion, so a fresh store serves something. `nlprec models
promote` moves the alias by hand.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nlprec.core.hashing import hash_text
from nlprec.core.step import StepSkipped, across_seeds, never_cached
from nlprec.core.tracking import mlflow_key
from pydantic import BaseModel, ConfigDict, Field

CHAMPION, CHALLENGER = "champion", "challenger"
TAG = "nlprec."  # version tags: nlprec.smoke, nlprec.flavor, nlprec.metric.<key>, nlprec.evaluation
_SUBSAMPLE_PARAM = re.compile(
    r"^(smoke|(train|eval|test|val|validation)_limit|limit|subsample|sample_size"
    r"|max_(train|eval|test|val|validation)_\w+|max_(queries|examples|users|documents|docs|stories))$"
)
# Pyfunc model code per kind of nlprec directory (models from code: the file is logged with the model).
PYFUNC_MODULES = {
    "search_engine": ("nlprec.ranking.served", "nlprec-ranking"),
    "recommender": ("nlprec.sessionrec.served", "nlprec-sessionrec"),
    "student_lm": ("nlprec.mohawk.served", "nlprec-mohawk"),
    "belief_tracker": ("nlprec.beliefs.served", "nlprec-beliefs"),
}
TRANSFORMERS_TASKS = (
    ("ForTokenClassification", "token-classification"),
    ("ForSequenceClassification", "text-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("ForMaskedLM", "fill-mask"),
)


# ------------------------------------------------------------------------------------ smoke runs


def is_smoke(params: dict[str, Any]) -> bool:
    """A run on subsampled data: `smoke: true`, or a subsampling param (`max_eval_queries`,
    `train_limit`, ...) set to anything but null / false."""
    return any(
        _SUBSAMPLE_PARAM.match(str(key)) and value not in (None, False, "", "null")
        for key, value in params.items()
    )


# ------------------------------------------------------------------------------------ flavors


def detect_flavor(path: Path) -> tuple[str, str | None]:
    """(flavor, transformers task) for a saved directory; see the module docstring."""
    path = Path(path)
    if (path / "modules.json").is_file():
        return "sentence_transformers", None
    manifest = path / "manifest.json"
    if manifest.is_file() and "n_documents" in _read_json(manifest):
        return "search_engine", None
    meta = path / "meta.json"
    if meta.is_file() and {"items", "popularity"} <= set(_read_json(meta)):
        return "recommender", None
    if (path / "breakpoint_config.json").is_file() and (path / "heads.safetensors").is_file():
        return "belief_tracker", None
    config = path / "config.json"
    if config.is_file() and _is_mohawk_student(_read_json(config)):
        return "student_lm", None
    if config.is_file():
        architectures = _read_json(config).get("architectures") or []
        for suffix, task in TRANSFORMERS_TASKS:
            if any(str(a).endswith(suffix) for a in architectures) and _has_tokenizer(path):
                return "transformers", task
    return "dir", None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_mohawk_student(config: dict) -> bool:
    """A `nlprec.mohawk` StudentConfig: SSD sizes, and no Hugging Face architecture."""
    return {"state_size", "attention_layers"} <= set(config) and "architectures" not in config


def _has_tokenizer(path: Path) -> bool:
    return any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"))


def requirement(dist: str) -> str:
    """`dist==version` as installed here: a pin any package index can resolve (no local paths)."""
    try:
        return f"{dist}=={importlib.metadata.version(dist)}"
    except importlib.metadata.PackageNotFoundError:
        return dist


def _log_sentence_transformers(mlflow: Any, model: Any, name: str) -> Any:
    import mlflow.sentence_transformers
    from sentence_transformers import SentenceTransformer

    if isinstance(model, str | Path):
        model = SentenceTransformer(str(model), device="cpu")
    return mlflow.sentence_transformers.log_model(
        model,
        name="model",
        input_example=["a short example sentence"],
        pip_requirements=[requirement("sentence-transformers"), requirement("torch"), requirement("transformers")],
        registered_model_name=name,
    )


_TASK_EXAMPLES: dict[str, Any] = {
    "token-classification": "The patient was given 500 mg metformin.",
    "text-classification": "The patient reports chest pain.",
    "question-answering": {"question": "What was given?", "context": "The patient was given metformin."},
    "text-generation": "Once upon a time",
    "fill-mask": "The patient was given [MASK].",
}


def _log_transformers(mlflow: Any, model: Any, task: str | None, name: str) -> Any:
    import mlflow.transformers
    import transformers

    if isinstance(model, str | Path):
        if task is None:
            raise ValueError(f"{model}: give the transformers task (detected none from config.json)")
        model = transformers.pipeline(task, model=str(model), tokenizer=str(model), device="cpu")
    task = task or model.task
    example = _TASK_EXAMPLES.get(task)
    if task == "fill-mask" and getattr(model.tokenizer, "mask_token", None):
        example = f"The patient was given {model.tokenizer.mask_token}."
    return mlflow.transformers.log_model(
        model,
        name="model",
        task=task,
        input_example=example,
        pip_requirements=[requirement("transformers"), requirement("torch")],
        registered_model_name=name,
    )


def _log_pyfunc(mlflow: Any, model: Path, kind: str, name: str) -> Any:
    import mlflow.pyfunc

    module, dist = PYFUNC_MODULES[kind]
    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(f"registering a {kind} needs {dist} installed ({module})")
    served = importlib.import_module(module)  # SIGNATURE, input_example; the file is the model's code
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=served.__file__,
        artifacts={"model_dir": str(model)},
        signature=served.SIGNATURE,
        input_example=served.input_example(Path(model)),
        pip_requirements=[requirement(dist), requirement("mlflow")],
        registered_model_name=name,
    )


def _log_directory(mlflow: Any, model: Path, name: str) -> Any:
    import mlflow.pyfunc

    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(Path(__file__).with_name("_dir_model.py")),
        artifacts={"model_dir": str(model)},
        pip_requirements=[requirement("nlprec-core"), requirement("mlflow")],
        registered_model_name=name,
    )


def _log_flavor(mlflow: Any, model: Any, flavor: str, task: str | None, name: str) -> tuple[Any, str]:
    if flavor in ("dir", "auto"):
        if not isinstance(model, str | Path):
            raise TypeError(f"flavor {flavor!r} logs a saved directory, not {type(model).__name__}")
        flavor, detected = detect_flavor(Path(model))
        task = task or detected
    if flavor == "sentence_transformers":
        return _log_sentence_transformers(mlflow, model, name), flavor
    if flavor == "transformers":
        return _log_transformers(mlflow, model, task, name), flavor
    if flavor in PYFUNC_MODULES:
        return _log_pyfunc(mlflow, Path(model), flavor, name), flavor
    if flavor == "pytorch":
        import mlflow.pytorch

        info = mlflow.pytorch.log_model(
            model, name="model", pip_requirements=[requirement("torch")], registered_model_name=name
        )
        return info, flavor
    if flavor == "dir":
        return _log_directory(mlflow, Path(model), name), flavor
    raise ValueError(
        f"unknown model flavor {flavor!r}: expected dir (detect from the folder), sentence_transformers, "
        f"transformers, {', '.join(PYFUNC_MODULES)} or pytorch"
    )


# ------------------------------------------------------------------------------------ registering


def log_model(
    mlflow: Any,
    model: Any,
    name: str,
    flavor: str = "dir",
    alias: str | None = CHALLENGER,
    task: str | None = None,
    smoke: bool = False,
) -> str:
    """Log `model` in the active run, register it as a new version of `name` and return its URI
    by the alias it holds (`models:/name@champion` for a first version, else `@challenger`).

    The version gets `@challenger` (`alias` None, "challenger" or "champion": a step cannot name
    itself champion); another alias (e.g. "staging") is set as given. `@champion` is set only when the
    name has none yet and this is not a smoke run.
    """
    info, flavor = _log_flavor(mlflow, model, flavor, task, name)
    client = mlflow.MlflowClient()
    version = str(info.registered_model_version)
    run = mlflow.active_run()
    tags = {
        "flavor": flavor,
        "smoke": str(bool(smoke)).lower(),
        "parent_run_id": run.data.tags.get("mlflow.parentRunId", "") if run else "",
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, TAG + key, value)
    own = alias if alias not in (None, CHAMPION, CHALLENGER) else CHALLENGER
    client.set_registered_model_alias(name, own, version)
    if not smoke and _alias_version(client, name, CHAMPION) is None:
        client.set_registered_model_alias(name, CHAMPION, version)
        client.set_model_version_tag(name, version, f"{TAG}promoted", "first version of the name")
        own = CHAMPION
    return f"models:/{name}@{own}"


def _alias_version(client: Any, name: str, alias: str) -> Any | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except Exception:  # no such alias (or name)
        return None


# ------------------------------------------------------------------------------------ promotion


@dataclass(frozen=True)
class PromoteRule:
    metric: str
    direction: Literal["maximize", "minimize"] = "maximize"
    min_gain: float = 0.0


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str
    champion: str | None  # the champion version after the decision
    gain: float | None = None


def evaluation_id(metric: str, evaluation: str) -> str:
    """A short name for "this metric on this evaluation data", stored on the version."""
    return hash_text(json.dumps([metric, evaluation]), length=16)


def metric_tag(metric: str) -> str:
    return f"{TAG}metric.{mlflow_key(metric)}"


def record_evidence(client: Any, name: str, version: str, metric: str, value: float, evaluation: str) -> str:
    """Tag the version with its metric on this evaluation; returns the evaluation's id."""
    evaluation = evaluation_id(metric, evaluation)
    client.set_model_version_tag(name, version, metric_tag(metric), repr(float(value)))
    client.set_model_version_tag(name, version, f"{TAG}evaluation", evaluation)
    return evaluation


def promote_by_evidence(
    client: Any, name: str, version: str, rule: PromoteRule, value: float, evaluation: str, smoke: bool
) -> Decision:
    """Record `value` on the version, then move `@champion` to it if the evidence says so."""
    evaluation = record_evidence(client, name, version, rule.metric, value, evaluation)
    champion = _alias_version(client, name, CHAMPION)
    current = champion.version if champion is not None else None
    if smoke:
        return Decision(False, "smoke run (subsampled data): never promoted", current)
    if champion is None or str(champion.version) == str(version):
        if champion is None:
            client.set_registered_model_alias(name, CHAMPION, version)
        return Decision(True, "no other champion", str(version))
    theirs = champion.tags.get(metric_tag(rule.metric))
    if theirs is None or champion.tags.get(f"{TAG}evaluation") != evaluation:
        reason = (
            f"champion v{champion.version} has no {rule.metric} on this evaluation; "
            f"compare and promote by hand (nlprec models compare / promote)"
        )
        return Decision(False, reason, str(champion.version))
    sign = 1.0 if rule.direction == "maximize" else -1.0
    gain = sign * (float(value) - float(theirs))
    if gain < rule.min_gain:
        reason = f"{rule.metric} gain {gain:+.4f} over v{champion.version} is below {rule.min_gain}"
        return Decision(False, reason, str(champion.version), gain)
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, f"{TAG}promoted", f"{rule.metric} {gain:+.4f} over v{champion.version}")
    return Decision(True, f"{rule.metric} gain {gain:+.4f} over v{champion.version}", str(version), gain)


def register_folder(folder: Path, name: str, experiment: str = "registered-models") -> str:
    """Register a saved model folder outside a pipeline (a run of its own, the flavor detected from
    the folder, no alias): for benchmarks, tests and hand registration. Returns its models:/ URI."""
    from nlprec.core.tracking import Tracker

    tracker = Tracker()
    tracker.start_run(tracker.experiment_id(experiment), f"register-{Path(folder).name}", False, {})
    try:
        return tracker.log_model(folder, name=name, flavor="dir", alias=None)
    finally:
        tracker.end_run("FINISHED")


# ------------------------------------------------------------------------------------ the step


class PromoteConfig(BaseModel):
    """`uses: nlprec.core.registry:promote`, after the step that registers `name` and the steps that
    evaluate it (list them in `needs:`)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(description="registered model name; null: nothing was registered (skipped)")
    metric: str = Field(description="run-summary key, e.g. hybrid_ft.ndcg@10 (mean over seeds)")
    direction: Literal["maximize", "minimize"] = "maximize"
    min_gain: float = Field(0.0, ge=0, description="least improvement over the champion to promote")
    evaluation: str | None = Field(
        None, description="what the metric was measured on; null: the pipeline's data params"
    )
    smoke: bool | None = Field(None, description="null: a subsampling pipeline param says (is_smoke)")


@never_cached
@across_seeds
def promote(ctx: Any, cfg: PromoteConfig) -> dict:
    """Compare this run's version of `cfg.name` with the champion on `cfg.metric`; move `@champion`
    when it gains at least `min_gain` on the same evaluation (never in a smoke run).

    Runs once per pipeline run, after every seed: the metric is the mean over the seeds' runs, the
    candidate the newest version the run registered."""
    if cfg.name is None:
        raise StepSkipped("no registered model name (the pipeline registers nothing)")
    tracker = ctx.tracker
    if tracker is None or not hasattr(tracker, "mlflow"):
        raise StepSkipped("no MLflow registry in this run (untracked or exported)")
    mlflow = tracker.mlflow
    client = mlflow.MlflowClient()
    with tracker.locked():
        active = mlflow.active_run()
        parent = active.data.tags.get("mlflow.parentRunId", "")
        *earlier, version = _versions_of_run(client, cfg.name, parent)
        value = _run_metric(mlflow, active.info.experiment_id, parent, cfg.metric)
        smoke = is_smoke(ctx.params) if cfg.smoke is None else cfg.smoke
        rule = PromoteRule(cfg.metric, cfg.direction, cfg.min_gain)
        evaluation = cfg.evaluation or _data_params(ctx.params)
        for seed_version in earlier:  # the other seeds' versions share the run's evidence
            record_evidence(client, cfg.name, seed_version, cfg.metric, value, evaluation)
        decision = promote_by_evidence(client, cfg.name, version, rule, value, evaluation, smoke)
    ctx.logger.info("%s v%s: %s", cfg.name, version, decision.reason)
    ctx.log_metrics({f"promote.{mlflow_key(cfg.name)}.promoted": float(decision.promoted)})
    return {
        "name": cfg.name,
        "version": version,
        "metric": value,
        "promoted": decision.promoted,
        "reason": decision.reason,
        "champion": decision.champion,
    }


def _versions_of_run(client: Any, name: str, parent_run_id: str) -> list[str]:
    """The versions of `name` registered under this pipeline run (one per seed), oldest first."""
    from nlprec.core.errors import UserError

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except Exception:
        versions = []
    mine = [int(v.version) for v in versions if v.tags.get(f"{TAG}parent_run_id") == parent_run_id]
    if not parent_run_id or not mine:
        raise UserError(
            f"promote: no version of {name!r} was registered in this run; list the registering step in needs:"
        )
    return [str(v) for v in sorted(mine)]


def _run_metric(mlflow: Any, experiment_id: str, parent_run_id: str, metric: str) -> float:
    """`metric` as the run summary names it (`<step>.<key>`, or the key a step logged with a dot),
    averaged over the steps' runs that logged it (one per seed)."""
    from nlprec.core.errors import UserError

    runs = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        output_format="list",
    )
    wanted, values, seen = mlflow_key(metric), [], set()
    for run in runs:
        step = run.data.tags.get("nlprec.step", run.info.run_name)
        for key, value in run.data.metrics.items():
            seen.add(key if "." in key else f"{step}.{key}")
            if (key if "." in key else f"{mlflow_key(step)}.{key}") == wanted:
                values.append(float(value))
    if not values:
        close = sorted(k for k in seen if wanted.split(".")[-1] in k)[:5]
        raise UserError(f"promote: no step of this run logged {metric!r} (similar: {close or 'none'})")
    return sum(values) / len(values)


def _data_params(params: dict[str, Any]) -> str:
    keys = ("data", "eval", "source", "format", "columns", "dataset", "tasks", "split")
    return json.dumps({k: params[k] for k in keys if k in params}, sort_keys=True, default=str)

"""Exportable run records: run a pipeline without MLflow, bring the run into any MLflow store later.

`nlprec run PIPELINE --no-track --export DIR` hands the runner a `RecordTracker` instead of the MLflow
`Tracker`: the same methods, but every run (the parent, each step, each search trial and seed) is
written under DIR as plain files, so nothing here imports MLflow:

    DIR/record.json                      format, experiment, root run id, run ids in start order
    DIR/runs/<run_id>/run.json           name, parent, status, times, tags, params, inputs, models
    DIR/runs/<run_id>/metrics.jsonl      one {"key", "value", "step", "timestamp"} per logged point
    DIR/runs/<run_id>/artifacts/...      logged files and folders, at their artifact paths
    DIR/runs/<run_id>/models/<i>/        a logged model's folder, registered again on import

Keys and values are stored as MLflow would store them (`ndcg@10` as `ndcg_at_10`), so `nlprec import
DIR` (`import_record`) is a replay: each run is created with its original times, tags, params,
metric points (steps and timestamps), dataset inputs and artifacts; models are logged and registered
through `Tracker.log_model`; the original run id stays as the tag `nlprec.record_run_id`.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nlprec.core.errors import UserError
from nlprec.core.io import atomic_write_json
from nlprec.core.tracking import (
    content_digest,
    environment_tags,
    metrics_for_mlflow,
    params_for_mlflow,
)

RECORD_FORMAT = "nlprec-run-record/1"
RECORD_RUN_ID_TAG = "nlprec.record_run_id"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _source_tags() -> dict[str, str]:
    """The system tags MLflow's fluent API puts on every run: who ran it, from which program."""
    return {
        "mlflow.user": getpass.getuser(),
        "mlflow.source.name": sys.argv[0] if sys.argv else "",
        "mlflow.source.type": "LOCAL",
    }


class RecordTracker:
    """A `Tracker` that writes runs to a folder: same methods, same nesting (a stack of active runs)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if (self.folder / "record.json").exists():
            raise UserError(f"{self.folder} already holds a run record: export each run to a new folder")
        (self.folder / "runs").mkdir(parents=True, exist_ok=True)
        self.uri = str(self.folder)
        self.experiment = ""
        self.run_ids: list[str] = []
        self._runs: dict[str, dict[str, Any]] = {}
        self._active: list[str] = []

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        yield

    # ------------------------------------------------------------------ runs

    def experiment_id(self, name: str) -> str:
        self.experiment = name
        return name

    def start_run(self, experiment_id: str, run_name: str, nested: bool, tags: dict[str, str]) -> str:
        if self._active and not nested:
            raise RuntimeError(f"run {self._active[-1]} is active: start {run_name!r} with nested=True")
        run_id = uuid.uuid4().hex
        tags = {**_source_tags(), **(tags if nested else {**environment_tags(), **tags})}
        self._runs[run_id] = {
            "run_id": run_id,
            "name": run_name,
            "experiment": experiment_id,
            "parent_id": self._active[-1] if nested and self._active else None,
            "status": "RUNNING",
            "start_time": _now_ms(),
            "end_time": None,
            "tags": {k: str(v) for k, v in tags.items()},
            "params": {},
            "inputs": [],
            "models": [],
        }
        self._active.append(run_id)
        self.run_ids.append(run_id)
        self._run_dir(run_id).mkdir(parents=True)
        self._save(run_id)
        self._save_index()
        return run_id

    def end_run(self, status: str) -> None:
        run_id = self._active.pop()
        self._runs[run_id].update(status=status, end_time=_now_ms())
        self._save(run_id)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._current()["tags"].update({k: str(v) for k, v in tags.items()})
        self._save(self._active[-1])

    # ------------------------------------------------------------------ logging

    def log_params(self, params: dict[str, Any]) -> None:
        self._current()["params"].update(params_for_mlflow(params))
        self._save(self._active[-1])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        stamp = _now_ms()
        lines = [
            json.dumps({"key": k, "value": v, "step": step or 0, "timestamp": stamp})
            for k, v in metrics_for_mlflow(metrics).items()
        ]
        with open(self._run_dir(self._active[-1]) / "metrics.jsonl", "a") as handle:
            handle.write("".join(line + "\n" for line in lines))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            shutil.copytree(path, self._artifact_dir(artifact_path or path.name), dirs_exist_ok=True)
        else:
            target = self._artifact_dir(artifact_path)
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.name)

    def log_text(self, text: str, name: str) -> None:
        target = self._artifact_dir(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def log_dict(self, obj: Any, name: str) -> None:
        self.log_text(json.dumps(obj, indent=2, default=str), name)

    def log_figure(self, figure: Any, name: str) -> None:
        target = self._artifact_dir(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if hasattr(figure, "savefig"):  # matplotlib
            figure.savefig(target)
        elif name.endswith(".html"):  # plotly
            figure.write_html(str(target))
        else:
            figure.write_image(str(target))

    def log_input(self, name: str, source: str, digest: str | None, context: str | None) -> None:
        if digest is None and Path(source).exists():
            digest = content_digest(Path(source))
        self._current()["inputs"].append({"name": name, "source": str(source), "digest": digest, "context": context})
        self._save(self._active[-1])

    def log_model(self, model: Any, name: str, flavor: str, alias: str | None, **options: Any) -> str:
        """Copy the model's folder into the record (registered on import); steps keep using the local path."""
        if not isinstance(model, str | Path) or not Path(model).exists():
            raise TypeError(f"a run record can hold a saved model (a path), not {type(model).__name__}")
        run = self._current()
        folder = f"models/{len(run['models'])}"
        source = Path(model)
        target = self._run_dir(run["run_id"]) / folder
        if source.is_dir():
            shutil.copytree(source, target / source.name)
        else:
            target.mkdir(parents=True)
            shutil.copy2(source, target / source.name)
        request = {"name": name, "flavor": flavor, "alias": alias, **options}
        run["models"].append({"path": f"{folder}/{source.name}", "request": request})
        self._save(run["run_id"])
        return str(model)

    # ------------------------------------------------------------------ files

    def _current(self) -> dict[str, Any]:
        if not self._active:
            raise RuntimeError("no active run: start_run first")
        return self._runs[self._active[-1]]

    def _run_dir(self, run_id: str) -> Path:
        return self.folder / "runs" / run_id

    def _artifact_dir(self, artifact_path: str | None) -> Path:
        root = self._run_dir(self._active[-1]) / "artifacts"
        return root / artifact_path if artifact_path else root

    def _save(self, run_id: str) -> None:
        atomic_write_json(self._run_dir(run_id) / "run.json", self._runs[run_id], indent=1)

    def _save_index(self) -> None:
        index = {"format": RECORD_FORMAT, "experiment": self.experiment, "root": self.run_ids[0], "runs": self.run_ids}
        atomic_write_json(self.folder / "record.json", index, indent=1)


# ---------------------------------------------------------------------- reading


@dataclass
class RecordedRun:
    """One run of an exported record, as read back from its folder."""

    folder: Path
    info: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.info["run_id"]

    @property
    def artifacts(self) -> Path:
        return self.folder / "artifacts"

    def latest_metrics(self) -> dict[str, float]:
        """Each key's value at its highest step (the last logged point breaks ties), as MLflow shows it."""
        latest: dict[str, tuple[int, int, float]] = {}
        for index, point in enumerate(self.metrics):
            rank = (point["step"], index, point["value"])
            if point["key"] not in latest or rank[:2] >= latest[point["key"]][:2]:
                latest[point["key"]] = rank
        return {key: rank[2] for key, rank in latest.items()}


@dataclass
class RunRecord:
    """An exported run record: the experiment name and every run, parents before children."""

    folder: Path
    experiment: str
    runs: list[RecordedRun]

    @property
    def root(self) -> RecordedRun:
        return self.runs[0]

    def children(self, run_id: str) -> list[RecordedRun]:
        return [run for run in self.runs if run.info["parent_id"] == run_id]

    def summary(self) -> dict[str, Any] | None:
        path = self.root.artifacts / "summary.json"
        return json.loads(path.read_text()) if path.exists() else None


def read_record(folder: str | Path) -> RunRecord:
    folder = Path(folder)
    index_path = folder / "record.json"
    if not index_path.exists():
        raise UserError(f"{folder} is not a run record: {index_path} is missing (write one with `nlprec run --export`)")
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{index_path}: not valid JSON ({error})") from None
    if index.get("format") != RECORD_FORMAT:
        raise UserError(f"{index_path}: format {index.get('format')!r}, expected {RECORD_FORMAT!r}")
    runs = []
    for run_id in index["runs"]:
        run_dir = folder / "runs" / run_id
        try:
            info = json.loads((run_dir / "run.json").read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise UserError(f"{run_dir / 'run.json'}: unreadable run ({error})") from None
        metrics_file = run_dir / "metrics.jsonl"
        points = [json.loads(line) for line in metrics_file.read_text().splitlines() if line] if metrics_file.exists() else []
        runs.append(RecordedRun(run_dir, info, points))
    return RunRecord(folder, index["experiment"], runs)


# ---------------------------------------------------------------------- import


def find_imported(tracker: Any, record: RunRecord) -> str | None:
    """The MLflow run id a record's root was imported as, if it was."""
    found = tracker.mlflow.search_runs(
        search_all_experiments=True, output_format="list",
        filter_string=f"tags.`{RECORD_RUN_ID_TAG}` = '{record.root.run_id}'",
    )
    return found[0].info.run_id if found else None


def import_record(folder: str | Path) -> str:
    """Load an exported record into the MLflow store (`MLFLOW_TRACKING_URI` or the default); returns the root's new run id."""
    from mlflow.entities import Metric, Param
    from nlprec.core.tracking import Tracker

    record = read_record(folder)
    tracker = Tracker()
    already = find_imported(tracker, record)
    if already:
        raise UserError(f"{record.folder} was already imported as run {already}")
    client = tracker.mlflow.MlflowClient()
    experiment_id = tracker.experiment_id(record.experiment)
    new_ids: dict[str, str] = {}
    for run in record.runs:
        info = run.info
        tags = {**info["tags"], RECORD_RUN_ID_TAG: info["run_id"]}
        if info["parent_id"]:
            tags["mlflow.parentRunId"] = new_ids[info["parent_id"]]
        with tracker.locked():
            created = client.create_run(experiment_id, start_time=info["start_time"], tags=tags, run_name=info["name"])
            run_id = new_ids[info["run_id"]] = created.info.run_id
            params = [Param(k, v) for k, v in info["params"].items()]
            metrics = [Metric(p["key"], p["value"], p["timestamp"], p["step"]) for p in run.metrics]
            for start in range(0, max(len(params), len(metrics)), 100):
                client.log_batch(run_id, metrics=metrics[start : start + 100], params=params[start : start + 100])
            if run.artifacts.is_dir():
                client.log_artifacts(run_id, str(run.artifacts))
        if info["inputs"] or info["models"]:
            _replay_inputs_and_models(tracker, run_id, run)
        with tracker.locked():
            status = "FAILED" if info["status"] == "RUNNING" else info["status"]  # a run cut off mid-way
            client.set_terminated(run_id, status, end_time=info["end_time"] or info["start_time"])
    return new_ids[record.root.run_id]


def _replay_inputs_and_models(tracker: Any, run_id: str, run: RecordedRun) -> None:
    """Dataset inputs and models go through the fluent API (the `Tracker`'s own methods), on the resumed run."""
    mlflow = tracker.mlflow
    with tracker.locked():
        mlflow.start_run(run_id=run_id)
    try:
        for item in run.info["inputs"]:
            tracker.log_input(item["name"], item["source"], item["digest"], item["context"])
        for model in run.info["models"]:
            tracker.log_model(model=str(run.folder / model["path"]), **model["request"])
    finally:
        with tracker.locked():
            mlflow.end_run(status="RUNNING")

"""Committed run records: the small, compressed evidence behind every generated table.

`results/<pipeline>/<run-id>.json.gz` holds what a table needs and what a reader needs to check it:
the summary metrics (with `.std/.ci95/.n` and the comparison's `.delta_vs_/.p_vs_` keys), each step's
status, selected configuration and trials, the per-unit test scores, the configuration (the pipeline
YAML, the pipeline's and each step's params) and the environment (commit, machine, command, package
versions). Never weights or data. The file is gzip with a zero timestamp and sorted keys, so the same
run always gives the same bytes.

A record is made from a tracked MLflow run (`nlprec report --save-record RUN_ID`) or from an exported
run record folder (`nlprec report --save-record DIR`, `nlprec import DIR --save`).
"""

from __future__ import annotations

import gzip
import json
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from nlprec.core.errors import UserError
from nlprec.core.record import RECORD_RUN_ID_TAG, read_record
from nlprec.core.step import UNIT_SCORES_DIR

RESULTS_FORMAT = "nlprec-results/1"
_SIGNIFICANT = 6  # per-unit scores are stored to 6 significant digits


@dataclass
class RunView:
    """What a compact record is made of, read from MLflow or from an exported folder."""

    run_id: str
    experiment: str
    status: str
    start_time: int  # ms since the epoch
    tags: dict[str, str]
    params: dict[str, str]
    summary: dict[str, Any]
    pipeline_yaml: str
    step_params: dict[str, dict[str, str]] = field(default_factory=dict)
    unit_scores: list[dict[str, Any]] = field(default_factory=list)  # payloads of ctx.log_unit_scores + "run"


def _summary_or_error(summary: dict[str, Any] | None, where: str) -> dict[str, Any]:
    if not summary:
        raise UserError(f"{where}: no summary.json artifact (the run did not finish writing it)")
    return summary


def view_from_export(folder: str | Path) -> RunView:
    record = read_record(folder)
    root = record.root
    names = {run.run_id: run.info["name"] for run in record.runs}
    pipeline_files = sorted((root.artifacts / "pipeline").glob("*.y*ml"))
    view = RunView(
        run_id=root.run_id,
        experiment=record.experiment,
        status=root.info["status"],
        start_time=root.info["start_time"],
        tags=root.info["tags"],
        params=root.info["params"],
        summary=_summary_or_error(record.summary(), str(folder)),
        pipeline_yaml=pipeline_files[0].read_text() if pipeline_files else "",
        step_params={run.info["name"]: run.info["params"] for run in record.children(root.run_id)},
    )
    for run in record.runs:
        for file in sorted((run.artifacts / UNIT_SCORES_DIR).glob("*.json")):
            view.unit_scores.append({**json.loads(file.read_text()), "run": _run_path(run.run_id, names, record)})
    return view


def _run_path(run_id: str, names: dict[str, str], record: Any) -> str:
    parents = {run.run_id: run.info["parent_id"] for run in record.runs}
    parts = []
    while parents.get(run_id):  # the root's own name is left out
        parts.append(names[run_id])
        run_id = parents[run_id]
    return "/".join(reversed(parts))


def view_from_mlflow(run_id: str) -> RunView:
    from nlprec.core.tracking import Tracker

    tracker = Tracker()
    client = tracker.mlflow.MlflowClient()
    try:
        root = client.get_run(run_id)
    except Exception:
        raise UserError(f"no run {run_id!r} in {tracker.uri}") from None
    if root.data.tags.get("mlflow.parentRunId"):
        raise UserError(f"run {run_id} is a step's run: give its pipeline run {root.data.tags['mlflow.parentRunId']}")
    experiment = client.get_experiment(root.info.experiment_id).name
    with tempfile.TemporaryDirectory() as tmp:
        summary = _download_json(client, run_id, "summary.json", tmp)
        pipeline_yaml = ""
        for item in client.list_artifacts(run_id, "pipeline"):
            pipeline_yaml = Path(client.download_artifacts(run_id, item.path, tmp)).read_text()
            break
        view = RunView(  # an imported run keeps the id it got where it ran
            run_id=root.data.tags.get(RECORD_RUN_ID_TAG, run_id), experiment=experiment, status=root.info.status, start_time=root.info.start_time,
            tags=dict(root.data.tags), params=dict(root.data.params),
            summary=_summary_or_error(summary, f"run {run_id}"), pipeline_yaml=pipeline_yaml,
        )
        for path, child in _descendants(client, root):
            if "/" not in path:
                view.step_params[path] = dict(child.data.params)
            for item in client.list_artifacts(child.info.run_id, UNIT_SCORES_DIR):
                payload = _download_json(client, child.info.run_id, item.path, tmp)
                if payload is not None:
                    view.unit_scores.append({**payload, "run": path})
    return view


def _download_json(client: Any, run_id: str, path: str, folder: str) -> Any:
    try:
        local = client.download_artifacts(run_id, path, folder)
    except Exception:
        return None
    return json.loads(Path(local).read_text())


def _descendants(client: Any, run: Any, prefix: str = "") -> list[tuple[str, Any]]:
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    found = []
    for child in children:
        path = f"{prefix}/{child.info.run_name}" if prefix else child.info.run_name
        found.append((path, child))
        found.extend(_descendants(client, child, path))
    return found


# ---------------------------------------------------------------------- compact records


def _round(value: float) -> float:
    return float(f"{value:.{_SIGNIFICANT}g}")


def compact_record(view: RunView) -> dict[str, Any]:
    """The committed form of a run: small, no weights, no data."""
    summary = view.summary
    tags = view.tags
    report = summary.get("report")
    if report is None and view.pipeline_yaml:
        report = (yaml.safe_load(view.pipeline_yaml) or {}).get("report")
    steps = {}
    for name, step in summary.get("steps", {}).items():
        kept = {k: step[k] for k in ("status", "cached", "seconds", "memory", "selected", "trials", "search", "over_budget") if k in step}
        steps[name] = kept
    unit_scores = [
        {"run": item["run"], "system": item["system"], "metric": item["metric"], "seed": item.get("seed"),
         "scores": {unit: _round(score) for unit, score in sorted(item["scores"].items())}}
        for item in view.unit_scores
        if item.get("split", "test") == "test"
    ]
    return {
        "format": RESULTS_FORMAT,
        "run_id": view.run_id,
        "pipeline": summary.get("pipeline") or tags.get("nlprec.pipeline", ""),
        "experiment": view.experiment,
        "status": summary.get("status", view.status.lower()),
        "started": datetime.fromtimestamp(view.start_time / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": summary.get("seconds"),
        "seeds": summary.get("seeds"),
        "report": report,
        "environment": {
            "git_commit": tags.get("git.commit", "unknown"),
            "git_dirty": tags.get("git.dirty") == "true",
            "machine": tags.get("nlprec.machine", "unknown"),
            "command": tags.get("nlprec.command", ""),
            "versions": {k.removeprefix("version."): v for k, v in sorted(tags.items()) if k.startswith("version.")},
        },
        "config": {"pipeline_yaml": view.pipeline_yaml, "params": view.params, "steps": view.step_params},
        "metrics": summary.get("metrics", {}),
        "steps": steps,
        "unit_scores": sorted(unit_scores, key=lambda u: (u["system"], u["metric"], str(u["seed"]), u["run"])),
    }


def record_path(root: Path, record: dict[str, Any]) -> Path:
    return Path(root) / record["pipeline"] / f"{record['run_id']}.json.gz"


def save_record(record: dict[str, Any], root: str | Path) -> Path:
    path = record_path(Path(root), record)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(record, sort_keys=True, indent=None, separators=(",", ":")).encode()
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    temporary.replace(path)
    return path


def load_record(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        record = json.loads(gzip.decompress(path.read_bytes()))
    except (OSError, EOFError, ValueError) as error:
        raise UserError(f"{path}: not a gzipped JSON run record ({error})") from None
    if record.get("format") != RESULTS_FORMAT:
        raise UserError(f"{path}: format {record.get('format')!r}, expected {RESULTS_FORMAT!r}")
    return record


def find_records(root: str | Path, selector: str) -> list[dict[str, Any]]:
    """`PIPELINE` (its latest record), `PIPELINE/*` (all, oldest first) or `PIPELINE/RUN_ID_PREFIX`."""
    pipeline, _, run = selector.partition("/")
    folder = Path(root) / pipeline
    files = sorted(folder.glob("*.json.gz"))
    if not files:
        raise UserError(f"no run records for {pipeline!r} in {folder} (save one with `nlprec report --save-record RUN`)")
    records = sorted((load_record(f) for f in files), key=lambda r: (r["started"], r["run_id"]))
    if not run:
        return records[-1:]
    if run == "*":
        return records
    chosen = [r for r in records if r["run_id"].startswith(run)]
    if len(chosen) != 1:
        raise UserError(f"{selector}: {len(chosen)} records in {folder} match run {run!r}, expected one")
    return chosen

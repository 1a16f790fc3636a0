"""`nlprec run --no-track --export DIR` without MLflow installed, and `nlprec import DIR` into a store.

The exported and imported run must look in MLflow like a tracked run of the same pipeline: the same
nesting of runs, params, metric points (with their steps), tags, dataset inputs, artifacts and models.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from nlprec.core.record import RecordTracker, read_record

REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parent
DEMO = REPO / "pipelines" / "core-demo.yaml"
SMALL = ("--set", "params.n=120", "--set", "params.epochs=5")

BLOCK_MLFLOW = '''
import sys

class BlockMlflow:
    """Makes `import mlflow` fail as on a node where it is not installed."""

    def find_spec(self, name, path=None, target=None):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, BlockMlflow())
'''


def nlprec(*args, home, cwd, pythonpath=(), timeout=600):
    env = {**os.environ, "NLPREC_HOME": str(home), "PYTHONPATH": os.pathsep.join([*map(str, pythonpath), str(TESTS)])}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run([sys.executable, "-m", "nlprec.core.cli", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_record_tracker_nests_runs_and_stores_mlflow_keys(tmp_path):
    tracker = RecordTracker(tmp_path / "rec")
    experiment = tracker.experiment_id("exp")
    parent = tracker.start_run(experiment, "pipe", nested=False, tags={"nlprec.pipeline": "pipe"})
    tracker.log_params({"params": {"a": 1, "b": {"c": "x"}}})
    child = tracker.start_run(experiment, "step", nested=True, tags={})
    grandchild = tracker.start_run(experiment, "trial", nested=True, tags={})
    tracker.log_metrics({"m.ndcg@10": 0.5}, step=3)
    tracker.end_run("FINISHED")
    (tmp_path / "file.txt").write_text("hello")
    tracker.log_artifact(tmp_path / "file.txt", "docs")
    tracker.end_run("FAILED")
    tracker.end_run("FINISHED")
    record = read_record(tmp_path / "rec")
    assert [r.run_id for r in record.runs] == [parent, child, grandchild]
    assert [r.info["parent_id"] for r in record.runs] == [None, parent, child]
    assert record.root.info["params"] == {"params.a": "1", "params.b.c": "x"}
    assert record.runs[2].metrics[0] | {"timestamp": 0} == {"key": "m.ndcg_at_10", "value": 0.5, "step": 3, "timestamp": 0}
    assert (record.runs[1].artifacts / "docs" / "file.txt").read_text() == "hello"
    assert [r.info["status"] for r in record.runs] == ["FINISHED", "FAILED", "FINISHED"]
    tags = record.root.info["tags"]
    assert {"git.commit", "nlprec.machine", "nlprec.command", "version.python"} <= set(tags)
    with pytest.raises(Exception, match="already holds a run record"):
        RecordTracker(tmp_path / "rec")


def test_export_runs_where_mlflow_cannot_be_imported(tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCK_MLFLOW)
    check = subprocess.run([sys.executable, "-c", "import mlflow"], env={**os.environ, "PYTHONPATH": str(blocker)},
                           capture_output=True, text=True)
    assert check.returncode != 0 and "blocked by the test" in check.stderr
    nlprec("run", str(DEMO), *SMALL, "--no-track", "--export", "rec", "--summary", "s.json",
           home=tmp_path, cwd=tmp_path, pythonpath=[blocker])
    record = read_record(tmp_path / "rec")
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["run_id"] == record.root.run_id
    assert json.loads((record.root.artifacts / "summary.json").read_text())["metrics"] == summary["metrics"]
    steps = {r.info["name"] for r in record.children(record.root.run_id)}
    assert {"generate", "train", "evaluate"} <= steps
    tags = record.root.info["tags"]
    assert tags["nlprec.pipeline"] == "core-demo" and len(tags["git.commit"]) == 40
    assert tags["nlprec.command"].startswith("nlprec run ") and "--export rec" in tags["nlprec.command"]
    assert tags["nlprec.machine"]


# ---------------------------------------------------------------------- tracked vs exported + imported

VOLATILE_METRIC = "seconds"  # timings differ between two runs; their keys and steps must still match
VOLATILE_TAGS = {"nlprec.command", "nlprec.record_run_id", "mlflow.source.name", "mlflow.source.type",
                 "mlflow.user", "mlflow.source.git.commit", "mlflow.parentRunId", "mlflow.log-model.history",
                 "nlprec.pipeline_file"}


def _tree(client, run, prefix=""):
    """Every run under `run` keyed by its path of run names, with what MLflow shows for it."""
    path = f"{prefix}/{run.info.run_name}"
    histories = {key: [(m.step, None if VOLATILE_METRIC in key else m.value)
                       for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
                 for key in run.data.metrics}
    artifacts, stack = [], [""]
    while stack:
        for item in client.list_artifacts(run.info.run_id, stack.pop() or None):
            (stack.append(item.path) if item.is_dir else artifacts.append(item.path))
    inputs = sorted((d.dataset.name, d.dataset.digest) for d in run.inputs.dataset_inputs)
    tags = {k: v for k, v in run.data.tags.items() if k not in VOLATILE_TAGS and not k.startswith("mlflow.source.git")}
    node = {path: {"params": run.data.params, "metrics": histories, "tags": tags, "inputs": inputs,
                   "artifacts": sorted(a for a in artifacts if not a.startswith("model/")),
                   "model": any(a.startswith("model/") for a in artifacts), "status": run.info.status}}
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'",
                                  order_by=["attributes.start_time ASC"])
    names = [c.info.run_name for c in children]
    assert len(names) == len(set(names)), f"sibling runs share a name under {path}: {names}"
    for child in children:
        node.update(_tree(client, child, path))
    return node


def test_exported_then_imported_run_matches_a_tracked_run(nlprec_env, tmp_path_factory):
    import mlflow

    tracked_summary = nlprec_env / "tracked.json"
    nlprec("run", str(DEMO), *SMALL, "--summary", str(tracked_summary), home=nlprec_env, cwd=nlprec_env)
    node = tmp_path_factory.mktemp("node")  # another machine: its own cache, no store
    nlprec("run", str(DEMO), *SMALL, "--no-track", "--export", "rec", home=node, cwd=node)
    imported = nlprec("import", str(node / "rec"), home=nlprec_env, cwd=nlprec_env).stdout
    imported_id = imported.split()[-1]

    client = mlflow.MlflowClient(f"sqlite:///{nlprec_env / 'mlflow.db'}")
    tracked_id = json.loads(tracked_summary.read_text())["run_id"]
    tracked = _tree(client, client.get_run(tracked_id))
    replayed = _tree(client, client.get_run(imported_id))
    assert list(tracked) == list(replayed)  # same runs, same nesting, same order
    for path in tracked:
        assert tracked[path] == replayed[path], path
    assert client.get_run(imported_id).data.tags["nlprec.record_run_id"] == read_record(node / "rec").root.run_id
    versions = client.search_model_versions("name = 'core-demo'")
    assert len(versions) == 2  # the tracked run and the import each registered the model

    again = subprocess.run([sys.executable, "-m", "nlprec.core.cli", "import", str(node / "rec")], cwd=nlprec_env,
                           env={**os.environ, "NLPREC_HOME": str(nlprec_env)}, capture_output=True, text=True)
    assert again.returncode == 2 and "already imported" in again.stderr

"""`nlprec run --no-track --export DIR` without MLflow installed, and `nlprec import DIR` into a store.

The exported and imported run must look in MLflow like a tracked run of the same pipeline: the same
nesting of runs, params, metric points (with their steps), tags, dataset inputs, artifacts and models.
"""

import importlib.metadata
import inspect
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
SMALL = ("--set", "params.n=200", "--set", "seeds=[0, 1]")  # still searched, seeded and compared

BLOCK_MLFLOW = '''
import sys

class BlockMlflow:
    """Makes `import mlflow` fail as on a node where it is not installed."""

    def find_spec(self, name, path=None, target=None):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, BlockMlflow())

import atexit, os

@atexit.register
def _list_imported_modules():
    with open(os.environ["IMPORTED_MODULES_FILE"], "w") as handle:
        handle.write("\\n".join(sorted({name.split(".")[0] for name in sys.modules})))
'''
OPTIONAL = ("matplotlib", "charset-normalizer", "datasets")  # the comparison plot is skipped without matplotlib; numpy.f2py tries charset-normalizer; sentence-transformers imports datasets only when it is installed


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


def test_record_tracker_has_the_trackers_methods():
    """The runner and steps call the tracker without knowing which one they have."""
    from nlprec.core.tracking import Tracker

    for name, method in inspect.getmembers(Tracker, inspect.isfunction):
        if not name.startswith("_"):
            assert hasattr(RecordTracker, name), f"RecordTracker lacks {name}"
            expected = list(inspect.signature(method).parameters)
            assert list(inspect.signature(getattr(RecordTracker, name)).parameters) == expected, name


def test_export_runs_where_mlflow_cannot_be_imported(tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCK_MLFLOW)
    check = subprocess.run([sys.executable, "-c", "import mlflow"], env={**os.environ, "PYTHONPATH": str(blocker)},
                           capture_output=True, text=True)
    assert check.returncode != 0 and "blocked by the test" in check.stderr
    os.environ["IMPORTED_MODULES_FILE"] = str(tmp_path / "modules.txt")
    try:
        nlprec("run", str(DEMO), *SMALL, "--no-track", "--export", "rec", "--summary", "s.json",
               home=tmp_path, cwd=tmp_path, pythonpath=[blocker])
    finally:
        del os.environ["IMPORTED_MODULES_FILE"]
    _assert_wheelhouse_covers((tmp_path / "modules.txt").read_text().split())
    record = read_record(tmp_path / "rec")
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["run_id"] == record.root.run_id
    assert json.loads((record.root.artifacts / "summary.json").read_text())["metrics"] == summary["metrics"]
    steps = {r.info["name"] for r in record.children(record.root.run_id)}
    assert {"generate", "bow search", "bow seed=0", "bow seed=1", "compare"} <= steps
    trials = record.children(next(r.run_id for r in record.runs if r.info["name"] == "bow search"))
    assert len(trials) == len(summary["steps"]["bow"]["trials"]) * 2  # every trial, every seed
    tags = record.root.info["tags"]
    assert tags["nlprec.pipeline"] == "core-demo" and len(tags["git.commit"]) == 40
    assert tags["nlprec.command"].startswith("nlprec run ") and "--export rec" in tags["nlprec.command"]
    assert tags["nlprec.machine"]


def _assert_wheelhouse_covers(modules):
    """What the export imported is in the wheelhouse, on the node already, or optional."""
    from nlprec.core.wheelhouse import ON_THE_NODE, closure, normalize, wheel_set

    by_module = importlib.metadata.packages_distributions()
    imported = {normalize(d) for m in modules if m not in sys.stdlib_module_names for d in by_module.get(m, [])}
    covered = set(wheel_set()) | closure(ON_THE_NODE) | closure(OPTIONAL)
    missing = {d for d in imported if not d.startswith("nlprec-")} - covered
    assert not missing, f"the --no-track path imports {sorted(missing)}: add them to wheelhouse.RUNNER_NEEDS"
    assert "mlflow" not in imported


# ---------------------------------------------------------------------- tracked vs exported + imported

VOLATILE_METRICS = ("seconds", "peak_rss_mb")  # timings and memory differ between two runs; their keys and steps must still match
VOLATILE_TAGS = {"nlprec.command", "nlprec.record_run_id", "mlflow.source.name", "mlflow.source.type",
                 "mlflow.user", "mlflow.source.git.commit", "mlflow.parentRunId", "mlflow.log-model.history",
                 "nlprec.pipeline_file",
                 # the source tree at the moment each run started: equal unless someone edits between the two
                 "nlprec.step_key", "git.commit", "git.dirty"}


def _tree(client, run, prefix=""):
    """Every run under `run` keyed by its path of run names, with what MLflow shows for it."""
    path = f"{prefix}/{run.info.run_name}"
    histories = {key: [(m.step, None if any(v in key for v in VOLATILE_METRICS) else m.value)
                       for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
                 for key in run.data.metrics}
    artifacts, stack = [], [""]
    while stack:
        for item in client.list_artifacts(run.info.run_id, stack.pop() or None):
            (stack.append(item.path) if item.is_dir else artifacts.append(item.path))
    inputs = sorted((d.dataset.name, d.dataset.digest) for d in run.inputs.dataset_inputs)
    tags = {k: v for k, v in run.data.tags.items() if k not in VOLATILE_TAGS and not k.startswith("mlflow.source.git")}
    node = {path: {"params": run.data.params, "metrics": histories, "tags": tags, "inputs": inputs,
                   "artifacts": sorted(artifacts), "status": run.info.status}}
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'",
                                  order_by=["attributes.start_time ASC"])
    names = [c.info.run_name for c in children]
    assert len(names) == len(set(names)), f"sibling runs share a name under {path}: {names}"
    for child in children:
        node.update(_tree(client, child, path))
    return node


def _run_ids(client, run_id):
    children = client.search_runs([client.get_run(run_id).info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    return {run_id}.union(*(_run_ids(client, child.info.run_id) for child in children))


def test_exported_then_imported_run_matches_a_tracked_run(nlprec_env, tmp_path_factory, capsys):
    import mlflow

    tracked_summary = nlprec_env / "tracked.json"
    nlprec("run", str(DEMO), *SMALL, "--summary", str(tracked_summary), home=nlprec_env, cwd=nlprec_env)
    node = tmp_path_factory.mktemp("node")  # another machine: its own cache, no store
    nlprec("run", str(DEMO), *SMALL, "--no-track", "--export", "rec", home=node, cwd=node)
    imported = nlprec("import", str(node / "rec"), "--save", home=nlprec_env, cwd=nlprec_env).stdout
    imported_id = imported.splitlines()[0].split()[-1]
    original_id = read_record(node / "rec").root.run_id
    assert (nlprec_env / "results" / "core-demo" / f"{original_id}.json.gz").exists()

    client = mlflow.MlflowClient(f"sqlite:///{nlprec_env / 'mlflow.db'}")
    tracked_id = json.loads(tracked_summary.read_text())["run_id"]
    tracked = _tree(client, client.get_run(tracked_id))
    replayed = _tree(client, client.get_run(imported_id))
    assert list(tracked) == list(replayed)  # same runs, same nesting, same order
    for path in tracked:
        assert tracked[path] == replayed[path], path
    assert client.get_run(imported_id).data.tags["nlprec.record_run_id"] == original_id
    versions = client.search_model_versions("name = 'core-demo'")
    by_tree = [sum(v.run_id in _run_ids(client, root) for v in versions) for root in (tracked_id, imported_id)]
    assert by_tree[0] >= 1 and by_tree[0] == by_tree[1] and sum(by_tree) == len(versions)

    from nlprec.core.results import compact_record, view_from_export, view_from_mlflow

    os.environ["NLPREC_HOME"] = str(nlprec_env)  # nlprec_env's monkeypatch restores it
    from_store, from_folder = compact_record(view_from_mlflow(tracked_id)), compact_record(view_from_export(node / "rec"))
    for key in ("metrics", "report", "seeds", "pipeline", "experiment"):
        assert from_store[key] == from_folder[key], key
    assert [u["scores"] for u in from_store["unit_scores"]] == [u["scores"] for u in from_folder["unit_scores"]]
    assert len(from_store["unit_scores"]) == 4  # two systems × two seeds, test split only
    assert from_store["config"]["steps"] == from_folder["config"]["steps"]
    assert view_from_mlflow(imported_id).run_id == original_id  # an imported run keeps its id

    from nlprec.core.cli import main as nlprec_main

    assert nlprec_main(["report", "--tag", "nlprec.pipeline=core-demo"]) == 0
    table = capsys.readouterr().out
    assert f"`{tracked_id[:12]}`" in table and f"`{original_id[:12]}`" in table and "(reference)" in table
    assert nlprec_main(["report", "--pipeline", "core-demo"]) == 0  # the latest: the exported run
    assert tracked_id[:12] not in capsys.readouterr().out

    again = subprocess.run([sys.executable, "-m", "nlprec.core.cli", "import", str(node / "rec")], cwd=nlprec_env,
                           env={**os.environ, "NLPREC_HOME": str(nlprec_env)}, capture_output=True, text=True)
    assert again.returncode == 2 and "already imported" in again.stderr


def test_wheelhouse_set_for_a_node_without_our_dependencies():
    from nlprec.core.wheelhouse import wheel_set

    core = set(wheel_set())
    assert {"pydantic", "pydantic-core", "annotated-types", "typing-inspection", "pyyaml", "rich", "filelock",
            "safetensors"} <= core
    assert not {"mlflow", "mlflow-skinny", "torch", "transformers"} & core
    with_package = set(wheel_set(["sessionrec"]))
    assert core < with_package and "mlflow" not in with_package  # the package declares mlflow for serving

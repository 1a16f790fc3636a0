"""The runner against a real `mlflow server` on 127.0.0.1 (fixture in tests/conftest.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

PIPELINE = (Path(__file__).resolve().parents[2] / "pipelines" / "core-demo.yaml").read_text()


def test_pipeline_runs_against_mlflow_server(mlflow_server, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "NLPREC_HOME": str(work)}
    (work / "p.yaml").write_text(PIPELINE)
    result = subprocess.run(
        [sys.executable, "-m", "nlprec.core.cli", "run", "p.yaml", "--set", "params.n=60",
         "--summary", "s.json"], cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (work / "mlflow.db").exists()  # nothing went to the local default store
    summary = json.loads((work / "s.json").read_text())
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    parent = client.get_run(summary["run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{summary['run_id']}'"
    )
    assert {c.data.tags["nlprec.step"] for c in children} == {"generate", "bow", "bow_first2", "compare"}
    version = client.get_model_version_by_alias("core-demo", "champion")
    assert version.run_id == summary["steps"]["bow"]["run_id"]
    assert "summary.json" in {a.path for a in client.list_artifacts(summary["run_id"])}

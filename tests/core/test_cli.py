"""The `nlprec` command end to end, through subprocesses as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parent

PIPELINE = """
name: cli-t
experiment: cli-tests
params: {v: 2}
steps:
  - name: a
    uses: steps_for_tests:write_value
    with: {value: "${params.v}"}
  - name: b
    uses: steps_for_tests:add_upstream
    needs: [a]
"""


def nlprec(*args, cwd, env_extra=None, check_rc=None):
    env = {**os.environ, "NLPREC_HOME": str(cwd), "PYTHONPATH": str(TESTS)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(env_extra or {})
    result = subprocess.run(
        [sys.executable, "-m", "nlprec.core.cli", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=300,
    )
    if check_rc is not None:
        assert result.returncode == check_rc, result.stderr[-3000:]
    return result


@pytest.fixture()
def workdir(nlprec_env):
    (nlprec_env / "p.yaml").write_text(PIPELINE)
    return nlprec_env


def test_run_twice_summary_and_show(workdir):
    nlprec("run", "p.yaml", "--summary", "s1.json", cwd=workdir, check_rc=0)
    nlprec("run", "p.yaml", "--summary", "s2.json", cwd=workdir, check_rc=0)
    first = json.loads((workdir / "s1.json").read_text())
    second = json.loads((workdir / "s2.json").read_text())
    assert first["metrics"]["b.total"] == 2.0 and first["metrics"]["demo.value"] == 2.0
    assert [s["cached"] for s in first["steps"].values()] == [False, False]
    assert [s["cached"] for s in second["steps"].values()] == [True, True]
    shown = nlprec("show", second["run_id"], cwd=workdir, check_rc=0).stdout
    assert "(cached)" in shown and "total = 2.0000" in shown


def test_malformed_pipeline_exits_2_with_one_line(workdir):
    (workdir / "bad.yaml").write_text(PIPELINE.replace("with: {value:", "with: {valeu:"))
    result = nlprec("run", "bad.yaml", cwd=workdir, check_rc=2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "bad.yaml: steps.a.with.valeu: unknown key" in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_set_value_exits_2(workdir):
    result = nlprec("run", "p.yaml", "--set", "params.v=[1, 2]", cwd=workdir, check_rc=2)
    assert "steps.a.with.value" in result.stderr and "Traceback" not in result.stderr


def test_unknown_force_step_exits_2(workdir):
    result = nlprec("run", "p.yaml", "--force", "zzz", cwd=workdir, check_rc=2)
    assert "--force" in result.stderr and "zzz" in result.stderr


def test_failing_step_exits_1_and_summary_says_failed(workdir):
    result = nlprec("run", "p.yaml", "--set", "steps.b.with.fail=true", "--summary", "s.json", cwd=workdir, check_rc=1)
    assert "planned failure" in result.stderr
    summary = json.loads((workdir / "s.json").read_text())
    assert summary["status"] == "failed"
    assert summary["steps"]["a"]["status"] == "finished" and summary["steps"]["b"]["status"] == "not_run"


def test_list_and_cache_commands(workdir):
    listing = nlprec("list", "--dir", str(REPO / "pipelines"), cwd=workdir, check_rc=0).stdout
    assert "core-demo" in listing and "bag-of-words" in listing
    nlprec("run", "p.yaml", cwd=workdir, check_rc=0)
    assert "2 entries" in nlprec("cache", "ls", cwd=workdir, check_rc=0).stdout
    assert "removed 2" in nlprec("cache", "prune", cwd=workdir, check_rc=0).stdout


def test_two_concurrent_invocations_do_not_corrupt_store_or_cache(workdir):
    """Two processes run the same pipeline at once against one fresh store and cache."""
    env = {**os.environ, "NLPREC_HOME": str(workdir), "PYTHONPATH": str(TESTS)}
    env.pop("MLFLOW_TRACKING_URI", None)
    (workdir / "mlflow.db").unlink()  # both race on creating the store, too
    command = [sys.executable, "-m", "nlprec.core.cli", "run", "p.yaml", "--set", "steps.a.with.sleep=1"]
    processes = [
        subprocess.Popen([*command, "--summary", f"c{i}.json"], cwd=workdir, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [o[1][-2000:] for o in outputs]
    summaries = [json.loads((workdir / f"c{i}.json").read_text()) for i in range(2)]
    assert all(s["metrics"]["b.total"] == 2.0 for s in summaries)
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    for summary in summaries:
        assert client.get_run(summary["run_id"]).info.status == "FINISHED"
    entries = [p.name for p in (workdir / ".nlprec" / "cache").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 2  # one entry per step, whoever finished first
    third = nlprec("run", "p.yaml", "--set", "steps.a.with.sleep=1", "--summary", "c3.json", cwd=workdir, check_rc=0)
    assert third.returncode == 0
    assert all(s["cached"] for s in json.loads((workdir / "c3.json").read_text())["steps"].values())

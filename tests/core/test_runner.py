"""Runner behaviour: cache hits and misses, atomicity on failure, resume, --force, MLflow records."""

import importlib
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest
from nlprec.core.cache import StepCache
from nlprec.core.paths import cache_root
from nlprec.core.runner import Runner, StepFailed
from nlprec.core.spec import load_pipeline

PIPELINE = """
name: t
experiment: runner-tests
params: {v: 3}
steps:
  - name: a
    uses: steps_for_tests:write_value
    with: {value: "${params.v}"}
  - name: c
    uses: steps_for_tests:write_value
    with: {value: 10}
  - name: b
    uses: steps_for_tests:add_upstream
    needs: [a, c]
"""


@pytest.fixture()
def env(nlprec_env, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    counter = nlprec_env / "executions.txt"
    monkeypatch.setenv("NLPREC_TEST_COUNTER", str(counter))
    path = nlprec_env / "p.yaml"
    path.write_text(PIPELINE)
    return path, counter


def executed(counter: Path) -> list[str]:
    return counter.read_text().split() if counter.exists() else []


def run(path, overrides=(), **kwargs):
    return Runner().run(load_pipeline(path, list(overrides)), **kwargs)


def test_second_run_reuses_every_step(env):
    path, counter = env
    first = run(path)
    assert first.metrics["b.total"] == 13.0
    assert executed(counter) == ["a", "c"]
    second = run(path)
    assert all(report.cached for report in second.steps.values())
    assert executed(counter) == ["a", "c"]  # nothing ran again
    assert second.metrics == first.metrics


def test_config_change_reruns_only_affected_steps(env):
    path, counter = env
    run(path)
    summary = run(path, ["params.v=4"])
    assert executed(counter) == ["a", "c", "a"]
    assert summary.steps["c"].cached and not summary.steps["a"].cached and not summary.steps["b"].cached
    assert summary.metrics["b.total"] == 14.0


def test_step_source_change_invalidates_cache(nlprec_env, monkeypatch):
    module_dir = nlprec_env / "mods"
    module_dir.mkdir()
    module = module_dir / "changing_step.py"
    source = textwrap.dedent(
        """
        from pydantic import BaseModel
        class C(BaseModel):
            pass
        def step(ctx, cfg: C) -> dict:
            ctx.log_metrics({"m.value": VALUE})
            return {}
        """
    )
    module.write_text("VALUE = 1.0\n" + source)
    monkeypatch.syspath_prepend(str(module_dir))
    path = nlprec_env / "q.yaml"
    path.write_text("name: q\nsteps:\n  - name: s\n    uses: changing_step:step\n")
    assert run(path).metrics["m.value"] == 1.0
    assert run(path).steps["s"].cached
    module.write_text("VALUE = 2.0\n" + source)
    importlib.reload(sys.modules["changing_step"])
    summary = run(path)
    assert not summary.steps["s"].cached
    assert summary.metrics["m.value"] == 2.0


def test_failing_step_leaves_no_cache_entry_and_resume_continues(env):
    path, counter = env
    with pytest.raises(StepFailed, match="planned failure"):
        run(path, ["steps.b.with.fail=true"])
    entries = [row["entry"] for row in StepCache(cache_root()).entries()]
    assert sorted(e.split("-")[0] for e in entries) == ["a", "c"]  # b left nothing behind
    assert not any((cache_root() / ".staging").iterdir())
    summary = run(path)  # resumes: a and c from cache, b runs
    assert executed(counter) == ["a", "c"]
    assert summary.steps["a"].cached and summary.steps["c"].cached and not summary.steps["b"].cached


def test_failure_and_interrupt_mark_mlflow_runs(env):
    path, _ = env
    with pytest.raises(StepFailed):
        run(path, ["steps.b.with.fail=true"])
    with pytest.raises(KeyboardInterrupt):
        run(path, ["steps.b.with.interrupt=true"])
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("runner-tests")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.status for p in parents] == ["FAILED", "KILLED"]
    failed_b = [r for r in runs if r.data.tags.get("nlprec.step") == "b"]
    assert {r.info.status for r in failed_b} == {"FAILED", "KILLED"}
    assert any("planned failure" in r.data.tags.get("error", "") for r in failed_b)


def test_force_reruns_step_and_downstream(env):
    path, counter = env
    run(path)
    summary = run(path, force={"c"})
    assert executed(counter) == ["a", "c", "c"]
    assert summary.steps["a"].cached and not summary.steps["c"].cached and not summary.steps["b"].cached


def test_no_cache_runs_everything(env):
    path, counter = env
    run(path)
    run(path, use_cache=False)
    assert executed(counter) == ["a", "c", "a", "c"]


def test_tracking_parent_children_params_metrics_tags_artifacts(env):
    path, _ = env
    run(path)
    summary = run(path)
    client = mlflow.MlflowClient()
    parent = client.get_run(summary.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["params.v"] == "3"
    assert "git.commit" in parent.data.tags and "version.nlprec-core" in parent.data.tags
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{summary.run_id}'"
    )
    by_step = {c.data.tags["nlprec.step"]: c for c in children}
    assert set(by_step) == {"a", "b", "c"}
    assert all(c.data.tags["cache_hit"] == "true" for c in children)
    assert by_step["a"].data.params["value"] == "3"
    assert by_step["b"].data.metrics["total"] == 13.0
    artifacts = {a.path for a in client.list_artifacts(summary.run_id)}
    assert {"pipeline", "summary.json"} <= artifacts
    history = client.get_metric_history(summary.steps["b"].run_id, "curve.loss")
    assert len(history) == 1  # a cached child logs the final values, not the curve
    first_b = client.search_runs(
        [parent.info.experiment_id], filter_string="tags.nlprec.step = 'b' and tags.cache_hit = 'false'"
    )[0]
    assert [m.value for m in client.get_metric_history(first_b.info.run_id, "curve.loss")] == [1.0, 0.5]


def test_demo_pipeline_searches_repeats_compares_and_registers(nlprec_env):
    from nlprec.core.models import resolve

    repo = Path(__file__).resolve().parents[2]
    summary = Runner().run(load_pipeline(repo / "pipelines" / "core-demo.yaml", ["params.n=60"]))
    metrics = summary.metrics
    assert metrics["bow.accuracy"] > 0.5 and metrics["bow.accuracy.n"] == 3
    assert {"bow.accuracy.std", "bow.accuracy.ci95"} <= set(metrics)
    assert {"bow.accuracy.delta_vs_bow_first2", "bow.accuracy.p_vs_bow_first2"} <= set(metrics)
    assert summary.steps["bow"].selected is not None and len(summary.steps["bow"].trials) == 4
    version = mlflow.MlflowClient().get_model_version_by_alias("core-demo", "champion")
    assert version.run_id in {r.run_id for r in summary.steps["bow"].seeds.values()}  # trials register nothing
    local = resolve("models:/core-demo@champion")
    assert (local / "model.json").exists()


def test_never_cached_step_runs_every_time_and_the_rest_is_reused(nlprec_env, monkeypatch):
    """A step acting outside its outputs (promotion) must act again: a hit would only replay it."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    counter = nlprec_env / "executions.txt"
    monkeypatch.setenv("NLPREC_TEST_COUNTER", str(counter))
    path = nlprec_env / "never.yaml"
    path.write_text(textwrap.dedent("""
        name: never
        experiment: runner-tests
        steps:
          - name: a
            uses: steps_for_tests:write_value
          - name: act
            uses: steps_for_tests:write_value_always
            needs: [a]
            with: {value: 2}
    """))
    run(path)
    second = run(path)
    assert executed(counter) == ["a", "act", "act"]
    assert second.steps["a"].cached and not second.steps["act"].cached
    assert second.steps["act"].result["value"] == 2

"""Studies: search with selection on validation, seeds with intervals, paired comparison, budgets."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pytest
from nlprec.core.cache import StepCache
from nlprec.core.errors import PipelineError
from nlprec.core.paths import cache_root
from nlprec.core.runner import Runner
from nlprec.core.spec import SearchSpec, load_pipeline
from nlprec.core.stats import holm, paired_randomization_test, seed_statistics
from nlprec.core.study import average_over_seeds, compare_systems

TESTS = Path(__file__).parent

SEARCHED = """
name: study
experiment: study-tests
seeds: [0, 1, 2]
report: {metrics: [score], reference: s}
steps:
  - name: data
    uses: study_steps:data
  - name: s
    uses: study_steps:scored
    needs: [data]
    with: {x: 0.0}
    search:
      space: {x: [1.0, 2.0, 3.0]}
      metric: s.score
"""

COMPARED = """
name: compared
seeds: [0, 1, 2]
steps:
  - name: data
    uses: study_steps:data
  - name: reference
    uses: study_steps:scored
    needs: [data]
    with: {system: ref, noise: 0.3}
  - name: better
    uses: study_steps:scored
    needs: [data]
    with: {system: better, shift: 0.1, noise: 0.3}
  - name: same
    uses: study_steps:scored
    needs: [data]
    with: {system: same, noise: 0.3}
  - name: compare
    uses: nlprec.core.study:compare
    needs: [reference, better, same]
    with: {reference: ref, resamples: 2000}
"""


@pytest.fixture()
def study(nlprec_env, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    record = nlprec_env / "evaluations.jsonl"
    monkeypatch.setenv("NLPREC_TEST_EVALUATIONS", str(record))

    def write(body: str, name: str = "p.yaml") -> Path:
        path = nlprec_env / name
        path.write_text(textwrap.dedent(body))
        return path

    def evaluations() -> list[dict]:
        return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []

    return write, evaluations


def run(path, overrides=(), track=False, **kwargs):
    return Runner(track=track).run(load_pipeline(path, list(overrides)), **kwargs)


# ---------------------------------------------------------------- search


def test_search_scores_test_only_for_the_selected_configuration(study, nlprec_env):
    write, evaluations = study
    summary = run(write(SEARCHED), summary_path=nlprec_env / "s.json")
    seen = evaluations()
    trials = [e for e in seen if e["split"] == "validation"]
    tested = [e for e in seen if e["split"] == "test"]
    assert sorted((e["x"], e["seed"]) for e in trials) == [(x, s) for x in (1.0, 2.0, 3.0) for s in (0, 1, 2)]
    assert sorted((e["x"], e["seed"]) for e in tested) == [(2.0, 0), (2.0, 1), (2.0, 2)]  # never x=1 or x=3
    report = summary.steps["s"]
    assert report.selected == {"x": 2.0}
    assert [t["values"] for t in report.trials] == [{"x": 1.0}, {"x": 2.0}, {"x": 3.0}]
    assert report.trials[1]["value"] == pytest.approx(0.01)  # mean over seeds of 0.00, 0.01, 0.02
    written = json.loads((nlprec_env / "s.json").read_text())
    assert written["steps"]["s"]["selected"] == {"x": 2.0}
    first = written["steps"]["s"]["trials"][0]
    assert first["seconds"] >= 0  # the trial's wall time over its seeds
    assert {k: v for k, v in first.items() if k != "seconds"} == {
        "values": {"x": 1.0}, "value": pytest.approx(-0.99), "by_seed": {"0": -1.0, "1": -0.99, "2": pytest.approx(-0.98)}}
    assert written["steps"]["s"]["search"] == {"metric": "s.score", "direction": "maximize", "method": "grid"}
    assert written["seeds"] == [0, 1, 2]
    assert written["report"] == {"metrics": ["score"], "reference": "s"}


def test_trials_cannot_see_test_outputs(study):
    write, evaluations = study
    run(write(SEARCHED))
    for evaluation in evaluations():
        if evaluation["split"] == "validation":
            assert evaluation["inputs"] == ["train", "units", "validation"]
        else:
            assert evaluation["inputs"] == ["test", "test_labels", "train", "units", "validation"]


def test_minimize_picks_the_lowest_first_on_ties(study):
    write, evaluations = study
    summary = run(write(SEARCHED.replace("metric: s.score", "metric: s.score\n      direction: minimize")))
    assert summary.steps["s"].selected == {"x": 1.0}  # x=1 and x=3 tie at -1 (+ 0.01 * seed): the first wins
    assert {e["x"] for e in evaluations() if e["split"] == "test"} == {1.0}


def test_trial_and_seed_cache_keys(study):
    write, evaluations = study
    path = write(SEARCHED)
    first = run(path)
    keys = {seed: report.key for seed, report in first.steps["s"].seeds.items()}
    assert len(set(keys.values())) == 3  # seeds give distinct keys
    entries = [row["entry"] for row in StepCache(cache_root()).entries() if row["entry"].startswith("s-")]
    assert len(entries) == 3 * 3 + 3  # 3 candidates x 3 seeds on validation, and the x=2 test runs apart
    count = len(evaluations())
    second = run(path)
    assert len(evaluations()) == count  # every trial and every test run came from the cache
    assert second.steps["s"].cached and second.steps["s"].selected == {"x": 2.0}
    plain = run(write(SEARCHED.replace("with: {x: 0.0}", "with: {x: 2.0}").split("    search:")[0], "plain.yaml"))
    assert {s: r.key for s, r in plain.steps["s"].seeds.items()} == keys  # the test run is the plain run
    assert len(evaluations()) == count


def test_search_metric_that_is_not_logged_is_a_user_error(study):
    write, _ = study
    from nlprec.core.errors import UserError
    from nlprec.core.runner import StepFailed

    with pytest.raises(StepFailed) as caught:
        run(write(SEARCHED.replace("metric: s.score", "metric: s.nope")))
    assert isinstance(caught.value.cause, UserError)
    assert "s.nope" in str(caught.value.cause) and "s.score" in str(caught.value.cause)


def test_trials_are_nested_runs_under_a_search_run(study):
    write, _ = study
    summary = run(write(SEARCHED.replace("seeds: [0, 1, 2]", "seeds: [0, 1]")), track=True)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("study-tests")
    runs = client.search_runs([experiment.experiment_id])
    search = [r for r in runs if r.data.tags.get("nlprec.search") == "true"]
    assert len(search) == 1 and search[0].data.tags["mlflow.parentRunId"] == summary.run_id
    assert search[0].data.params["selected.x"] == "2.0"
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == search[0].info.run_id]
    assert len(trials) == 6
    assert {r.data.tags["nlprec.split"] for r in trials} == {"validation"}
    assert all("s.score" in r.data.metrics for r in trials)
    finals = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == summary.run_id
              and r.data.tags.get("nlprec.step") == "s" and "nlprec.search" not in r.data.tags]
    assert sorted(r.data.tags["nlprec.seed"] for r in finals) == ["0", "1"]
    assert {r.data.tags["nlprec.split"] for r in finals} == {"test"}
    parent = client.get_run(summary.run_id)
    assert parent.data.metrics["s.score.n"] == 2


def test_random_search_draws_distinct_reproducible_candidates():
    spec = SearchSpec(space={"a": [1, 2, 3, 4], "b": ["x", "y", "z"]}, method="random", trials=5, metric="m")
    drawn = spec.candidates(seed=7)
    assert len(drawn) == 5 and len({json.dumps(c, sort_keys=True) for c in drawn}) == 5
    assert drawn == spec.candidates(seed=7)
    assert all(c["a"] in (1, 2, 3, 4) and c["b"] in ("x", "y", "z") for c in drawn)
    everything = SearchSpec(space={"a": [1, 2]}, method="random", trials=9, metric="m").candidates(seed=0)
    assert everything == [{"a": 1}, {"a": 2}]


# ---------------------------------------------------------------- seeds


def test_seed_statistics_match_a_hand_computation(study):
    write, _ = study
    summary = run(write(SEARCHED))
    metrics = summary.metrics
    # the selected x=2 scores 0.00, 0.01, 0.02 on seeds 0, 1, 2: mean 0.01, sample std 0.01,
    # ci95 = t(0.975, df=2) * 0.01 / sqrt(3) = 4.302652729911275 * 0.01 / 1.7320508075688772
    assert metrics["s.score"] == pytest.approx(0.01)
    assert metrics["s.score.std"] == pytest.approx(0.01)
    assert metrics["s.score.ci95"] == pytest.approx(4.302652729911275 * 0.01 / math.sqrt(3))
    assert metrics["s.score.n"] == 3


def test_seed_statistics_function():
    assert seed_statistics([2.0]) == {"mean": 2.0, "n": 1}
    stats = seed_statistics([1.0, 2.0, 6.0])
    assert stats["mean"] == 3.0 and stats["n"] == 3
    assert stats["std"] == pytest.approx(math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 2))
    assert stats["ci95"] == pytest.approx(4.302652729911275 * stats["std"] / math.sqrt(3))


# ---------------------------------------------------------------- comparison


def test_planted_difference_is_significant_and_a_null_one_is_not(study, nlprec_env):
    write, _ = study
    summary = run(write(COMPARED), summary_path=nlprec_env / "s.json")
    metrics = summary.metrics
    assert metrics["better.score.delta_vs_ref"] == pytest.approx(0.1, abs=0.05)
    assert metrics["better.score.p_vs_ref"] < 0.05
    assert metrics["same.score.p_vs_ref"] > 0.05
    assert abs(metrics["same.score.delta_vs_ref"]) < 0.05
    outputs = summary.steps["compare"].result
    table = Path(outputs["table"]).read_text()
    assert "**ref** (reference)" in table and "| better |" in table
    assert Path(outputs["plot"]).stat().st_size > 0
    rows = json.loads(Path(outputs["json"]).read_text())["rows"]
    assert {r["system"] for r in rows} == {"ref", "better", "same"} and all(r["seeds"] == 3 for r in rows)


def test_unit_scores_are_averaged_over_seeds_before_the_test():
    by_seed = {0: {"a": 1.0, "b": 0.0}, 1: {"a": 0.0, "b": 0.0}, 2: {"a": 0.5, "b": 1.0}}
    assert average_over_seeds("s", "m", by_seed) == {"a": 0.5, "b": pytest.approx(1 / 3)}
    scores = {("ref", "m"): {0: {"a": 0.0, "b": 0.0}}, ("s", "m"): by_seed}
    rows = compare_systems(scores, "ref", None, resamples=1000, seed=0)
    row = next(r for r in rows if r["system"] == "s")
    assert row["delta"] == pytest.approx((0.5 + 1 / 3) / 2) and row["seeds"] == 3
    with pytest.raises(Exception, match="same for every seed"):
        average_over_seeds("s", "m", {0: {"a": 1.0}, 1: {"b": 1.0}})


def test_paired_randomization_test_exact_and_planted():
    # differences (1, 0, 1): of the 8 sign patterns, 4 give |mean| >= 2/3, so p = 0.5
    assert paired_randomization_test([1, 0, 1], [0, 0, 0], resamples=10_000) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    base = rng.normal(size=300)
    assert paired_randomization_test(base + 0.3 + rng.normal(0, 0.5, 300), base) < 0.001
    assert paired_randomization_test(base, base) == 1.0


def test_holm_correction():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.04, 0.001, 0.5]) == pytest.approx([0.08, 0.003, 0.5])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


# ---------------------------------------------------------------- budget and report


def test_max_seconds_reaches_the_step_and_overruns_are_marked(study, nlprec_env):
    write, _ = study
    body = """
    name: budget
    steps:
      - name: b
        uses: study_steps:budget
        max_seconds: 30
      - name: c
        uses: study_steps:budget
      - name: late
        uses: study_steps:budget
        with: {sleep: 0.2}
        max_seconds: 0.05
    """
    summary = run(write(body), summary_path=nlprec_env / "s.json")
    limit, left = summary.steps["b"].result["max_seconds"], summary.steps["b"].result["time_left"]
    assert limit == 30 and 0 < left <= 30
    assert summary.steps["c"].result == {"max_seconds": None, "time_left": None}
    assert summary.steps["late"].result["time_left"] == 0.0
    steps = json.loads((nlprec_env / "s.json").read_text())["steps"]
    assert steps["late"]["over_budget"] is True and "over_budget" not in steps["b"]


def test_report_block_reaches_the_summary(study, nlprec_env):
    write, _ = study
    run(write(SEARCHED.replace("seeds: [0, 1, 2]", "seeds: [0]")), summary_path=nlprec_env / "s.json")
    written = json.loads((nlprec_env / "s.json").read_text())
    assert written["report"] == {"metrics": ["score"], "reference": "s"}
    assert written["metrics"]["s.score.n"] == 1 and "s.score.std" not in written["metrics"]


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("replace", "key", "words"),
    [
        ("space: {x: [1.0, 2.0, 3.0]}", "steps.s.search.space.y", "unknown key"),
        ("space: {x: []}", "steps.s.search.space.x", "non-empty list"),
        ("space: {x: [1.0, oops]}", "steps.s.search.space.x[1]", "invalid config"),
        ("space: {x: 3}", "steps.s.search.space.x", "list"),
        ("space: {x: [1.0]}\n      method: random", "steps.s.search", "needs trials"),
        ("space: {x: [1.0]}\n      trials: 2", "steps.s.search", "trials is for method random"),
        ("space: {x: [1.0]}\n      method: bayes", "steps.s.search.method", "grid"),
        ("space: {x: [1.0]}\n      direction: up", "steps.s.search.direction", "maximize"),
    ],
)
def test_invalid_search_spaces_name_file_and_key(study, replace, key, words):
    write, _ = study
    body = SEARCHED.replace("space: {x: [1.0, 2.0, 3.0]}", replace)
    if key.endswith(".y"):
        body = SEARCHED.replace("space: {x: [1.0, 2.0, 3.0]}", "space: {y: [1.0]}")
    path = write(body)
    with pytest.raises(PipelineError) as caught:
        load_pipeline(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and key in message and words in message, message


def test_invalid_search_space_exits_2_from_the_cli(study, nlprec_env):
    write, _ = study
    path = write(SEARCHED.replace("space: {x: [1.0, 2.0, 3.0]}", "space: {x: [1.0, oops]}"))
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    result = subprocess.run([sys.executable, "-m", "nlprec.core.cli", "run", str(path), "--no-track"],
                            cwd=nlprec_env, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert str(path) in result.stderr and "steps.s.search.space.x[1]" in result.stderr


def test_searching_a_step_that_runs_across_seeds_is_rejected(study):
    write, _ = study
    body = SEARCHED + "  - name: c\n    uses: nlprec.core.study:compare\n    needs: [s]\n    with: {reference: s}\n" \
        "    search: {space: {resamples: [100, 200]}, metric: c.x}\n"
    with pytest.raises(PipelineError, match="steps.c.search: .*across seeds"):
        load_pipeline(write(body))


@pytest.mark.parametrize(
    ("replace", "key"),
    [("report: {metrics: [score], reference: s}", "report.metrics"), ("seeds: [0, 1, 2]", "seeds")],
)
def test_invalid_report_and_seeds(study, replace, key):
    write, _ = study
    bad = {"report.metrics": "report: {metrics: [], reference: s}", "seeds": "seeds: [1, 1]"}[key]
    with pytest.raises(PipelineError, match=key.replace(".", r"\.")):
        load_pipeline(write(SEARCHED.replace(replace, bad)))

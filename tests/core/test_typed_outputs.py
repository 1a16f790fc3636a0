"""Typed step outputs, `${steps.<step>.<field>}` references (with `??` fallbacks) and StepSkipped.

The step functions below are imported by the pipelines as `test_typed_outputs:<fn>`.
"""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from nlprec.core.errors import PipelineError
from nlprec.core.runner import Runner
from nlprec.core.spec import load_pipeline
from nlprec.core.step import StepOutput, StepSkipped
from pydantic import BaseModel, ConfigDict

TESTS = Path(__file__).resolve().parent


# ---------------------------------------------------------------- steps used by the pipelines


class CorpusConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    words: int = 3
    skip: bool = False


class CorpusOutput(StepOutput):
    path: Path
    size: int
    test: Path | None = None  # hidden from search trials


def make_corpus(ctx, cfg: CorpusConfig) -> CorpusOutput:
    if cfg.skip:
        raise StepSkipped("no corpus today")
    path = ctx.output_dir / "corpus.txt"
    path.write_text(" ".join(["word"] * cfg.words))
    return CorpusOutput(path=path, size=cfg.words, test=path)


class CountConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    corpus: Path
    expected: int | None = None


class CountOutput(StepOutput):
    words: int
    upstream: list[str]


def count_words(ctx, cfg: CountConfig) -> CountOutput:
    words = len(cfg.corpus.read_text().split())
    if cfg.expected is not None:
        assert words == cfg.expected
    upstream = sorted(f"{name}:{type(output).__name__}" for name, output in ctx.inputs.items())
    ctx.log_metrics({"count.words": float(words)})
    return CountOutput(words=words, upstream=upstream)


class LegacyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = 2


class TotalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    corpora: list[Path]


def total_words(ctx, cfg: TotalConfig) -> dict:
    return {"words": sum(len(path.read_text().split()) for path in cfg.corpora)}


def legacy_dict(ctx, cfg: LegacyConfig) -> dict:
    path = ctx.output_dir / "legacy.txt"
    path.write_text(" ".join(["w"] * cfg.n))
    return {"path": str(path), "n": cfg.n}


def old_skip(ctx, cfg: LegacyConfig) -> dict:
    return {"skipped": "the old way"}


# ---------------------------------------------------------------- helpers


@pytest.fixture()
def home(nlprec_env, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    return nlprec_env


def loaded(name: str):
    """A class as the runner imported it (`uses:` imports this file as the module test_typed_outputs)."""
    return getattr(importlib.import_module("test_typed_outputs"), name)


def write(home: Path, body: str) -> Path:
    path = home / "p.yaml"
    path.write_text("name: typed\nexperiment: typed-tests\nsteps:\n" + body)
    return path


def run(path: Path, overrides=()):
    return Runner(track=False).run(load_pipeline(path, list(overrides)))


CHAIN = """
  - name: corpus
    uses: test_typed_outputs:make_corpus
    with: {words: 4}
  - name: count
    uses: test_typed_outputs:count_words
    with: {corpus: "${steps.corpus.path}"}
"""


# ---------------------------------------------------------------- tests


def test_reference_resolves_and_generates_the_dependency(home):
    pipeline = load_pipeline(write(home, CHAIN))
    count = next(s for s in pipeline.steps if s.spec.name == "count")
    assert count.spec.needs == ["corpus"]
    summary = run(home / "p.yaml")
    result = summary.steps["count"].result
    assert isinstance(result, loaded("CountOutput")) and result.words == 4
    assert result.upstream == ["corpus:CorpusOutput"]  # downstream steps get the validated model
    assert isinstance(summary.steps["corpus"].result, loaded("CorpusOutput"))
    assert summary.steps["corpus"].result.path.read_text() == "word word word word"


def test_typed_outputs_round_trip_through_the_cache(home):
    path = write(home, CHAIN)
    first = run(path)
    second = run(path)
    assert [r.cached for r in second.steps.values()] == [True, True]
    for name in ("corpus", "count"):
        assert type(second.steps[name].result) is type(first.steps[name].result)
        assert second.steps[name].result == first.steps[name].result
    assert second.steps["corpus"].result.path.is_file()  # paths point into the cache entry


def test_fallback_is_taken_when_the_primary_step_is_skipped(home):
    path = write(home, """
  - name: tuned
    uses: test_typed_outputs:make_corpus
    with: {skip: true}
  - name: plain
    uses: test_typed_outputs:make_corpus
    with: {words: 5}
  - name: count
    uses: test_typed_outputs:count_words
    with: {corpus: "${steps.tuned.path ?? steps.plain.path}", expected: 5}
""")
    summary = run(path)
    assert summary.steps["tuned"].status == "skipped"
    assert summary.to_json()["steps"]["tuned"]["skipped"] == "no corpus today"
    assert summary.steps["count"].result.words == 5
    assert summary.steps["count"].result.upstream == ["plain:CorpusOutput"]  # the skipped step is absent
    again = run(path)  # a skip is cached like any result
    assert again.steps["tuned"].status == "skipped" and again.steps["tuned"].cached
    assert again.steps["count"].result.words == 5


def test_a_hard_reference_to_a_skipped_step_skips_the_dependant_with_the_reason(home):
    path = write(home, CHAIN.replace("with: {words: 4}", "with: {skip: true}"))
    summary = run(path)
    steps = summary.to_json()["steps"]
    assert steps["corpus"] == {**steps["corpus"], "status": "skipped", "skipped": "no corpus today"}
    assert steps["count"]["status"] == "skipped"
    assert "${steps.corpus.path}" in steps["count"]["skipped"] and "no corpus today" in steps["count"]["skipped"]


def test_dict_steps_keep_working_and_can_be_referenced(home):
    path = write(home, CHAIN.replace("make_corpus", "legacy_dict").replace("words: 4", "n: 6"))
    summary = run(path)
    assert summary.steps["corpus"].result == {"path": summary.steps["corpus"].result["path"], "n": 6}
    assert summary.steps["count"].result.words == 6
    assert summary.steps["count"].result.upstream == ["corpus:dict"]


def test_the_magic_skipped_key_is_refused(home):
    path = write(home, """
  - name: old
    uses: test_typed_outputs:old_skip
""")
    with pytest.raises(Exception, match="StepSkipped"):
        run(path)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("${steps.corpsu.path}", "no step 'corpsu' (steps: corpus, count)"),
        ("${steps.corpus.pth}", "step 'corpus' has no output 'pth' (CorpusOutput: path, size, test)"),
        ("${steps.count.words}", "step 'count' is not above 'count'"),
        ("${steps.corpus.path ?? steps.plian.path}", "no step 'plian'"),
        ("${steps.corpus..path}", "'steps.corpus..path' is not a step reference"),
        ("dir/${steps.corpus.path}", "a step reference must be the whole value"),
    ],
)
def test_a_bad_reference_fails_validation_naming_the_key(home, value, message):
    path = write(home, CHAIN.replace('"${steps.corpus.path}"', f'"{value}"'))
    with pytest.raises(PipelineError) as error:
        load_pipeline(path)
    assert f"p.yaml: steps.count.with.corpus: {message}" in str(error.value)


def test_a_misspelt_reference_exits_2_with_one_line_through_the_cli(home):
    write(home, CHAIN.replace("steps.corpus.path", "steps.corpus.pth"))
    env = {**os.environ, "NLPREC_HOME": str(home), "PYTHONPATH": str(TESTS)}
    result = subprocess.run([sys.executable, "-m", "nlprec.core.cli", "run", "p.yaml", "--no-track"], cwd=home,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "p.yaml: steps.count.with.corpus: step 'corpus' has no output 'pth'" in lines[0]


def test_a_reference_inside_a_list_is_resolved(home):
    path = write(home, CHAIN + """
  - name: total
    uses: test_typed_outputs:total_words
    with: {corpora: ["${steps.corpus.path}", "${steps.corpus.path}"]}
""")
    assert load_pipeline(path).steps[-1].spec.needs == ["corpus"]
    assert run(path).steps["total"].result == {"words": 8}


class MaybeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    corpus: CorpusOutput | None = None


def maybe_count(ctx, cfg: MaybeConfig) -> dict:
    return {"words": None if cfg.corpus is None else cfg.corpus.size}


def test_null_fallback_gives_none_and_a_whole_output_reference_validates_as_the_model(home):
    body = """
  - name: corpus
    uses: test_typed_outputs:make_corpus
    with: {words: 7, skip: SKIP}
  - name: maybe
    uses: test_typed_outputs:maybe_count
    with: {corpus: "${steps.corpus ?? null}"}
"""
    assert run(write(home, body.replace("SKIP", "false"))).steps["maybe"].result == {"words": 7}
    assert run(write(home, body.replace("SKIP", "true"))).steps["maybe"].result == {"words": None}


class PeekConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    test: Path | None = None
    corpus: CorpusOutput
    knob: int = 0


def peek(ctx, cfg: PeekConfig) -> dict:
    ctx.log_metrics({"peek.saw_test": float(cfg.test is not None), "peek.saw_whole_test": float(cfg.corpus.test is not None)})
    return {}


def test_search_trials_resolve_references_without_test_data(home):
    path = write(home, CHAIN + """
  - name: peek
    uses: test_typed_outputs:peek
    with: {test: "${steps.corpus.test}", corpus: "${steps.corpus}"}
    search: {space: {knob: [0, 1]}, metric: peek.saw_test, direction: maximize}
""")
    report = run(path).steps["peek"]
    assert [trial["value"] for trial in report.trials] == [0.0, 0.0]  # trials never see test data
    assert report.metrics == {"peek.saw_test": 1.0, "peek.saw_whole_test": 1.0}  # the final run does

"""Pipeline validation: every user error names the file, the key and what was expected."""

import textwrap

import pytest
from nlprec.core.errors import PipelineError
from nlprec.core.spec import apply_overrides, interpolate, load_pipeline


@pytest.fixture(autouse=True)
def _importable_steps(monkeypatch):
    import pathlib

    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parent))


def write(tmp_path, body: str):
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(body))
    return path


GOOD = """
name: t
params: {v: 3}
steps:
  - name: b
    uses: steps_for_tests:add_upstream
    needs: [a]
  - name: a
    uses: steps_for_tests:write_value
    with: {value: "${params.v}"}
"""


def test_orders_steps_by_needs_and_keeps_types(tmp_path):
    pipeline = load_pipeline(write(tmp_path, GOOD))
    assert [s.spec.name for s in pipeline.steps] == ["a", "b"]
    assert pipeline.steps[0].config.value == 3  # a whole-string reference keeps the int


def test_override_with_type_coercion(tmp_path):
    pipeline = load_pipeline(write(tmp_path, GOOD), ["params.v=7", "steps.a.with.sleep=0.5"])
    assert pipeline.steps[0].config.value == 7
    assert pipeline.steps[0].config.sleep == 0.5


@pytest.mark.parametrize(
    ("body", "key", "words"),
    [
        (GOOD.replace("params:", "parms:"), "parms", "unknown key"),
        (GOOD.replace("needs: [a]", "needs: [zzz]"), "steps.b.needs", "no step named 'zzz'"),
        (GOOD.replace('{value: "${params.v}"}', "{value: [1]}"), "steps.a.with.value", "integer"),
        (GOOD.replace('{value: "${params.v}"}', "{valu: 1}"), "steps.a.with.valu", "unknown key"),
        (GOOD.replace("write_value", "nope"), "steps.a.uses", "has no function 'nope'"),
        (GOOD.replace("steps_for_tests:write", "no_such_module:write"), "steps.a.uses", "cannot import"),
        (GOOD.replace('with: {value: "${params.v}"}', "needs: [b]"), "steps.needs", "cycle"),
        (GOOD.replace("${params.v}", "${params.w}"), "steps.a.with.value", "names no pipeline param"),
        (GOOD.replace("name: t", "name: 't x'"), "name", "pattern"),
        ("name: t\nsteps: []\n", "steps", "at least 1"),
        ("- just a list\n", "<top level>", "mapping"),
        ("name: [unclosed\n", "line", "not valid YAML"),
        (GOOD.replace("write_value", "no_config_annotation"), "steps.a.uses", "pydantic model"),
    ],
)
def test_user_errors_name_file_key_and_expectation(tmp_path, body, key, words):
    path = write(tmp_path, body)
    with pytest.raises(PipelineError) as caught:
        load_pipeline(path)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert key in message, message
    assert words in message, message


def test_duplicate_step_names(tmp_path):
    body = GOOD.replace("name: b", "name: a").replace("needs: [a]", "needs: []")
    with pytest.raises(PipelineError, match="duplicate step name 'a'"):
        load_pipeline(write(tmp_path, body))


def test_missing_file_is_a_pipeline_error(tmp_path):
    with pytest.raises(PipelineError, match="no such pipeline file"):
        load_pipeline(tmp_path / "absent.yaml")


def test_environment_interpolation(monkeypatch):
    monkeypatch.setenv("NLPREC_TEST_DIR", "/data/x")
    assert interpolate("${NLPREC_TEST_DIR}/beir", {}, "f", "k") == "/data/x/beir"
    assert interpolate("${NLPREC_UNSET_VAR:-fallback}", {}, "f", "k") == "fallback"
    with pytest.raises(PipelineError, match="not set in the environment"):
        interpolate("${NLPREC_UNSET_VAR}", {}, "f", "k")


def test_bad_override_is_named():
    with pytest.raises(PipelineError, match="key.path=value"):
        apply_overrides({}, ["novalue"], "f.yaml")
    with pytest.raises(PipelineError, match="no step of that name"):
        apply_overrides({"steps": [{"name": "a"}]}, ["steps.zz.with.x=1"], "f.yaml")

"""The step cache key covers the code a step can reach, and a cache hit still registers its model.

A throwaway package `nlprec.cachetoy` (steps in one module, the helper they call in another) and a
second package `nlprec.othertoy` are written under tmp_path and put on sys.path; nlprec is a
namespace package, so they join it like any installed nlprec package.
"""

import importlib
import sys
from pathlib import Path

import mlflow
import pytest
from nlprec.core.runner import Runner
from nlprec.core.spec import load_pipeline

STEPS = '''
import json
import os
from pathlib import Path

from pydantic import BaseModel

from nlprec.cachetoy.helpers import scale


class Config(BaseModel):
    value: int = 2
    publish: bool = False


def compute(ctx, cfg: Config) -> dict:
    with open(os.environ["CACHETOY_COUNTER"], "a") as handle:
        handle.write("ran\\n")
    out = ctx.output_dir / "model"
    out.mkdir()
    (out / "value.json").write_text(json.dumps({"value": scale(cfg.value)}))
    ctx.log_metrics({"toy.value": float(scale(cfg.value))})
    if cfg.publish:
        ctx.log_model(out, name="cachetoy-model", flavor="dir")
    return {"model": str(out)}
'''

PIPELINE = """
name: cachetoy
experiment: cache-key-tests
steps:
  - name: compute
    uses: nlprec.cachetoy.steps:compute
    with: {value: 3, publish: REGISTER}
"""


@pytest.fixture()
def toy(nlprec_env, tmp_path, monkeypatch):
    root = tmp_path / "toysrc"
    package = root / "nlprec" / "cachetoy"
    package.mkdir(parents=True)
    (package / "steps.py").write_text(STEPS)
    (package / "helpers.py").write_text("def scale(value):\n    return value * 10\n")
    other = root / "nlprec" / "othertoy"
    other.mkdir()
    (other / "unrelated.py").write_text("CONSTANT = 1\n")
    monkeypatch.syspath_prepend(str(root))
    counter = tmp_path / "counter.txt"
    monkeypatch.setenv("CACHETOY_COUNTER", str(counter))
    yield package, other, counter
    for name in [m for m in sys.modules if m.startswith("nlprec.cachetoy")]:
        del sys.modules[name]


def run_toy(tmp_path: Path, publish: bool = False):
    path = tmp_path / "cachetoy.yaml"
    path.write_text(PIPELINE.replace("REGISTER", "true" if publish else "false"))
    for name in [m for m in sys.modules if m.startswith("nlprec.cachetoy")]:
        del sys.modules[name]  # a new invocation imports the code as it is on disk now
    importlib.invalidate_caches()
    return Runner().run(load_pipeline(path))


def runs(counter: Path) -> int:
    return len(counter.read_text().split()) if counter.exists() else 0


def test_editing_a_helper_module_reruns_the_step(toy, tmp_path):
    package, _, counter = toy
    assert run_toy(tmp_path).metrics["toy.value"] == 30.0
    assert run_toy(tmp_path).steps["compute"].cached
    assert runs(counter) == 1

    (package / "helpers.py").write_text("def scale(value):\n    return value * 100\n")
    edited = run_toy(tmp_path)
    assert not edited.steps["compute"].cached
    assert edited.metrics["toy.value"] == 300.0
    assert runs(counter) == 2


def test_editing_another_package_keeps_the_cache(toy, tmp_path):
    _, other, counter = toy
    run_toy(tmp_path)
    (other / "unrelated.py").write_text("CONSTANT = 2\n")
    assert run_toy(tmp_path).steps["compute"].cached
    assert runs(counter) == 1


def test_a_cache_hit_registers_the_model_it_produced(toy, tmp_path):
    _, _, counter = toy
    run_toy(tmp_path, publish=True)
    client = mlflow.MlflowClient()
    assert len(client.search_model_versions("name='cachetoy-model'")) == 1

    second = run_toy(tmp_path, publish=True)
    assert second.steps["compute"].cached and runs(counter) == 1
    versions = client.search_model_versions("name='cachetoy-model'")
    assert len(versions) == 2
    challenger = client.get_model_version_by_alias("cachetoy-model", "challenger")
    assert int(challenger.version) == max(int(v.version) for v in versions)
    assert int(client.get_model_version_by_alias("cachetoy-model", "champion").version) == 1  # no evidence, no move

"""The registry: new versions are @challenger, @champion moves only with evidence, smoke runs never
promote, and `nlprec models` lists, compares and promotes by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import pytest
from nlprec.core import models_cli
from nlprec.core.registry import PromoteRule, detect_flavor, is_smoke, promote_by_evidence
from nlprec.core.runner import Runner
from nlprec.core.spec import load_pipeline

STEPS = '''
import json
from pydantic import BaseModel


class Config(BaseModel):
    score: float


def train(ctx, cfg: Config) -> dict:
    out = ctx.output_dir / "model"
    out.mkdir()
    (out / "weights.json").write_text(json.dumps({"score": cfg.score}))
    ctx.log_metrics({"toy.ndcg@10": cfg.score})
    return {"uri": ctx.log_model(out, name="promotoy", flavor="dir"), "model": str(out)}
'''

PIPELINE = """
name: promotoy
experiment: registry-tests
params: {data: toy-data, max_eval_queries: null}
steps:
  - name: train
    uses: nlprec.promotoy.steps:train
    with: {score: 0.5}
  - name: promote
    uses: nlprec.core.registry:promote
    needs: [train]
    with: {name: promotoy, metric: toy.ndcg@10, direction: maximize, min_gain: 0.01}
"""


@pytest.fixture()
def toy(nlprec_env, tmp_path, monkeypatch):
    package = tmp_path / "toysrc" / "nlprec" / "promotoy"
    package.mkdir(parents=True)
    (package / "steps.py").write_text(STEPS)
    monkeypatch.syspath_prepend(str(tmp_path / "toysrc"))
    import nlprec

    monkeypatch.setattr(nlprec, "__path__", [*nlprec.__path__, str(tmp_path / "toysrc" / "nlprec")])
    (tmp_path / "promotoy.yaml").write_text(PIPELINE)
    yield tmp_path / "promotoy.yaml"
    for name in [m for m in sys.modules if m.startswith("nlprec.promotoy")]:
        del sys.modules[name]


def run(pipeline: Path, *overrides: str) -> dict:
    summary = Runner(track=True).run(load_pipeline(pipeline, list(overrides)), use_cache=False)
    return summary


def aliases() -> dict[str, str]:
    return {a: str(v) for a, v in mlflow.MlflowClient().get_registered_model("promotoy").aliases.items()}


def test_champion_moves_only_on_a_sufficient_gain_and_never_in_a_smoke_run(toy):
    run(toy)  # v1: the first version of the name becomes champion
    assert aliases() == {"champion": "1", "challenger": "1"}
    run(toy, "steps.train.with.score=0.505")  # v2: +0.005 < min_gain 0.01
    assert aliases() == {"champion": "1", "challenger": "2"}
    run(toy, "steps.train.with.score=0.9", "params.max_eval_queries=10")  # v3: better, but a smoke run
    assert aliases() == {"champion": "1", "challenger": "3"}
    version = mlflow.MlflowClient().get_model_version("promotoy", "3")
    assert version.tags["nlprec.smoke"] == "true"
    run(toy, "steps.train.with.score=0.6")  # v4: +0.1 over v1 on the same evaluation
    assert aliases() == {"champion": "4", "challenger": "4"}
    run(toy, "steps.train.with.score=0.9", "params.data=other-data")  # v5: another evaluation
    assert aliases() == {"champion": "4", "challenger": "5"}


def test_a_smoke_run_on_an_empty_name_leaves_no_champion(toy):
    run(toy, "params.max_eval_queries=5")
    assert aliases() == {"challenger": "1"}


def test_minimize_direction(nlprec_env, tmp_path):
    client = mlflow.MlflowClient()
    client.create_registered_model("m")
    for _ in range(2):
        client.create_model_version("m", source=str(tmp_path))
    rule = PromoteRule("loss", "minimize", 0.1)
    assert promote_by_evidence(client, "m", "1", rule, 2.0, "eval", smoke=False).promoted
    worse = promote_by_evidence(client, "m", "2", rule, 2.05, "eval", smoke=False)
    assert not worse.promoted and worse.champion == "1" and worse.gain == pytest.approx(-0.05)
    better = promote_by_evidence(client, "m", "2", rule, 1.5, "eval", smoke=False)
    assert better.promoted and better.champion == "2"


@pytest.mark.parametrize(
    ("params", "smoke"),
    [
        ({"max_eval_queries": None, "max_session_len": 50}, False),
        ({"max_eval_queries": 10}, True),
        ({"train_limit": 100}, True),
        ({"smoke": True}, True),
        ({"max_len": 128, "max_tokens": 16384}, False),
    ],
)
def test_is_smoke(params, smoke):
    assert is_smoke(params) is smoke


def test_detect_flavor(tmp_path):
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "manifest.json").write_text(json.dumps({"n_documents": 3}))
    tagger = tmp_path / "tagger"
    tagger.mkdir()
    (tagger / "config.json").write_text(json.dumps({"architectures": ["BertForTokenClassification"]}))
    (tagger / "tokenizer.json").write_text("{}")
    recommender = tmp_path / "online"
    recommender.mkdir()
    (recommender / "meta.json").write_text(json.dumps({"items": [], "popularity": []}))
    assert detect_flavor(engine) == ("search_engine", None)
    assert detect_flavor(tagger) == ("transformers", "token-classification")
    assert detect_flavor(recommender) == ("recommender", None)
    assert detect_flavor(tmp_path) == ("dir", None)


def test_models_cli_lists_compares_and_promotes(toy, capsys):
    run(toy)
    run(toy, "steps.train.with.score=0.505")
    parser = __import__("argparse").ArgumentParser()
    models_cli.add_parser(parser.add_subparsers(dest="command"))

    def cli(*argv: str) -> str:
        assert models_cli.run(parser.parse_args(["models", *argv])) == 0
        return capsys.readouterr().out

    listing = cli("list", "promotoy")
    assert "@champion" in listing and "@challenger" in listing and "toy.ndcg_at_10=0.5050" in listing
    assert "+0.0050" in cli("compare", "promotoy", "@champion", "@challenger")
    assert "version 2" in cli("promote", "promotoy", "@challenger")
    assert aliases()["champion"] == "2"

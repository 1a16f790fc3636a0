"""The demo pipeline end to end through the CLI (tiny settings), then batch inference on its model."""

import json
from pathlib import Path

import pytest
from nlprec.beliefs.__main__ import main as beliefs_main
from nlprec.core import cli

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--set",
    "params.layers=1",
    "--set",
    "params.n_train=8",
    "--set",
    "params.n_eval=4",
    "--set",
    "params.epochs=1",
    "--set",
    "params.flat_pairs=32",
]
MODELS = ("breakpoint", "flat", "hypothesis_only", "majority")


@pytest.mark.slow
def test_demo_pipeline_and_batch_inference(nlprec_env, tmp_path):
    summary_path = tmp_path / "summary.json"
    code = cli.main(
        [
            "run",
            str(ROOT / "pipelines" / "beliefs-demo.yaml"),
            *TINY,
            "--summary",
            str(summary_path),
        ]
    )
    assert code in (0, None)
    metrics = json.loads(summary_path.read_text())["metrics"]
    for model in MODELS:
        for metric in ("prop_acc", "macro_f1", "qa_acc"):
            assert 0.0 <= metrics[f"{model}.{metric}"] <= 1.0
    assert metrics["last_mention.prop_acc"] > metrics["majority.prop_acc"]

    stories = tmp_path / "stories.jsonl"
    stories.write_text(
        json.dumps(
            {
                "story_id": "a",
                "story": "Mary went to the kitchen. Mary went to the garden.",
                "propositions": ["Mary is in the kitchen", "Mary is in the garden"],
            }
        )
        + "\n"
    )
    output = tmp_path / "beliefs.jsonl"
    args = [
        "predict",
        "--model",
        "models:/beliefs-demo@champion",
        "--input",
        str(stories),
        "--output",
        str(output),
    ]
    assert beliefs_main(args) == 0
    row = json.loads(output.read_text().splitlines()[0])
    assert row["story_id"] == "a" and len(row["beliefs"]) == 2 * 2
    first = row["beliefs"][0]
    assert first["label"] in ("true", "false", "unknown")
    assert first["p_true"] + first["p_false"] + first["p_unknown"] == pytest.approx(1.0, abs=1e-4)

    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"story_id": "no-stops", "story": "Mary went home", "propositions": ["x"]})
        + "\n"
    )
    assert (
        beliefs_main(
            [
                "predict",
                "--model",
                "models:/beliefs-demo@champion",
                "--input",
                str(bad),
                "--output",
                str(tmp_path / "bad-out.jsonl"),
            ]
        )
        == 2
    )


def test_babi_pipeline_uses_the_recipe_that_met_the_targets(monkeypatch):
    """beliefs-babi.yaml loads and validates, and both breakpoint steps train with the recipe of
    RESULTS.md's "reader, 360 s training" section (reader, batch 16, warm-up 0.15, time cap)."""
    from nlprec.core.spec import load_pipeline

    monkeypatch.setenv("NLPREC_DATA", "/nonexistent")  # loading does not read the data
    pipeline = load_pipeline(ROOT / "pipelines" / "beliefs-babi.yaml")
    stories = {"train": "train.jsonl", "n_train": 1, "n_validation": 0, "eval_set": "bAbI"}
    # the configs as the runner validates them, ${steps.load} resolved to a stand-in output
    configs = {s.spec.name: s.config_with({}, lambda reference: stories) for s in pipeline.steps}
    for name in ("breakpoint", "breakpoint_bidirectional"):
        cfg = configs[name]
        assert cfg.model.reader == "attention"
        assert (cfg.train.batch_size, cfg.train.frozen_encoder_fraction) == (16, 0.15)
        assert cfg.train.max_seconds == 360
    assert configs["breakpoint_bidirectional"].model.attention == "bidirectional"

    shorter = load_pipeline(ROOT / "pipelines" / "beliefs-babi.yaml", ["params.train_seconds=5"])
    breakpoint = next(s for s in shorter.steps if s.spec.name == "breakpoint")
    assert breakpoint.config_with({}, lambda reference: stories).train.max_seconds == 5

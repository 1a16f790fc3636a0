"""The demo pipeline end to end through the CLI (tiny encoder), then batch inference on its model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nlprec.clinical_longdoc.cli import main as longdoc_main
from nlprec.core import cli
from nlprec.core.spec import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ("long", "head", "head_tail", "chunk_mean")


@pytest.fixture()
def tiny_source(tmp_path, tiny_bert, tokenizer) -> Path:
    """A tiny random BERT with the MiniLM vocabulary, saved like a real model directory."""
    directory = tmp_path / "tiny-bert"
    tiny_bert.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.mark.slow
def test_demo_pipeline_and_batch_inference(nlprec_env, tmp_path, tiny_source):
    summary_path = tmp_path / "summary.json"
    settings = {
        "source": str(tiny_source),
        "n_train": 8,
        "n_test": 4,
        "epochs": 1,
        "max_length": 256,
        "short_length": 64,
    }
    overrides = [
        arg for key, value in settings.items() for arg in ("--set", f"params.{key}={value}")
    ]
    code = cli.main(
        [
            "run",
            str(ROOT / "pipelines" / "longdoc-demo.yaml"),
            *overrides,
            "--summary",
            str(summary_path),
        ]
    )
    assert code in (0, None)
    summary = json.loads(summary_path.read_text())
    for variant in VARIANTS:
        assert 0.0 <= summary["metrics"][f"{variant}.macro_f1"] <= 1.0
    assert summary["steps"]["compare"]["status"] in ("ok", "success", "done", "finished")

    notes = tmp_path / "notes.jsonl"
    rows = [
        {
            "id": "a",
            "text": "HISTORY: stable. FINDINGS: echocardiogram shows reduced ejection fraction.",
        },
        {"id": "b", "text": ""},
    ]
    notes.write_text("".join(json.dumps(r) + "\n" for r in rows))
    output = tmp_path / "labels.jsonl"
    longdoc_main(
        [
            "classify",
            "--model",
            "models:/longdoc-demo@champion",
            "--input",
            str(notes),
            "--output",
            str(output),
        ]
    )
    predicted = [json.loads(line) for line in output.read_text().splitlines()]
    assert [p["id"] for p in predicted] == ["a", "b"]
    assert predicted[0]["label"] in {"cardiology", "gastroenterology", "neurology", "orthopedics"}
    assert predicted[0]["error"] is None and predicted[0]["n_tokens"] > 5
    assert predicted[1]["label"] is None and predicted[1]["error"] == "empty document"


@pytest.mark.parametrize("job", ["mtsamples", "covidqa", "ner"])
def test_real_data_pipelines_validate(job, shared_data, monkeypatch):
    """The GPU-sized pipelines parse, import their steps and validate every config."""
    monkeypatch.setenv("NLPREC_DATA", str(shared_data))
    pipeline = load_pipeline(ROOT / "pipelines" / f"longdoc-{job}.yaml")
    assert len(pipeline.steps) >= 3

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


def _first_sentences(source: Path, target: Path, n: int) -> None:
    """The first ``n`` blank-line-separated sentences of an IOB2 file."""
    blocks = source.read_text(encoding="utf-8").split("\n\n")[:n]
    target.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")


@pytest.mark.slow
def test_ner_pipeline_on_a_user_iob2_folder(nlprec_env, tmp_path, tiny_source, shared_data):
    """A user's IOB2 folder (train / devel / test .tsv) goes in with one --set params.data=...;
    the rest of the overrides only make the run tiny."""
    folder = tmp_path / "my-ner"
    folder.mkdir()
    ncbi = shared_data / "clinical" / "ncbi_disease"
    for name, n in (("train", 24), ("devel", 8), ("test", 8)):
        _first_sentences(ncbi / f"{name}.tsv", folder / f"{name}.tsv", n)
    summary_path = tmp_path / "summary.json"
    settings = {"source": tiny_source, "epochs": 1, "max_tokens": 1024}
    overrides = [a for k, v in settings.items() for a in ("--set", f"params.{k}={v}")]
    pipeline = str(ROOT / "pipelines" / "longdoc-ner.yaml")
    args = ["run", pipeline, "--set", f"params.data={folder}", *overrides, "--set", "seeds=[0]"]
    assert cli.main([*args, "--summary", str(summary_path)]) in (0, None)
    summary = json.loads(summary_path.read_text())
    for system in ("long", "short"):
        assert 0.0 <= summary["metrics"][f"{system}.f1"] <= 1.0
        assert len(summary["steps"][system]["trials"]) == 3  # the learning rates, scored on dev
    assert "long.sentence_f1.p_vs_short" in summary["metrics"]
    tested = [
        json.loads(path.read_text())
        for path in nlprec_env.rglob("unit_scores/short.sentence_f1.json")
    ]
    assert {(t["split"], len(t["scores"])) for t in tested} == {("validation", 8), ("test", 8)}


def _squad(n_articles: int) -> dict:
    """Articles of filler with one answerable question each (a SQuAD json)."""
    data = []
    for a in range(n_articles):
        answer = f"drug number {a}"
        context = "Background text. " * 20 + f"The treatment was {answer}. " + "More text. " * 20
        qa = {"id": f"q{a}", "question": "What was the treatment?",
              "answers": [{"text": answer, "answer_start": context.index(answer)}]}  # fmt: skip
        data.append({"title": f"article {a}", "paragraphs": [{"context": context, "qas": [qa]}]})
    return {"data": data}


@pytest.mark.slow
def test_qa_pipeline_on_a_user_squad_file(nlprec_env, tmp_path, tiny_source):
    """A SQuAD json (split by article) through load_qa -> fine_tune_qa -> compare, tiny and fast."""
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps(_squad(20)))
    summary_path = tmp_path / "summary.json"
    settings = {"data": squad, "source": tiny_source, "epochs": 1, "max_length": 128, "max_tokens": 1024}
    overrides = [a for k, v in settings.items() for a in ("--set", f"params.{k}={v}")]
    narrow = ["--set", "seeds=[0]", "--set", "steps.long.search.space.lr=[0.001]",
              "--set", "steps.sliding_window.search.space.lr=[0.001]",
              "--set", "steps.long.with.attention_window=32", "--set", "steps.compare.with.metrics=[f1]",
              "--set", "steps.sliding_window.with.short_length=64"]  # fmt: skip
    pipeline = str(ROOT / "pipelines" / "longdoc-covidqa.yaml")
    assert cli.main(["run", pipeline, *overrides, *narrow, "--summary", str(summary_path)]) in (0, None)
    summary = json.loads(summary_path.read_text())
    for system in ("long", "sliding_window"):
        assert 0.0 <= summary["metrics"][f"{system}.f1"] <= 1.0
        assert len(summary["steps"][system]["trials"]) == 1
    assert "long.f1.p_vs_sliding_window" in summary["metrics"]

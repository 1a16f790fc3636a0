"""The demo pipeline end to end through the CLI (tiny settings), then batch inference with its student."""

import json

import pytest
from nlprec.clinical_distill import cli as distill_cli
from nlprec.core import cli

TINY = [
    "--set",
    "params.steps=2",
    "--set",
    "params.batch=4",
    "--set",
    "params.max_len=32",
    "--set",
    "params.epochs=1",
    "--set",
    "params.ner_epochs=1",
    "--set",
    "params.small={kind: random, num_layers: 1, hidden_size: 16, num_heads: 2, intermediate_size: 32}",
    "--set",
    "params.fact={kind: factorised, num_layers: 1, embedding_size: 8}",
    "--set",
    "steps.corpus.with.n_generated=20",
    "--set",
    "steps.tasks.with.n_generated_train=8",
    "--set",
    "steps.tasks.with.n_generated_test=8",
    "--set",
    "steps.continual.with.head_warmup_steps=1",
]
MODELS = ["teacher", "student_layers", "student_small", "student_fact", "mlm_only", "random_init"]


@pytest.fixture()
def tiny_teacher(tmp_path, tokenizer, make_bert):
    """A 2-layer, 32-wide BERT with MiniLM's tokenizer: the pipeline's wiring, not MiniLM's cost, is under test."""
    path = tmp_path / "tiny-teacher"
    make_bert(len(tokenizer), hidden=32, layers=2, heads=4).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.slow
def test_demo_pipeline_and_batch_inference(nlprec_env, tmp_path, tiny_teacher):
    summary_path = tmp_path / "summary.json"
    overrides = [*TINY, "--set", f"params.teacher={tiny_teacher}"]
    code = cli.main(
        [
            "run",
            str(_repo() / "pipelines/distill-demo.yaml"),
            *overrides,
            "--summary",
            str(summary_path),
        ]
    )
    assert code == 0
    summary = json.loads(summary_path.read_text())
    assert {name: step["status"] for name, step in summary["steps"].items()} == {
        name: "finished" for name in summary["steps"]
    }
    assert len(summary["steps"]) == 12
    assert summary["metrics"]["tasks.ner.n_dev"] == 4  # generated: a dev split for selection
    metrics = summary["metrics"]
    for model in MODELS:
        for metric in ("ner_f1", "section_acc", "nli_acc", "params", "cpu_ms"):
            assert f"{model}.{metric}" in metrics, f"{model}.{metric}"
        assert 0.0 <= metrics[f"{model}.ner_f1"] <= 1.0
    for student in ("student_layers", "student_small", "student_fact"):
        assert metrics[f"{student}.params"] < metrics["teacher.params"]
        assert metrics[f"{student}.onnx_max_abs_diff"] < 1e-3
    assert "continual.replay_0.25.forgetting" in metrics
    assert 0.0 <= metrics["student_fact.section_acc.p_vs_teacher"] <= 1.0  # the paired test

    finetuned = next(nlprec_env.rglob("finetuned/student_small-ner"))
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"text": "Patients with asthma were treated ."}) + "\n")
    assert (
        distill_cli.main(
            [
                "tag",
                "--model",
                str(finetuned),
                "--input",
                str(source),
                "--output",
                str(tmp_path / "out.jsonl"),
            ]
        )
        == 0
    )
    (row,) = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(row["tags"]) == 6 and set(row["tags"]) <= {"O", "B-Disease", "I-Disease"}


def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[2]


def test_clinical_pipeline_compares_distillation_and_mlm_at_equal_steps():
    """distill-clinical.yaml: student_fact and its MLM-only twin train the same steps at the same lr,
    NER (differences ~0.01) is fine-tuned over more seeds than the classification tasks, and the
    whole pipeline (distillation included) runs over 3 seeds."""
    from nlprec.core.spec import load_pipeline

    steps = {
        s.spec.name: s.config
        for s in load_pipeline(_repo() / "pipelines/distill-clinical.yaml").steps
    }
    distilled, mlm = steps["student_fact"].distill, steps["mlm_only_fact"].mlm
    assert (distilled.steps, distilled.lr) == (mlm.steps, mlm.lr)
    evaluate = steps["evaluate"]
    assert len(evaluate.task_seeds["ner"]) == 5 and evaluate.seeds is None  # None: the run's seed
    pipeline = load_pipeline(_repo() / "pipelines/distill-clinical.yaml")
    assert pipeline.spec.run_seeds == [0, 1, 2]

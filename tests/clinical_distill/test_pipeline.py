"""The demo pipeline end to end through the CLI (tiny settings) on a user's IOB2 folder, then batch
inference with the fine-tuned task models it registered (`models:/distill-demo-<task>@champion`)."""

import json

import pytest
from nlprec.clinical_distill import cli as distill_cli
from nlprec.clinical_distill.generated import ner_examples
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
REGISTERED = [
    f"distill-demo-{task}{role}" for task in ("ner", "section", "nli") for role in ("", "-teacher")
]


@pytest.fixture()
def tiny_teacher(tmp_path, tokenizer, make_bert):
    """A 2-layer, 32-wide BERT with MiniLM's tokenizer: the pipeline's wiring, not MiniLM's cost, is under test."""
    path = tmp_path / "tiny-teacher"
    make_bert(len(tokenizer), hidden=32, layers=2, heads=4).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def iob2_folder(path, sizes: dict[str, int]):
    """A user's NER data: train/dev/test.tsv, one `word<TAB>tag` line per word, sentences apart."""
    path.mkdir()
    for seed, (split, n) in enumerate(sizes.items()):
        sentences = [
            "\n".join(f"{w}\t{t}" for w, t in zip(e["tokens"], e["tags"]))
            for e in ner_examples(n, seed)
        ]
        (path / f"{split}.tsv").write_text("\n\n".join(sentences) + "\n")
    return path


def _tag(model: str, source, out) -> list[dict]:
    code = distill_cli.main(["tag", "--model", model, "--input", str(source), "--output", str(out)])
    assert code == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.slow
def test_demo_pipeline_registers_task_models_for_batch_inference(
    nlprec_env, tmp_path, tiny_teacher
):
    ner = iob2_folder(tmp_path / "ner", {"train": 8, "dev": 3, "test": 4})
    summary_path = tmp_path / "summary.json"
    overrides = [
        *TINY,
        "--set",
        f"params.teacher={tiny_teacher}",
        "--set",
        f"steps.tasks.with.ner={ner}",
    ]
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
    assert len(summary["steps"]) == 13
    metrics = summary["metrics"]
    assert (metrics["tasks.ner.n_dev"], metrics["tasks.ner.n_test"]) == (3, 4)  # the user's folder
    for model in MODELS:
        for metric in ("ner_f1", "ner_dev_f1", "section_acc", "nli_acc", "params", "cpu_ms"):
            assert f"{model}.{metric}" in metrics, f"{model}.{metric}"
        assert 0.0 <= metrics[f"{model}.ner_f1"] <= 1.0
    for student in ("student_layers", "student_small", "student_fact"):
        assert metrics[f"{student}.params"] < metrics["teacher.params"]
        assert metrics[f"{student}.onnx_max_abs_diff"] < 1e-3
    assert "continual.replay_0.25.forgetting" in metrics
    assert 0.0 <= metrics["student_fact.section_acc.p_vs_teacher"] <= 1.0  # the paired test
    for name in REGISTERED:  # a fresh store: each name's first version is the champion
        assert metrics[f"promote.{name}.promoted"] == 1.0, name

    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"text": "Patients with asthma were treated ."}) + "\n")
    (row,) = _tag("models:/distill-demo-ner@champion", source, tmp_path / "tags.jsonl")
    assert len(row["tags"]) == 6 and set(row["tags"]) <= {"O", "B-Disease", "I-Disease"}
    (teacher_row,) = _tag("models:/distill-demo-ner-teacher@champion", source, tmp_path / "t.jsonl")
    assert len(teacher_row["tags"]) == 6
    labels = tmp_path / "labels.jsonl"
    code = distill_cli.main(["classify", "--model", "models:/distill-demo-section@champion",
                             "--input", str(source), "--output", str(labels)])  # fmt: skip
    assert code == 0 and json.loads(labels.read_text())["label"]

    import mlflow

    # the transformers flavor: a pipeline mlflow.transformers and mlflow.pyfunc load
    version = mlflow.MlflowClient().get_model_version_by_alias("distill-demo-ner", "champion")
    assert version.tags["nlprec.flavor"] == "transformers"
    section = mlflow.pyfunc.load_model("models:/distill-demo-section@champion")
    assert len(section.predict(["The patient reports chest pain."])) == 1


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
    register = steps["register"]  # the fine-tuned task models under the pipeline's name
    assert (register.name, register.student, register.teacher) == (
        "distill-clinical",
        "student_fact",
        "teacher",
    )

"""First-subword labelling, truncation handling, the harness and the results table."""

import json
from pathlib import Path

import pytest
import torch
from nlprec.clinical_distill import generated
from nlprec.clinical_distill.batch import TextClassifier, TokenTagger
from nlprec.clinical_distill.export import export_hf
from nlprec.clinical_distill.finetune import IGNORE, encode_words
from nlprec.clinical_distill.harness import (
    TaskSettings,
    aggregate,
    evaluate_on_task,
    run_harness,
    unit_scores,
)
from nlprec.clinical_distill.report import results_table, summary_metrics
from nlprec.core.spec import load_pipeline
from transformers import BertConfig, BertForMaskedLM

REPO = Path(__file__).resolve().parents[2]


def test_only_first_subwords_carry_labels(tokenizer):
    example = {"tokens": ["Hypercholesterolemia", "is", "common"], "tags": ["B-Disease", "O", "O"]}
    (feature,) = encode_words(
        tokenizer, [example], {"O": 0, "B-Disease": 1, "I-Disease": 2}, max_len=32
    )
    labelled = [label for label in feature["labels"] if label != IGNORE]
    assert labelled == [1, 0, 0]
    assert len(feature["word_starts"]) == 3
    assert (
        len(tokenizer.tokenize("Hypercholesterolemia")) > 1
    )  # so the test does exercise sub-words


def test_harness_batch_inference_and_table(teacher, tokenizer, tmp_path):
    model_dir = export_hf(teacher, tokenizer, tmp_path / "tiny")
    makers = {
        "ner": generated.ner_examples,
        "section": generated.section_examples,
        "nli": generated.nli_examples,
    }
    tasks = {
        task: {"train": make(16), "dev": make(6, seed=2), "test": make(8, seed=1)}
        for task, make in makers.items()
    }
    settings = {task: TaskSettings(epochs=1, max_len=48, batch_size=8) for task in tasks}
    rows = run_harness(
        {"teacher": str(model_dir), "student": str(model_dir)},
        tasks,
        [0, 1],
        settings=settings,
        save_root=str(tmp_path / "ft"),
        task_seeds={"section": [1]},  # a task with its own seeds; its model is saved from seed 1
    )
    assert len(rows) == 2 * (2 + 1 + 2)
    scores = aggregate(rows)
    assert scores["teacher"]["ner_f1"][2] == 2 and 0 <= scores["teacher"]["nli_acc"][0] <= 1
    assert scores["student"]["section_acc"][2] == 1
    assert (tmp_path / "ft" / "student-section" / "config.json").exists()
    assert all(row["best_epoch"] == 1 for row in rows)  # one epoch: the only one to keep
    units = unit_scores(rows)
    assert set(units[("teacher", "ner_sentence_f1")]) == {str(i) for i in range(8)}
    assert set(units[("student", "section_acc")].values()) <= {0.0, 1.0}  # one seed: 0 or 1
    with pytest.raises(ValueError, match="no dev split"):
        evaluate_on_task(str(model_dir), "nli", {**tasks["nli"], "dev": []}, settings["nli"], 0)
    with pytest.raises(ValueError, match="unknown tasks"):
        run_harness({"teacher": str(model_dir)}, tasks, [0], task_seeds={"qa": [0]})
    speed = {
        name: {"params": 1e6, "disk_mb": 4.0, "cpu_ms": 10.0, "cpu_seq_per_s": 100.0}
        for name in scores
    }
    metrics = summary_metrics(scores, speed)
    assert {
        "teacher.ner_f1",
        "student.section_acc",
        "student.nli_acc",
        "student.params",
        "student.cpu_ms",
    } <= set(metrics)
    table = results_table(scores, speed)
    assert (
        "| student |" in table and "missed" in table
    )  # equal size and speed cannot meet the targets

    tagged = TokenTagger(str(tmp_path / "ft" / "student-ner"))(
        {"text": ["Patients with asthma ."], "id": [7]}
    )
    assert tagged["id"] == [7] and len(tagged["tags"][0]) == 4
    labelled = TextClassifier(str(tmp_path / "ft" / "student-nli"))(
        {"text": ["a"], "text_pair": ["b"]}
    )
    assert labelled["label"][0] in {"Entailment", "Contradiction"}
    json.dumps(rows)


def test_target_checks_follow_the_issue_thresholds():
    def scores(ner, cls):
        return {
            "ner_f1": (ner, 0.0, 3),
            "section_acc": (cls, 0.0, 3),
            "section_macro_f1": (cls, 0.0, 3),
            "nli_acc": (cls, 0.0, 3),
        }

    speed = {
        "teacher": {"params": 30.0, "disk_mb": 1, "cpu_ms": 1, "cpu_seq_per_s": 10.0},
        "good": {"params": 10.0, "disk_mb": 1, "cpu_ms": 1, "cpu_seq_per_s": 25.0},
        "slow": {"params": 10.0, "disk_mb": 1, "cpu_ms": 1, "cpu_seq_per_s": 24.0},
        "mlm_only": {"params": 10.0, "disk_mb": 1, "cpu_ms": 1, "cpu_seq_per_s": 25.0},
    }
    table = results_table(
        {
            "teacher": scores(0.8, 0.6),
            "good": scores(0.77, 0.55),
            "slow": scores(0.8, 0.6),
            "mlm_only": scores(0.7, 0.5),
        },
        speed,
    )
    good = next(
        line for line in table.splitlines() if line.startswith("| good |") and "x |" in line
    )
    slow = next(
        line for line in table.splitlines() if line.startswith("| slow |") and "x |" in line
    )
    assert "| met |" in good and "4/4 metrics" in good
    assert "| missed |" in slow
    partial = {"nli_acc": (0.6, 0.0, 2)}  # a student whose NER and section runs did not finish
    table = results_table(
        {"teacher": scores(0.8, 0.6), "cut": partial, "mlm_only": scores(0.7, 0.5)},
        {**speed, "cut": speed["good"]},
    )
    cut = next(line for line in table.splitlines() if line.startswith("| cut |") and "x |" in line)
    assert "not measured" in cut and "1/1 metrics" in cut


def test_more_ner_seeds_and_differences_against_mlm_only():
    """NER over 5 seeds and classification over 3 is no 'missing seeds' case; a lead of one standard
    error is read as noise, one of several as a difference."""
    speed = {
        name: {"params": 10.0, "disk_mb": 1, "cpu_ms": 1, "cpu_seq_per_s": 25.0}
        for name in ("student", "mlm_only")
    }
    speed["teacher"] = {"params": 30.0, "disk_mb": 1, "cpu_ms": 1, "cpu_seq_per_s": 10.0}

    def scores(ner, cls, std):
        return {
            "ner_f1": (ner, std, 5),
            "section_acc": (cls, std, 3),
            "section_macro_f1": (cls, std, 3),
            "nli_acc": (cls, std, 3),
        }

    table = results_table(
        {
            "teacher": scores(0.8, 0.6, 0.01),
            "student": scores(0.79, 0.55, 0.01),
            "mlm_only": scores(0.70, 0.548, 0.01),
        },
        speed,
    )
    assert "seeds)" not in table.split("Mean ±")[0]  # no cell flagged as short of seeds
    assert "ner_f1: 5" in table and "section_acc: 3" in table
    rows = {
        line.split(" | ")[1]: line
        for line in table.splitlines()
        if line.startswith("| student - mlm_only |")
    }
    assert "+0.090" in rows["ner_f1"] and "student better (> 2 SE)" in rows["ner_f1"]
    assert "+0.002" in rows["section_acc"] and "within 2 SE" in rows["section_acc"]
    # the standard error of a difference of means: sqrt(0.01^2/5 + 0.01^2/5)
    assert f"{(2 * 0.01**2 / 5) ** 0.5:.3f}" in rows["ner_f1"]


def test_demo_ner_settings_teach_an_untrained_encoder(tokenizer, tmp_path):
    """The demo's NER fine-tuning, on the demo's generated data, finds the disease mentions even for its
    weakest model (random_init, never trained). Its old settings (6 updates at 1e-4) tagged everything O."""
    steps = {
        s.spec.name: s.config for s in load_pipeline(REPO / "pipelines/distill-demo.yaml").steps
    }
    small, tasks, ner = (
        steps["random_init"].student,
        steps["tasks"],
        steps["evaluate"].settings["ner"],
    )
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=small.hidden_size,
        num_hidden_layers=small.num_layers,
        num_attention_heads=small.num_heads,
        intermediate_size=small.intermediate_size,
    )
    torch.manual_seed(0)
    model_dir = export_hf(BertForMaskedLM(config), tokenizer, tmp_path / "random_init")
    data = {
        "train": generated.ner_examples(tasks.n_generated_train, 0),
        "dev": generated.ner_examples(tasks.n_generated_test // 2, 2),
        "test": generated.ner_examples(tasks.n_generated_test, 1),
    }  # as load_eval_tasks makes them
    scores = evaluate_on_task(str(model_dir), "ner", data, ner, seed=0)
    assert scores["ner_f1"] >= 0.5, scores

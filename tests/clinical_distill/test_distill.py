"""Distillation: losses combine as configured, training reduces them, bad maps fail before training."""

import pytest
import torch
from nlprec.clinical_distill.distill import (
    DistillationObjective,
    DistillConfig,
    distill,
    layer_subset_map,
    uniform_layer_map,
)
from nlprec.clinical_distill.generated import clinical_notes
from nlprec.clinical_distill.students import StudentConfig, StudentError, build_student

SMALL = StudentConfig(
    kind="random", num_layers=2, hidden_size=16, num_heads=4, intermediate_size=32
)
TRAIN = {"batch_size": 4, "max_len": 24}


def test_layer_maps():
    assert uniform_layer_map(2, 4, start=0) == [(0, 0), (1, 2), (2, 4)]
    assert uniform_layer_map(3, 6, start=1) == [(1, 2), (2, 4), (3, 6)]
    assert layer_subset_map([1, 3, 5]) == [(0, 0), (1, 2), (2, 4), (3, 6)]


def test_same_width_projection_starts_as_identity(teacher):
    student = build_student(teacher, StudentConfig(kind="layer_subset"))
    objective = DistillationObjective(teacher, student, DistillConfig())
    assert torch.equal(objective.projections[0].weight, torch.eye(32))


def test_distillation_reduces_the_combined_loss(teacher, tokenizer):
    student = build_student(teacher, SMALL)
    cfg = DistillConfig(
        steps=16, lr=3e-3, warmup_ratio=0.0, attention_weight=1.0, hidden_loss="mse", **TRAIN
    )
    history = distill(teacher, student, tokenizer, clinical_notes(16), cfg, show_progress=False)
    assert set(history[0]) == {"mlm", "kd", "hidden", "attention", "total"}
    first = sum(h["total"] for h in history[:4]) / 4
    last = sum(h["total"] for h in history[-4:]) / 4
    assert last < first


def test_zero_weights_switch_losses_off(teacher, tokenizer):
    student = build_student(teacher, SMALL)
    cfg = DistillConfig(steps=1, mlm_weight=0, hidden_weight=0, kd_weight=1.0, **TRAIN)
    (parts,) = distill(teacher, student, tokenizer, clinical_notes(8), cfg, show_progress=False)
    assert set(parts) == {"kd", "total"}
    assert parts["total"] == pytest.approx(parts["kd"])


def test_teacher_is_left_unchanged(teacher, tokenizer):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    distill(
        teacher,
        build_student(teacher, SMALL),
        tokenizer,
        clinical_notes(8),
        DistillConfig(steps=2, **TRAIN),
        show_progress=False,
    )
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


@pytest.mark.parametrize(
    "update, message",
    [
        ({"layer_map": [(0, 0), (3, 4)]}, "student index 3 out of range"),
        ({"layer_map": [(1, 9)]}, "teacher index 9 out of range"),
        ({"attention_weight": 1.0, "attention_layer_map": [(0, 1)]}, "attention_layer_map"),
        ({"mlm_weight": 0, "kd_weight": 0, "hidden_weight": 0}, "all loss weights are 0"),
    ],
)
def test_bad_settings_fail_before_training(teacher, tokenizer, update, message):
    student = build_student(teacher, SMALL)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    with pytest.raises((StudentError, ValueError), match=message):
        distill(
            teacher,
            student,
            tokenizer,
            clinical_notes(8),
            DistillConfig(steps=2, **TRAIN, **update),
            show_progress=False,
        )
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())


def test_attention_loss_needs_eager_attention(tokenizer, make_bert):
    teacher = make_bert(len(tokenizer), eager=False)
    student = build_student(teacher, SMALL)
    with pytest.raises(StudentError, match="eager"):
        distill(
            teacher,
            student,
            tokenizer,
            clinical_notes(8),
            DistillConfig(steps=1, attention_weight=1.0, **TRAIN),
            show_progress=False,
        )


def test_masked_only_head_gives_the_full_forwards_logits(teacher, tokenizer):
    """forward_masked runs the MLM head on masked rows only; BERT and the ALBERT-layout student alike."""
    from nlprec.clinical_distill.distill import forward_masked, mlm_head

    fact = build_student(teacher, StudentConfig(kind="factorised", num_layers=2, embedding_size=8))
    batch = tokenizer(
        ["The patient denies chest pain.", "Metformin for diabetes."],
        padding=True,
        return_tensors="pt",
    )
    masked = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
    masked[0, 2], masked[1, 1], masked[1, 3] = True, True, True
    for model in (teacher.eval(), fact.eval()):
        assert mlm_head(model) is not None
        full = model(**batch, output_hidden_states=True)
        out = forward_masked(model, dict(batch), masked, {"output_hidden_states": True})
        assert out.logits.shape == (3, model.config.vocab_size)
        torch.testing.assert_close(out.logits, full.logits[masked], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.hidden_states[-1], full.hidden_states[-1])

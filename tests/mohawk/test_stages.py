"""Stage budgets, the schedule, and that Stages 1 and 2 reduce what they optimise."""

import pytest
import torch
from nlprec.mohawk.stages import (
    DistillConfig,
    alignment_report,
    stage1_matrix_orientation,
    stage2_hidden_alignment,
)
from nlprec.mohawk.teacher import TeacherConfig, build_phi_teacher, prepare_teacher
from nlprec.mohawk.training import OptimConfig, wsd_multiplier
from nlprec.mohawk.transfer import init_student_from_teacher, student_config_for


def test_budgets_are_equal_across_the_ablation():
    for stages in ([1, 2, 3], [2, 3], [3]):
        cfg = DistillConfig(total_tokens=10_000, stages=stages)
        assert sum(cfg.budgets().values()) == 10_000
    assert DistillConfig(total_tokens=10_000).budgets() == {1: 300, 2: 500, 3: 9200}
    assert DistillConfig(total_tokens=10_000, stages=[2, 3]).budgets() == {2: 500, 3: 9500}
    with pytest.raises(ValueError, match="stages"):
        DistillConfig(total_tokens=10, stages=[3, 1])


def test_wsd_schedule_warms_up_holds_and_decays():
    values = [wsd_multiplier(s, 100, 0.1, 0.2) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == 1.0
    assert values[50] == 1.0 and values[79] == 1.0
    assert values[90] < values[80] and values[99] > 0


def test_stages_one_and_two_reduce_their_distances():
    torch.manual_seed(0)
    teacher = prepare_teacher(
        build_phi_teacher(
            TeacherConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64), 61
        )
    )
    student = init_student_from_teacher(teacher, student_config_for(teacher.config))
    tokens = torch.randint(0, 61, (4000,), generator=torch.Generator().manual_seed(0))
    probe = tokens[:64].view(2, 32)
    before = alignment_report(student, teacher, probe)
    optim = OptimConfig(lr=1e-2, batch_size=4, seq_len=32, warmup_fraction=0.0, decay_fraction=0.0)
    stage1_matrix_orientation(student, teacher, tokens, 4 * 32 * 15, optim, seed=0)
    after1 = alignment_report(student, teacher, probe)
    stage2_hidden_alignment(student, teacher, tokens, 4 * 32 * 15, optim, seed=1)
    after2 = alignment_report(student, teacher, probe)
    assert sum(after1["matrix_dist"].values()) < sum(before["matrix_dist"].values())
    assert sum(after2["hidden_dist"].values()) < sum(after1["hidden_dist"].values())
    # Stages 1 and 2 leave everything but the mixers untouched
    torch.testing.assert_close(
        student.blocks[0].mlp.fc1.weight, teacher.model.layers[0].mlp.fc1.weight
    )

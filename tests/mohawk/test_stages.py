"""Stage budgets, the schedule, and that Stages 1 and 2 reduce what they optimise."""

import pytest
import torch
from nlprec.core.training import Schedule, lr_multiplier
from nlprec.mohawk.stages import (
    DistillConfig,
    alignment_report,
    stage1_matrix_orientation,
    stage2_hidden_alignment,
)
from nlprec.mohawk.teacher import TeacherConfig, build_phi_teacher, prepare_teacher
from nlprec.mohawk.training import OptimConfig
from nlprec.mohawk.transfer import init_student_from_teacher, student_config_for
from nlprec.mohawk.workflow import per_layer_table, train_teacher


def test_budgets_are_equal_across_the_ablation():
    for stages in ([1, 2, 3], [2, 3], [3]):
        cfg = DistillConfig(total_tokens=10_000, stages=stages)
        assert sum(cfg.budgets().values()) == 10_000
    assert DistillConfig(total_tokens=10_000).budgets() == {1: 300, 2: 500, 3: 9200}
    assert DistillConfig(total_tokens=10_000, stages=[2, 3]).budgets() == {2: 500, 3: 9500}
    with pytest.raises(ValueError, match="stages"):
        DistillConfig(total_tokens=10, stages=[3, 1])


def test_wsd_schedule_warms_up_holds_and_decays():
    values = [lr_multiplier(s, 100, Schedule(0.1, 0.2)) for s in range(100)]
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
    optim2 = optim.model_copy(update={"lr": 1e-3})
    stage2_hidden_alignment(student, teacher, tokens, 4 * 32 * 15, optim2, seed=1)
    after2 = alignment_report(student, teacher, probe)
    assert sum(after1["matrix_dist"].values()) < sum(before["matrix_dist"].values())
    assert sum(after2["hidden_dist"].values()) < sum(after1["hidden_dist"].values())
    # Stages 1 and 2 leave everything but the mixers untouched
    torch.testing.assert_close(
        student.blocks[0].mlp.fc1.weight, teacher.model.layers[0].mlp.fc1.weight
    )


def copy_task_tokens(n: int, vocab: int, lag: int, seed: int) -> torch.Tensor:
    """A stream where most tokens repeat the one ``lag`` places back: a trained teacher's
    attention becomes sharp (mostly on position t - lag), unlike a random teacher's near-uniform one."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (n,), generator=g)
    repeat = torch.rand(n, generator=g) < 0.8
    for t in range(lag, n):
        if repeat[t]:
            tokens[t] = tokens[t - lag]
    return tokens


@pytest.fixture(scope="module")
def trained_tiny_teacher():
    torch.manual_seed(0)
    tokens = copy_task_tokens(20_000, 32, lag=3, seed=0)
    size = TeacherConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
    optim = OptimConfig(lr=5e-3, batch_size=8, seq_len=32)
    teacher, losses = train_teacher(32, tokens, size, optim, 8 * 32 * 300, 0, "cpu")
    assert losses[-1] < losses[0] - 1.0  # it learned the copy pattern
    return teacher, tokens


@pytest.mark.parametrize("normalized", [False, True])
def test_stage1_brings_the_matrices_below_one_relative(trained_tiny_teacher, normalized):
    """Stage 1 on a trained teacher: the relative distance ‖M − A‖_F / ‖A‖_F ends below 1.0 and
    well below where it started, for the plain SSD matrix (whose Q·K initialisation starts tens of
    times too large) and the row-normalised one (which starts below 1)."""
    teacher, tokens = trained_tiny_teacher
    torch.manual_seed(0)
    config = student_config_for(teacher.config, normalized_mixer=normalized)
    student = init_student_from_teacher(teacher, config)
    probe = copy_task_tokens(4 * 32, 32, lag=3, seed=1).view(4, 32)
    before = alignment_report(student, teacher, probe)["matrix_rel"]
    optim = OptimConfig(lr=1e-2, batch_size=1, seq_len=32)
    stage1_matrix_orientation(student, teacher, tokens, 32 * 300, optim, seed=0)
    after = alignment_report(student, teacher, probe)["matrix_rel"]
    for layer in before:
        assert after[layer] < 1.0, (layer, before[layer], after[layer])
        assert after[layer] < (0.1 if not normalized else 0.9) * before[layer], (before, after)
    if not normalized:
        assert min(before.values()) > 3.0  # the scale mismatch the plain student starts from


def test_per_layer_table_has_a_row_per_ssd_layer_and_a_column_per_stage():
    report = {"matrix_rel": {0: 0.8, 2: 0.9}, "hidden_rel": {0: 0.3, 2: 0.2}}
    later = {"matrix_rel": {0: 0.5, 2: 0.6}, "hidden_rel": {0: 0.1, 2: 0.15}}
    history = {
        "budgets": {1: 10, 3: 90},
        "init": report,
        "stage1": {"losses": [], "alignment": later},
        "stage3": {"losses": [], "alignment": report},
    }
    lines = per_layer_table(history).splitlines()
    assert lines[0].count("matrix_rel") == 3 and "stage2" not in lines[0]
    assert lines[2].startswith("| 0 | 0.800 | 0.500 | 0.800 | 0.300 | 0.100 |")
    assert lines[3].startswith("| 2 |") and len(lines) == 4

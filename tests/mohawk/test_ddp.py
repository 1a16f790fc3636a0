"""Stage 3 under torchrun: two gloo processes, started by the shared launcher (nlprec.core.launch),
distil what one process distils on the same global batches (issue #10)."""

import json

import torch
from nlprec.core import launch
from nlprec.mohawk.student import save_student
from nlprec.mohawk.teacher import TeacherConfig, build_phi_teacher, prepare_teacher
from nlprec.mohawk.transfer import init_student_from_teacher, student_config_for
from safetensors.torch import load_file, save_file

VOCAB = 53


def test_two_gloo_processes_distil_what_one_process_distils(tmp_path):
    torch.manual_seed(0)
    size = TeacherConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
    teacher = prepare_teacher(build_phi_teacher(size, VOCAB))
    teacher.save_pretrained(tmp_path / "teacher")
    student = init_student_from_teacher(teacher, student_config_for(teacher.config, [1]))
    save_student(student, tmp_path / "start")
    tokens = torch.randint(0, VOCAB, (2000,), generator=torch.Generator().manual_seed(1))
    save_file({"train": tokens}, tmp_path / "tokens.safetensors")
    optim = {"lr": 1e-2, "batch_size": 4, "seq_len": 16, "warmup_fraction": 0.0}

    settings = {"budget": 4 * 16 * 3, "optim": optim, "temperature": 1.0, "seed": 0}
    inputs = {
        "teacher": str(tmp_path / "teacher"),
        "student": str(tmp_path / "start"),
        "tokens": str(tmp_path / "tokens.safetensors"),
    }
    (tmp_path / "config.json").write_text(json.dumps(settings))
    (tmp_path / "inputs.json").write_text(json.dumps(inputs))
    worker = "nlprec.mohawk.steps:stage3_worker"
    launch.main([worker, "--config", str(tmp_path / "config.json"),
                 "--inputs", str(tmp_path / "inputs.json"), "--out", str(tmp_path / "one")])  # fmt: skip
    two = launch.run_distributed(worker, settings, inputs, tmp_path / "two", nproc_per_node=2)

    start = load_file(tmp_path / "start" / "model.safetensors")
    one = load_file(tmp_path / "one" / "model.safetensors")
    assert two["world_size"] == 2 and len(two["rank0_losses"]) == 3
    two = load_file(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys() == start.keys()
    for name, tensor in one.items():  # float32 sums in another order: equal to ~1e-5
        torch.testing.assert_close(two[name], tensor, rtol=1e-4, atol=1e-4, msg=name)
    moved = max((one[n] - start[n]).abs().max().item() for n in start)
    assert moved > 1e-3  # three steps at lr 1e-2 moved the weights well past the tolerance

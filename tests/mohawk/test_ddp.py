"""Stage 3 under torchrun: two gloo processes distil what one process distils on the same global
batches (issue #10)."""

import json

import torch
from nlprec.core.distributed import launch_torchrun
from nlprec.mohawk import ddp
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

    def args(out: str) -> list[str]:
        return [
            "--teacher", str(tmp_path / "teacher"), "--student", str(tmp_path / "start"),
            "--tokens", str(tmp_path / "tokens.safetensors"), "--out", str(tmp_path / out),
            "--budget", str(4 * 16 * 3), "--optim", json.dumps(optim),
        ]  # fmt: skip

    threads = torch.get_num_threads()
    try:
        ddp.main(args("one"))
    finally:
        torch.set_num_threads(threads)
    launch_torchrun(["-m", "nlprec.mohawk.ddp", *args("two")], 2, env={"OMP_NUM_THREADS": "1"})

    start = load_file(tmp_path / "start" / "model.safetensors")
    one = load_file(tmp_path / "one" / "model.safetensors")
    two = load_file(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys() == start.keys()
    for name, tensor in one.items():  # float32 sums in another order: equal to ~1e-5
        torch.testing.assert_close(two[name], tensor, rtol=1e-4, atol=1e-4, msg=name)
    moved = max((one[n] - start[n]).abs().max().item() for n in start)
    assert moved > 1e-3  # three steps at lr 1e-2 moved the weights well past the tolerance
    assert len(json.loads((tmp_path / "two" / ddp.LOSSES_FILE).read_text())["rank0_losses"]) == 3

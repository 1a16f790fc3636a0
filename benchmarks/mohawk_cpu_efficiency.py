"""Teacher (KV cache, SDPA) vs student (recurrent state) decode on CPU, 2 threads.

    flock /tmp/nlprec-bench.lock .venv/bin/python benchmarks/mohawk_cpu_efficiency.py

The distillation run's sizes (Phi-style, width 256, 4 layers, 4 heads, vocabulary 2048), random
weights, float32. Batch-1 prefill and decode against context; decode at batch 64 from synthetic
caches (see nlprec.mohawk.throughput).
"""

from __future__ import annotations

import argparse

import torch
from nlprec.core.bench import record_section
from nlprec.mohawk.student import StudentLM
from nlprec.mohawk.teacher import TeacherConfig, build_phi_teacher, prepare_teacher
from nlprec.mohawk.throughput import efficiency_sweep
from nlprec.mohawk.transfer import student_config_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--batch-lengths", type=int, nargs="*", default=[1024, 4096])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = TeacherConfig(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024)
    teacher = prepare_teacher(build_phi_teacher(size, 2048))
    teacher.set_attn_implementation("sdpa")  # the fastest stock path for the KV-cached teacher
    student = StudentLM(student_config_for(teacher.config)).eval()
    student.set_scan_backend("reference")
    result = efficiency_sweep(
        teacher, student, args.lengths, args.batch_lengths, steps=5,
        student_batch_cap=args.batch, teacher_batch_cap=args.batch,
    )  # fmt: skip
    lines = [
        "| context | teacher prefill s | student prefill s | teacher decode ms/token | student decode ms/token |",
        "|---|---|---|---|---|",
    ]
    for r in result["batch1"]:
        lines.append(
            f"| {r['length']} | {r['teacher.prefill_s']:.3f} | {r['student.prefill_s']:.3f} | "
            f"{1e3 * r['teacher.decode_s_per_token']:.1f} | {1e3 * r['student.decode_s_per_token']:.1f} |"
        )
    lines += [
        "",
        "| context | batch | teacher tokens/s | student tokens/s | student / teacher |",
        "|---|---|---|---|---|",
    ]
    for r in result["large_batch"]:
        lines.append(
            f"| {r['length']} | {r['teacher.batch']} | {r['teacher.tokens_per_s']:.0f} | "
            f"{r['student.tokens_per_s']:.0f} | {r['speedup']:.1f}× |"
        )
    note = (
        f"Phi-style teacher width 256, 4 layers, 4 heads, vocabulary 2048 (random weights, fp32) and its "
        f"student, {args.threads} threads. The machine was shared with other engineers' jobs (load average "
        "well above 2) while this ran, so absolute times are inflated and noisy; the ratios are the point."
    )
    record_section("mohawk: decode efficiency on CPU", note + "\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()

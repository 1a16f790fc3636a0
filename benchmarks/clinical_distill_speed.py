"""Size, CPU speed and ONNX export of the teacher and every student architecture.

Speed does not depend on the weights, so the students are built from the teacher with their GPU-run
shapes and measured like any saved model: encoder only, 2 threads, 128 tokens, latency at batch 1
and throughput at batch 32 (`efficiency.measure_cpu`). Each architecture is also exported to ONNX
and the largest difference from PyTorch on two sentences is reported. mlm_only / random_init share
student_small's architecture and mlm_only_fact student_fact's, so they share its figures.

  python benchmarks/clinical_distill_speed.py [--teacher minilm] [--json speed.json] [--no-record]
Run it under `flock /tmp/nlprec-bench.lock` so timings do not overlap other benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from nlprec.clinical_distill.efficiency import measure_cpu
from nlprec.clinical_distill.export import export_hf, export_onnx, onnx_max_difference
from nlprec.clinical_distill.models import load_masked_lm, load_tokenizer
from nlprec.clinical_distill.students import StudentConfig, build_student
from nlprec.core.threads import quiet_libraries

STUDENTS = {
    "student_layers": StudentConfig(kind="layer_subset"),
    "student_small": StudentConfig(
        kind="random", num_layers=4, hidden_size=192, num_heads=12, intermediate_size=512
    ),
    "student_fact": StudentConfig(kind="factorised", num_layers=2, embedding_size=120),
    "student_fact3": StudentConfig(kind="factorised", num_layers=3, embedding_size=64),
}
SAME_ARCHITECTURE = {
    "mlm_only": "student_small",
    "random_init": "student_small",
    "mlm_only_fact": "student_fact",
}
PROBE = ["The patient denies chest pain.", "Metformin 500 mg twice daily for type 2 diabetes."]


def measure(teacher_ref: str) -> dict[str, dict]:
    """{model: measure_cpu figures + onnx_max_abs_diff} for the teacher and each student architecture."""
    teacher = load_masked_lm(teacher_ref)
    tokenizer = load_tokenizer(teacher_ref)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {"teacher": export_hf(teacher, tokenizer, Path(tmp) / "teacher")}
        for name, cfg in STUDENTS.items():
            dirs[name] = export_hf(build_student(teacher, cfg), tokenizer, Path(tmp) / name)
        for name, path in dirs.items():
            figures[name] = measure_cpu(str(path))
            onnx_path = export_onnx(path, Path(tmp) / f"{name}.onnx")
            figures[name]["onnx_max_abs_diff"] = onnx_max_difference(path, onnx_path, PROBE)
    figures.update({alias: dict(figures[source]) for alias, source in SAME_ARCHITECTURE.items()})
    return figures


def table(figures: dict[str, dict]) -> str:
    base = figures["teacher"]
    rows = [
        "| model | encoder params (M) | / teacher | disk MB (fp32, with MLM head) | CPU ms, batch 1 | seq/s, batch 32 "
        "| throughput / teacher | ONNX max abs diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("teacher", *STUDENTS):
        f = figures[name]
        rows.append(
            f"| {name} | {f['params'] / 1e6:.2f} | {f['params'] / base['params']:.3f} | {f['disk_mb']:.1f} | "
            f"{f['cpu_ms']:.1f} | {f['cpu_seq_per_s']:.1f} | {f['cpu_seq_per_s'] / base['cpu_seq_per_s']:.2f}x | "
            f"{f['onnx_max_abs_diff']:.1e} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", default="minilm")
    parser.add_argument(
        "--json", help="also write the figures here (JSON)"
    )
    parser.add_argument(
        "--no-record", action="store_true", help="do not write benchmarks/RESULTS.md"
    )
    args = parser.parse_args()
    quiet_libraries()
    load_before = os.getloadavg()[0]
    figures = measure(args.teacher)
    load_after = os.getloadavg()[0]
    note = (
        f"{platform.machine()} CPU, {os.cpu_count()} cores shared with other jobs, 2 threads, 128 tokens, "
        f"median of 20 (batch 1) and 3 (batch 32) runs; load average {load_before:.1f} before, "
        f"{load_after:.1f} after (absolute times are inflated by other jobs; ratios are the figure to read)"
    )
    text = (
        table(figures)
        + f"\n\n{note}. ONNX: TorchScript exporter, opset 17, ONNX Runtime CPU vs PyTorch."
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"figures": figures, "note": note}, indent=1))
    if not args.no_record:
        from nlprec.core.bench import record_section  # noqa: PLC0415

        record_section("clinical-distill: size and CPU speed", text)
    print(text)


if __name__ == "__main__":
    main()

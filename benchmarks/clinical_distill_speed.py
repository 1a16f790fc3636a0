"""Size and CPU speed of the teacher and the student architectures (the size/speed half of the targets).

Speed does not depend on the weights, so the students are built from the teacher's config with
their pipeline shapes (random weights) and measured like any saved model: encoder only, 2 threads,
128 tokens, latency at batch 1 and throughput at batch 32.

  python benchmarks/clinical_distill_speed.py [--teacher minilm]
Run it under `flock /tmp/nlprec-bench.lock` so timings do not overlap other benchmarks.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from nlprec.clinical_distill.efficiency import measure_cpu
from nlprec.clinical_distill.export import export_hf
from nlprec.clinical_distill.models import load_masked_lm, load_tokenizer, quiet_transformers
from nlprec.clinical_distill.students import StudentConfig, build_student

STUDENTS = {
    "student_layers": StudentConfig(kind="layer_subset"),
    "student_small": StudentConfig(kind="random", num_layers=4, hidden_size=192, num_heads=12, intermediate_size=512),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="minilm")
    args = parser.parse_args()
    quiet_transformers()
    teacher = load_masked_lm(args.teacher)
    tokenizer = load_tokenizer(args.teacher)
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {"teacher": export_hf(teacher, tokenizer, Path(tmp) / "teacher")}
        for name, cfg in STUDENTS.items():
            dirs[name] = export_hf(build_student(teacher, cfg), tokenizer, Path(tmp) / name)
        figures = {name: measure_cpu(str(path)) for name, path in dirs.items()}
    base = figures["teacher"]
    rows = ["| model | encoder params (M) | / teacher | disk MB (fp32, with MLM head) | CPU ms, batch 1 | seq/s, batch 32 | throughput / teacher |",
            "|---|---|---|---|---|---|---|"]
    for name, f in figures.items():
        rows.append(f"| {name} | {f['params'] / 1e6:.2f} | {f['params'] / base['params']:.2f} | {f['disk_mb']:.1f} | "
                    f"{f['cpu_ms']:.1f} | {f['cpu_seq_per_s']:.1f} | {f['cpu_seq_per_s'] / base['cpu_seq_per_s']:.2f}x |")
    load = os.getloadavg()[0]
    text = "\n".join(rows) + (
        f"\n\n2 threads, 128 tokens, median of 20 (batch 1) and 3 (batch 32) runs. Load average at the end: "
        f"{load:.1f} on {os.cpu_count()} cores (a shared machine: absolute times are inflated; ratios are the figure to read)."
    )
    from nlprec.core.bench import record_section

    record_section("clinical-distill: size and CPU speed", text)
    print(text)


if __name__ == "__main__":
    main()

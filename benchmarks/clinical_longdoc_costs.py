"""clinical-longdoc: peak memory and time of one forward + backward step on CPU (2 threads),
full attention (eager and SDPA), Longformer and BigBird, at 512 / 1024 / 2048 / 4096 tokens.

Each configuration runs in a fresh process (`python -m nlprec.clinical_longdoc.costs`) so its peak
resident memory is its own; batch 1, fp32, MiniLM-L6.  A configuration that needs more memory than
the machine has free, or runs past ``--timeout`` seconds, is reported as such, not guessed.

    flock /tmp/nlprec-bench.lock nice -n 5 .venv/bin/python benchmarks/clinical_longdoc_costs.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

FIGURES = Path(__file__).resolve().parents[1] / "packages" / "clinical-longdoc" / "figures"
VARIANTS = ("full_eager", "full_sdpa", "longformer", "bigbird")
# eager attention keeps heads x L x L fp32 scores per layer for backward (MiniLM: 12 heads, 6 layers)
EAGER_BYTES_PER_TOKEN_SQUARED = 12 * 6 * 4 * 1.5


def available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(variant: str, length: int, timeout: float) -> dict:
    if (
        variant == "full_eager"
        and EAGER_BYTES_PER_TOKEN_SQUARED * length**2 > 0.6 * available_bytes()
    ):
        return {
            "variant": variant,
            "length": length,
            "skipped": "not enough free memory on the shared machine",
        }
    command = [
        sys.executable,
        "-m",
        "nlprec.clinical_longdoc.costs",
        "--variant",
        variant,
        "--length",
        str(length),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"variant": variant, "length": length, "skipped": f"over {timeout:.0f} s"}
    except subprocess.CalledProcessError as exc:
        return {
            "variant": variant,
            "length": length,
            "error": exc.stderr.strip().splitlines()[-1][:200],
        }
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="512,1024,2048,4096")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    rows = []
    for length in (int(n) for n in args.lengths.split(",")):
        for variant in VARIANTS:
            rows.append(measure(variant, length, args.timeout))
            print(json.dumps(rows[-1]), flush=True)
    load_after = os.getloadavg()
    print(f"load average before {load_before}, after {load_after}", flush=True)
    if args.no_record:
        return
    from nlprec.core.bench import record_section

    lengths = sorted({r["length"] for r in rows})
    lines = [
        "| variant | " + " | ".join(f"{n} tok: GiB / s" for n in lengths) + " |",
        "|---" * (len(lengths) + 1) + "|",
    ]
    for variant in VARIANTS:
        cells = []
        for n in lengths:
            row = next(r for r in rows if r["variant"] == variant and r["length"] == n)
            cells.append(
                f"{row['peak_gib']:.2f} / {row['seconds']:.1f}"
                if "seconds" in row
                else row.get("skipped") or row.get("error", "–")
            )
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    text = (
        "Peak resident-memory growth (fresh process per configuration) and time of one forward + backward "
        "step, batch 1, fp32, 2 threads, MiniLM-L6, run under the bench lock on the shared 2-core machine "
        f"(`uptime` load average 1/5/15 min: {_load(load_before)} before, {_load(load_after)} after; "
        "other engineers' light jobs may still overlap, so times are upper bounds; memory is not "
        "affected).\n\n" + "\n".join(lines)
    )
    _figure(rows)
    text += "\n\nFigure: `packages/clinical-longdoc/figures/step_cost_cpu.png`."
    record_section("clinical-longdoc: step cost by length (CPU)", text)


def _load(averages: tuple[float, float, float]) -> str:
    return " / ".join(f"{value:.2f}" for value in averages)


def _figure(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(parents=True, exist_ok=True)
    figure, (memory_axis, time_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    for variant in VARIANTS:
        mine = sorted(
            (r for r in rows if r["variant"] == variant and "seconds" in r),
            key=lambda r: r["length"],
        )
        if mine:
            memory_axis.plot(
                [r["length"] for r in mine],
                [r["peak_gib"] for r in mine],
                marker="o",
                label=variant,
            )
            time_axis.plot(
                [r["length"] for r in mine], [r["seconds"] for r in mine], marker="o", label=variant
            )
    for axis, label in (
        (memory_axis, "peak RSS growth (GiB)"),
        (time_axis, "forward+backward (s)"),
    ):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("tokens")
        axis.set_ylabel(label)
    memory_axis.legend(fontsize=7)
    figure.suptitle("MiniLM-L6 long variants on CPU (2 threads, batch 1, fp32, shared machine)")
    figure.tight_layout()
    figure.savefig(FIGURES / "step_cost_cpu.png", dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()

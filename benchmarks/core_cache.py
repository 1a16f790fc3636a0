"""Claim: a pipeline run twice reuses every step on the second run and is at least 10x faster.

Runs a pipeline twice in a fresh NLPREC_HOME through the CLI (wall-clock, process start included)
and records both times, the speed-up and the cache hits in benchmarks/RESULTS.md.

    python benchmarks/core_cache.py [--pipeline pipelines/ranking-demo.yaml] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nlprec.core.bench import markdown_table, record_section

REPO = Path(__file__).resolve().parents[1]


def timed_run(pipeline: Path, overrides: list[str], home: Path, summary: Path) -> float:
    command = [sys.executable, "-m", "nlprec.core.cli", "run", str(pipeline), "--summary", str(summary)]
    for item in overrides:
        command += ["--set", item]
    env = {**os.environ, "NLPREC_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    subprocess.run(command, cwd=home, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=Path, default=REPO / "pipelines" / "ranking-demo.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    pipeline = args.pipeline.resolve()
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        first = timed_run(pipeline, args.overrides, home, home / "first.json")
        second = timed_run(pipeline, args.overrides, home, home / "second.json")
        steps = json.loads((home / "second.json").read_text())["steps"]
        first_metrics = json.loads((home / "first.json").read_text())["metrics"]
        second_metrics = json.loads((home / "second.json").read_text())["metrics"]
    hits = sum(s["cached"] for s in steps.values())
    row = {
        "pipeline": pipeline.stem,
        "first run (s)": round(first, 1),
        "second run (s)": round(second, 1),
        "speed-up": f"{first / second:.1f}x",
        "steps from cache": f"{hits}/{len(steps)}",
        "same metrics": str(first_metrics == second_metrics),
    }
    print(json.dumps(row, indent=2))
    text = (
        "Wall-clock of `nlprec run` twice in a fresh `NLPREC_HOME` (process start and MLflow logging "
        "included; the first run also creates the SQLite store).\n\n" + markdown_table([row])
    )
    record_section(f"core: step cache ({pipeline.stem})", text)
    return 0 if hits == len(steps) else 1


if __name__ == "__main__":
    sys.exit(main())

"""`python -m nlprec.core.report DIR`: one table of every run summary JSON in DIR (what `make demo` prints)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table


def summary_table(folder: Path) -> Table:
    table = Table(title=f"nlprec runs in {folder}")
    for column in ("pipeline", "status", "seconds", "cached", "metric", "value"):
        table.add_column(column, justify="right" if column in {"seconds", "value"} else "left")
    for file in sorted(folder.glob("*.json")):
        summary = json.loads(file.read_text())
        steps = summary.get("steps", {})
        cached = f"{sum(s['cached'] for s in steps.values())}/{len(steps)}"
        metrics = sorted(summary.get("metrics", {}).items()) or [("-", None)]
        for index, (key, value) in enumerate(metrics):
            head = (summary["pipeline"], summary["status"], f"{summary['seconds']:.1f}", cached) if index == 0 else ("",) * 4
            table.add_row(*head, key, "" if value is None else f"{value:.4f}")
        table.add_section()
    return table


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    folder = Path(args[0] if args else "out/demo")
    if not folder.is_dir():
        print(f"no summaries: {folder} is not a directory", file=sys.stderr)
        return 2
    Console().print(summary_table(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())

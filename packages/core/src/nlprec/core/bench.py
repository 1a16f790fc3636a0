"""Benchmarks write their figures into sections of benchmarks/RESULTS.md.

Each section sits between `<!-- section: NAME -->` and `<!-- /section: NAME -->`; writing one replaces
only that section, under a file lock and through a temporary file, so several benchmarks can record at
once and a crash never truncates the file.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock
from nlprec.core.io import atomic_write_text

HEADER = "# nlprec benchmark results\n\nEvery figure with the command that produced it. Written by the scripts in `benchmarks/`.\n"


def results_path() -> Path:
    configured = os.environ.get("NLPREC_RESULTS")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[5] / "benchmarks" / "RESULTS.md"


def machine_description() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"GPU {torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores"
    except ImportError:
        pass
    return f"{platform.machine()} CPU, {os.cpu_count()} cores"


def invoked_command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def record_section(
    name: str, markdown: str, command: str | None = None, path: Path | None = None, machine: str | None = None
) -> Path:
    """Replace (or append) section `name` of RESULTS.md with `markdown` plus its command and date.

    `machine` names where the figures were produced when that is not the machine recording them
    (e.g. figures brought back from a GPU run); by default it describes this machine.
    """
    path = Path(path or results_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = (
        f"<!-- section: {name} -->\n## {name}\n\n{markdown.strip()}\n\n"
        f"Command: `{command or invoked_command()}` — {machine or machine_description()}, {stamp}.\n"
        f"<!-- /section: {name} -->\n"
    )
    pattern = re.compile(
        rf"<!-- section: {re.escape(name)} -->.*?<!-- /section: {re.escape(name)} -->\n?", re.DOTALL
    )
    with FileLock(str(path) + ".lock", timeout=120):
        text = path.read_text() if path.exists() else HEADER
        text = pattern.sub(lambda _: body, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + body
        atomic_write_text(path, text)
    return path


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A Markdown table from dicts (floats shown with 4 significant decimals)."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])
    def cell(value):
        if not isinstance(value, float):
            return str(value)
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.4f}"
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)

"""Result tables: per pipeline, the systems as rows and the headline metrics as columns.

A pipeline's `report:` block names its headline metrics (suffixes of `<system>.<metric>` keys) and
its reference system. A cell shows the mean, `± ci95` where seeds were run, and the paired test's
p-value against the reference where the comparison step computed one (`<system>.<metric>.p_vs_<ref>`).
Without a `report:` block the keys are grouped by system (the part before the first dot), one table
per set of metrics the systems share.

The same tables end `make demo` (`python -m nlprec.core.report DIR`, from the run summaries in DIR,
drawn with rich) and fill the generated sections of RESULTS.md and the READMEs (`nlprec report`,
Markdown, from run records: `markdown_report`).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DERIVED = re.compile(r"^(?P<base>.+?)\.(?P<kind>std|ci95|n|delta_vs_.+|p_vs_.+)$")  # references may hold dots
REFERENCE_MARK = "(reference)"


@dataclass
class Cell:
    mean: float | None  # None where only the comparison's delta was logged
    ci95: float | None = None
    n: int | None = None
    p: float | None = None
    delta: float | None = None


@dataclass
class SystemTable:
    """One table: a row per system, a column per metric; `reference` is the system compared against."""

    metrics: list[str]
    rows: list[tuple[str, dict[str, Cell]]] = field(default_factory=list)
    reference: str | None = None

    @property
    def seeds(self) -> int | None:
        counts = [cell.n for _, cells in self.rows for cell in cells.values() if cell.n]
        return max(counts) if counts else None


def base_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics themselves, without the `.std/.ci95/.n/.delta_vs_/.p_vs_` keys derived from them."""
    derived = {key for key in metrics if (m := DERIVED.match(key)) and m["base"] in metrics}
    return {key: value for key, value in metrics.items() if key not in derived}


def _cell(metrics: dict[str, float], key: str, reference: str | None) -> Cell:
    n = metrics.get(f"{key}.n")
    p = metrics.get(f"{key}.p_vs_{reference}") if reference else None
    delta = metrics.get(f"{key}.delta_vs_{reference}") if reference else None
    return Cell(metrics.get(key), metrics.get(f"{key}.ci95"), int(n) if n is not None else None, p, delta)


def system_tables(metrics: dict[str, float], report: dict[str, Any] | None = None) -> list[SystemTable]:
    """The tables of one run's flat metrics (`<system>.<metric>` keys) under its `report:` block."""
    bases = base_metrics(metrics)
    if report and report.get("metrics"):
        return [_declared_table(metrics, bases, list(report["metrics"]), report.get("reference"))]
    return _grouped_tables(metrics, bases)


def _declared_table(metrics: dict[str, float], bases: dict[str, float], columns: list[str], reference: str | None) -> SystemTable:
    systems: list[str] = []
    keys = list(bases)
    if reference:  # a system the comparison covered, even where its step logged no such metric
        keys += [k.removesuffix(f".delta_vs_{reference}") for k in metrics if k.endswith(f".delta_vs_{reference}")]
    for key in keys:
        for metric in columns:
            if key.endswith(f".{metric}") and (system := key[: -len(metric) - 1]) not in systems:
                systems.append(system)
    if reference in systems:  # the reference first, the others in the order the pipeline logged them
        systems.remove(reference)
        systems.insert(0, reference)
    table = SystemTable(columns, reference=reference)
    for system in systems:
        cells = {m: _cell(metrics, f"{system}.{m}", reference) for m in columns
                 if f"{system}.{m}" in bases or f"{system}.{m}.delta_vs_{reference}" in metrics}
        table.rows.append((system, cells))
    return table


def _grouped_tables(metrics: dict[str, float], bases: dict[str, float]) -> list[SystemTable]:
    by_system: dict[str, list[str]] = {}
    for key in bases:
        system, _, metric = key.partition(".")
        if metric:
            by_system.setdefault(system, []).append(metric)
    groups: dict[tuple[str, ...], list[str]] = {}
    for system, names in by_system.items():
        groups.setdefault(tuple(names), []).append(system)
    tables, alone = [], SystemTable(["value"])
    for names, systems in groups.items():
        if len(systems) == 1:  # a system sharing its metrics with no other: one row per key, below
            alone.rows += [(f"{systems[0]}.{m}", {"value": _cell(metrics, f"{systems[0]}.{m}", None)}) for m in names]
            continue
        table = SystemTable(list(names))
        table.rows += [(s, {m: _cell(metrics, f"{s}.{m}", None) for m in names}) for s in systems]
        tables.append(table)
    return tables + ([alone] if alone.rows else [])


# ---------------------------------------------------------------------- formatting


def format_number(value: float) -> str:
    if value != value:  # NaN
        return "nan"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.4f}"


def format_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def format_cell(cell: Cell | None) -> str:
    if cell is None:
        return "–"
    if cell.mean is None:  # the comparison logged a difference to the reference, the step no value
        sign = "+" if cell.delta is not None and cell.delta >= 0 else ""
        text = f"Δ {sign}{format_number(cell.delta)}" if cell.delta is not None else "–"
        return text + (f" ({format_p(cell.p)})" if cell.p is not None else "")
    text = format_number(cell.mean)
    if cell.ci95 is not None and cell.ci95 == cell.ci95:
        text += f" ± {format_number(cell.ci95)}"
    if cell.p is not None:
        text += f" ({format_p(cell.p)})"
    return text


def system_label(system: str, table: SystemTable) -> str:
    return f"{system} {REFERENCE_MARK}" if system == table.reference else system


def table_legend(table: SystemTable) -> str:
    parts = []
    if table.seeds:
        parts.append(f"mean ± 95 % interval over {table.seeds} seeds")
    if any(cell.p is not None for _, cells in table.rows for cell in cells.values()):
        parts.append(f"p: paired test against {table.reference} (Holm-corrected)")
    return "; ".join(parts)


# ---------------------------------------------------------------------- Markdown from run records


def _markdown_rows(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"] + [
        "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows
    ]


def markdown_report(records: list[dict[str, Any]], metrics: list[str] | None = None) -> str:
    """Markdown tables of run records: per pipeline, a row per system and run, with where it came from."""
    by_pipeline: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_pipeline.setdefault(record["pipeline"], []).append(record)
    blocks = []
    for pipeline, group in by_pipeline.items():
        lines = [f"**{pipeline}**", ""] if len(by_pipeline) > 1 else []
        header: list[str] | None = None
        rows, legends = [], []
        for record in group:
            report = dict(record.get("report") or {})
            if metrics:
                report["metrics"] = metrics
            env = record["environment"]
            commit = env["git_commit"][:10] + (" (dirty)" if env.get("git_dirty") else "")
            for table in system_tables(record["metrics"], report):
                columns = ["system", *table.metrics, *(["seeds"] if table.seeds else []), "run", "commit", "machine"]
                if header is None:
                    header = columns
                elif columns != header:  # a different shape: close this table, start another
                    lines += [*_markdown_rows(header, rows), ""]
                    header, rows = columns, []
                for system, cells in table.rows:
                    seeds = [str(max((c.n or 0) for c in cells.values()) or "")] if table.seeds else []
                    rows.append([system_label(system, table), *(format_cell(cells.get(m)) for m in table.metrics),
                                 *seeds, f"`{record['run_id'][:12]}`", f"`{commit}`", env["machine"]])
                legends.append(table_legend(table))
        if header is not None:
            lines += _markdown_rows(header, rows)
        legend = "; ".join(dict.fromkeys(part for part in legends if part))
        lines += [""] + ([f"{legend[0].upper()}{legend[1:]}.", ""] if legend else [])
        for record in group:
            lines.append(f"- `{record['run_id'][:12]}` ({record['started']}, {record['status']}): "
                         f"`{record['environment']['command']}`")
            lines += [f"  - {line}" for line in selection_lines(record)]
        blocks.append("\n".join(lines).strip())
    return "\n\n".join(blocks) + "\n"


def _in_pipeline_order(record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The record's steps in the order of its pipeline YAML (a record stores them sorted by name)."""
    steps = record.get("steps", {})
    try:
        spec = yaml.safe_load(record.get("config", {}).get("pipeline_yaml") or "") or {}
        order = [step["name"] for step in spec.get("steps", [])]
    except (yaml.YAMLError, AttributeError, KeyError, TypeError):
        order = []
    position = {name: index for index, name in enumerate(order)}
    return sorted(steps.items(), key=lambda item: (position.get(item[0], len(position)), item[0]))


def steps_report(records: list[dict[str, Any]]) -> str:
    """Markdown tables of what each step of a run cost: wall time over its seeds and the largest
    per-seed peak resident memory (``core.memory``), as the runner recorded them."""
    blocks = []
    for record in records:
        env = record["environment"]
        rows = []
        for name, step in _in_pipeline_order(record):
            memory = (step.get("memory") or {}).get("peak_rss_mb")
            status = "cached" if step.get("cached") else step.get("status", "")
            trials = step.get("trials") or []
            timed = [t["seconds"] for t in trials if t.get("seconds") is not None]
            rows.append([name, status, f"{step['seconds']:.1f}" if step.get("seconds") is not None else "",
                         f"{memory:.0f}" if memory is not None else "", str(len(trials)) if trials else "",
                         f"{sum(timed):.1f}" if timed and len(timed) == len(trials) else ""])
        lines = [f"Run `{record['run_id'][:12]}` of {record['pipeline']} ({record['started']}, "
                 f"{env['machine']}): `{env['command']}`", ""]
        lines += _markdown_rows(["step", "status", "seconds", "peak_rss_mb", "validation trials", "search seconds"], rows)
        lines += ["", "seconds: the step's wall time summed over its seeds, its search excluded (search "
                  "seconds: every trial on every seed); peak_rss_mb: the process's resident high-water "
                  "mark while the step ran (largest over seeds); empty where the record predates it."]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def selection_lines(record: dict[str, Any]) -> list[str]:
    """What each searched step chose on validation, and out of how many configurations."""
    lines = []
    for name, step in record.get("steps", {}).items():
        if step.get("selected") is None:
            continue
        chosen = ", ".join(f"{key}={value}" for key, value in step["selected"].items())
        metric = (step.get("search") or {}).get("metric", "the validation metric")
        lines.append(f"{name}: {chosen}, the best of {len(step.get('trials') or [])} on validation {metric}")
    return lines


# ---------------------------------------------------------------------- the `make demo` closing table


def demo_tables(folder: Path) -> list[Any]:
    """What `make demo` ends with: for every run summary JSON in `folder`, a heading, its tables
    (systems × headline metrics, the reference starred) and where to look next."""
    from rich.table import Table
    from rich.text import Text

    out: list[Any] = []
    for file in sorted(folder.glob("*.json")):
        summary = json.loads(file.read_text())
        steps = summary.get("steps", {})
        cached = sum(bool(s.get("cached")) for s in steps.values())
        out.append(Text.from_markup(f"[bold]{summary['pipeline']}[/bold]  {summary['status']} in "
                                    f"{summary['seconds']:.1f} s, {cached}/{len(steps)} steps from cache"))
        for table in system_tables(summary.get("metrics", {}), summary.get("report")):
            view = Table(show_edge=True)
            view.add_column("system" if table.metrics != ["value"] else "metric", no_wrap=True)
            for metric in table.metrics:
                view.add_column(metric, justify="right")
            for system, cells in table.rows:
                label = f"★ {system} {REFERENCE_MARK}" if system == table.reference else system
                view.add_row(label, *(format_cell(cells.get(m)) for m in table.metrics))
            out.append(view)
            if legend := table_legend(table):
                out.append(Text(f"  {legend}", style="dim"))
        run_id = summary.get("run_id") or ""
        where = (f"  more: `make ui` (MLflow, run {run_id}) or `nlprec show {run_id}`" if run_id
                 else "  untracked run (--no-track): nothing in MLflow")
        out += [Text(where, style="dim"), Text("")]
    return out


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    args = argv if argv is not None else sys.argv[1:]
    folder = Path(args[0] if args else "out/demo")
    if not folder.is_dir():
        print(f"no summaries: {folder} is not a directory", file=sys.stderr)
        return 2
    console = Console()
    for item in demo_tables(folder):
        console.print(item, soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

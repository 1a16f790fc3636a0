"""The `nlprec` command: run, import, report, list, show, cache, ui.

User errors (a bad pipeline file, a bad --set, a missing dataset or model) print one line and exit 2;
a failing step exits 1 after its runs are marked FAILED; Ctrl-C exits 130 with the runs marked KILLED.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from nlprec.core import models_cli
from nlprec.core.errors import UserError
from nlprec.core.threads import quiet_libraries

EXIT_STEP_FAILED, EXIT_USER_ERROR, EXIT_INTERRUPTED = 1, 2, 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nlprec", description="Run and inspect nlprec pipelines.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a pipeline YAML")
    run.add_argument("pipeline", help="path to pipelines/<name>.yaml")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a value, e.g. params.data=DIR or steps.train.with.epochs=2")
    run.add_argument("--summary", type=Path, help="write the run summary JSON here")
    run.add_argument("--force", action="append", default=[], metavar="STEP",
                     help="re-run STEP (and what needs it) even if cached")
    run.add_argument("--no-cache", action="store_true", help="run every step, ignoring the cache")
    run.add_argument("--no-track", action="store_true", help="do not log to MLflow (MLflow need not be installed)")
    run.add_argument("--export", type=Path, metavar="DIR",
                     help="write the run record (runs, params, metrics, tags, artifacts) to DIR instead of "
                          "MLflow; `nlprec import DIR` loads it into a store later")

    imp = sub.add_parser("import", help="load a run record written by `nlprec run --export DIR` into MLflow")
    imp.add_argument("record", type=Path, metavar="DIR")
    imp.add_argument("--save", action="store_true", help="also commit-ready: write results/<pipeline>/<run-id>.json.gz")
    imp.add_argument("--results", type=Path, default=Path("results"), help="where --save writes (default results/)")

    rep = sub.add_parser("report", help="Markdown result tables from tracked runs or committed run records")
    pick = rep.add_argument_group("which runs (tracked, in MLflow)")
    pick.add_argument("--pipeline", help="the latest finished run of this pipeline")
    pick.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="every finished run with this tag")
    pick.add_argument("--run", action="append", default=[], metavar="RUN_ID", help="this pipeline run")
    rep.add_argument("--records", action="append", default=[], metavar="SELECTOR",
                     help="committed records: PIPELINE (latest), PIPELINE/* or PIPELINE/RUN_ID_PREFIX")
    rep.add_argument("--metrics", help="columns instead of the pipeline's report.metrics (comma-separated)")
    rep.add_argument("--save-record", metavar="RUN", help="write results/<pipeline>/<run-id>.json.gz for RUN "
                     "(a run id, or a folder from `nlprec run --export`)")
    rep.add_argument("--write", type=Path, metavar="FILE", help="regenerate every nlprec-report section of FILE")
    rep.add_argument("--check", type=Path, nargs="*", metavar="FILE",
                     help="exit 1 if a generated section of FILE differs from what its records give "
                     "(no FILE: every README.md, benchmarks/*.md, packages/*/README.md and docs/**/*.md here)")
    rep.add_argument("--results", type=Path, default=None,
                     help="the records folder (default: results/ of the repository holding FILE, else ./results)")

    lst = sub.add_parser("list", help="list pipelines with their descriptions")
    lst.add_argument("--dir", type=Path, default=Path("pipelines"))

    show = sub.add_parser("show", help="show a run: steps, status, cache hits, metrics")
    show.add_argument("run_id")

    cache = sub.add_parser("cache", help="inspect or prune the step cache")
    cache.add_argument("action", choices=["ls", "prune"])
    cache.add_argument("--older-than-days", type=float, default=None)

    ui = sub.add_parser("ui", help="start the MLflow UI on the local store")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    models_cli.add_parser(sub)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from nlprec.core.runner import Runner, StepFailed
    from nlprec.core.spec import load_pipeline

    pipeline = load_pipeline(args.pipeline, args.overrides)
    if args.export:
        from nlprec.core.record import RecordTracker

        runner = Runner(tracker=RecordTracker(args.export))
    else:
        runner = Runner(track=not args.no_track)
    try:
        summary = runner.run(pipeline, force=set(args.force), use_cache=not args.no_cache,
                             summary_path=args.summary)
    except StepFailed as failure:
        if isinstance(failure.cause, UserError):
            print(f"nlprec: error: step {failure.step!r}: {failure.cause}", file=sys.stderr)
            return EXIT_USER_ERROR
        if args.verbose:
            raise
        print(f"nlprec: {failure} (rerun with -v for the traceback)", file=sys.stderr)
        return EXIT_STEP_FAILED
    if not args.summary:
        print(json.dumps({"run_id": summary.run_id, "metrics": summary.metrics}, indent=2))
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from nlprec.core.record import import_record
    from nlprec.core.tracking import tracking_uri

    run_id = import_record(args.record)
    print(f"imported {args.record} into {tracking_uri()} as run {run_id}")
    if args.save:
        from nlprec.core.results import compact_record, save_record, view_from_export

        print(f"saved {save_record(compact_record(view_from_export(args.record)), args.results)}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from nlprec.core import report_sections
    from nlprec.core.results import compact_record, find_records, save_record

    if args.check is not None:
        stale = []
        for file in args.check or report_sections.marked_files(Path.cwd()):
            for section in report_sections.check_sections(file, args.results):
                stale.append(f"{file}:{section.line}: section `nlprec-report: {section.spec}` differs from its records")
        for line in stale:
            print(line, file=sys.stderr)
        if stale:
            print("regenerate with `nlprec report --write FILE` (or fix the records)", file=sys.stderr)
        return 1 if stale else 0
    if args.write:
        count = report_sections.write_sections(args.write, args.results)
        print(f"{args.write}: {count} generated sections")
        return 0
    if args.save_record:
        view = _run_view(args.save_record)
        print(f"saved {save_record(compact_record(view), args.results or Path('results'))}")
        return 0
    from nlprec.core.report import markdown_report

    records = [r for selector in args.records for r in find_records(args.results or Path("results"), selector)]
    records += [compact_record(_run_view(run_id)) for run_id in _tracked_runs(args)]
    if not records:
        raise UserError("nothing to report: give --pipeline, --tag, --run or --records")
    metrics = [m for m in args.metrics.split(",") if m] if args.metrics else None
    print(markdown_report(records, metrics), end="")
    return 0


def _run_view(run: str):
    from nlprec.core.results import view_from_export, view_from_mlflow

    return view_from_export(run) if Path(run).is_dir() else view_from_mlflow(run)


def _tracked_runs(args: argparse.Namespace) -> list[str]:
    """Pipeline runs (not step runs) chosen by --run, --pipeline (latest finished) and --tag (all finished)."""
    run_ids = list(args.run)
    filters = []
    if args.pipeline:
        filters.append((f"tags.`nlprec.pipeline` = '{args.pipeline}'", 1))
    for tag in args.tag:
        key, sep, value = tag.partition("=")
        if not sep:
            raise UserError(f"--tag {tag!r}: expected KEY=VALUE")
        filters.append((f"tags.`{key}` = '{value}'", None))
    if filters:
        import mlflow
        from nlprec.core.tracking import tracking_uri, use_tracking_store

        use_tracking_store()
        for condition, limit in filters:
            runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                      filter_string=f"{condition} and attributes.status = 'FINISHED'",
                                      order_by=["attributes.start_time DESC"])
            roots = [r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags]
            if not roots:
                raise UserError(f"no finished pipeline run matches {condition} in {tracking_uri()}")
            run_ids += list(reversed(roots[:limit]))  # oldest first
    return list(dict.fromkeys(run_ids))


def _cmd_list(args: argparse.Namespace) -> int:
    import yaml

    files = sorted(args.dir.glob("*.yaml"))
    if not files:
        raise UserError(f"no pipelines in {args.dir}")
    width = max(len(f.stem) for f in files)
    for file in files:
        try:
            description = (yaml.safe_load(file.read_text()) or {}).get("description", "")
        except yaml.YAMLError:
            description = "(invalid YAML)"
        print(f"{file.stem:<{width}}  {description}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    import mlflow
    from nlprec.core.tracking import tracking_uri, use_tracking_store

    use_tracking_store()
    client = mlflow.MlflowClient()
    try:
        parent = client.get_run(args.run_id)
    except Exception:
        raise UserError(f"no run {args.run_id!r} in {tracking_uri()}") from None
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{args.run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    print(f"{parent.data.tags.get('nlprec.pipeline', parent.info.run_name)}  {args.run_id}  {parent.info.status}")
    for child in children:
        tags = child.data.tags
        cached = " (cached)" if tags.get("cache_hit") == "true" else ""
        print(f"  {tags.get('nlprec.step', child.info.run_name):<24} {child.info.status:<9}{cached}")
        for key, value in sorted(child.data.metrics.items()):
            print(f"      {key} = {value:.4f}")
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from nlprec.core.cache import StepCache
    from nlprec.core.paths import cache_root

    cache = StepCache(cache_root())
    if args.action == "ls":
        rows = cache.entries()
        for row in rows:
            print(f"{row['entry']:<60} {row['bytes'] / 1e6:9.2f} MB")
        print(f"{len(rows)} entries in {cache.root}")
    else:
        removed = cache.prune(older_than_days=args.older_than_days)
        print(f"removed {removed} entries from {cache.root}")
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    from nlprec.core.tracking import artifact_root, tracking_uri

    uri = tracking_uri()
    print(f"MLflow UI for {uri}: http://{args.host}:{args.port}", flush=True)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
               "--port", str(args.port)]
    if uri.startswith("sqlite:"):
        command += ["--default-artifact-root", str(artifact_root())]
    return subprocess.call(command)


COMMANDS = {"run": _cmd_run, "import": _cmd_import, "report": _cmd_report, "list": _cmd_list, "show": _cmd_show, "cache": _cmd_cache, "ui": _cmd_ui, "models": models_cli.run}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        quiet_libraries(all_warnings=True)
    try:
        return COMMANDS[args.command](args)
    except UserError as error:
        print(f"nlprec: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("nlprec: interrupted; finished steps are cached, rerun to continue", file=sys.stderr)
        return EXIT_INTERRUPTED


def entry_point() -> None:
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())


if __name__ == "__main__":
    entry_point()

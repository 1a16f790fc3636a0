"""Batch inference: one predictor class, two engines (`local` and Ray Data), same output.

A predictor loads its model once in `__init__(**kwargs)` and maps a batch of columns to a batch of
columns with the same number of rows:

    class Tagger:
        def __init__(self, model: str = "minilm"):
            self.model = load(model)                              # once per process / Ray actor
        def __call__(self, batch: dict[str, list]) -> dict[str, list]:
            return {"id": batch["id"], "tags": self.model(batch["text"])}

`run_batch(Tagger, {"model": "minilm"}, "in.jsonl", "out.jsonl", engine="local" | "ray")` reads JSONL
or Parquet, runs the predictor with a progress bar and writes one JSONL or Parquet file (chosen by the
output suffix), atomically.

- **local**: the input is cut into parts of `rows_per_part` rows; each finished part is written to
  `<output>.parts/part-NNNNN.<ext>` (temporary file, then rename). An interrupted run started again with
  the same input, predictor and settings skips the finished parts; at the end the parts are merged into
  the output and the parts folder is removed.
- **ray**: `ray.data.read_json`/`read_parquet`, `map_batches` with an actor class that builds the
  predictor once per actor (`batch_size`, `concurrency` actors, `num_gpus` per actor), order preserved,
  streamed back into the single output file. Ray connects to `RAY_ADDRESS` (a cluster) when it is set,
  otherwise starts a local instance, unless the caller already called `ray.init`.

Both engines pass every batch through Arrow on the way in and on the way out, so types are normalised
the same way (e.g. a column mixing 1 and 1.5 is float in both) and the two outputs are identical.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
from nlprec.core.data import read_jsonl
from nlprec.core.errors import UserError
from nlprec.core.hashing import hash_value
from nlprec.core.io import atomic_path
from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger("nlprec.batch")

Format = Literal["jsonl", "parquet"]
DEFAULT_BATCH_SIZE = 64
DEFAULT_ROWS_PER_PART = 4096
_MANIFEST = "manifest.json"
FORWARDED_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "NLPREC_HOME",
    "NLPREC_DATA",
    "NLPREC_ALLOW_DOWNLOAD",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
)


class BatchInputError(UserError):
    """The input file cannot be read as rows (missing, malformed line, mixed types)."""


class BatchPredictorError(UserError):
    """The predictor returned something that is not a batch of columns with one value per row."""


class Predictor(Protocol):
    """What `run_batch` needs of a predictor class (instances are built with `**predictor_kwargs`)."""

    def __call__(self, batch: dict[str, list]) -> dict[str, list]: ...


class BatchOptions(BaseModel):
    """The engine settings every batch command shares (see `add_batch_arguments`)."""

    model_config = ConfigDict(extra="forbid")
    engine: Literal["local", "ray"] = "local"
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1)
    concurrency: int = Field(1, ge=1, description="Ray actors (model copies) scoring in parallel")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per Ray actor")
    rows_per_part: int = Field(
        DEFAULT_ROWS_PER_PART, ge=1, description="local engine: rows per resumable part"
    )


@dataclass(frozen=True)
class BatchResult:
    output: Path
    rows: int
    parts_reused: int = 0  # local engine: parts found finished from an earlier, interrupted run


# ---------------------------------------------------------------------------------------- formats


def file_format(path: Path) -> Format:
    """`parquet` for a `.parquet` suffix, `jsonl` for everything else (`.jsonl`, `.json`, ...)."""
    return "parquet" if Path(path).suffix.lower() in {".parquet", ".pq"} else "jsonl"


def jsonl_records(path: Path) -> Iterator[dict]:
    """The objects of a JSONL file (`nlprec.core.data.read_jsonl`); a malformed line is a
    BatchInputError naming the file and the line: `in.jsonl:7: not valid JSON (...)`."""
    try:
        yield from read_jsonl(path)
    except BatchInputError:
        raise
    except UserError as exc:
        raise BatchInputError(str(exc)) from None


def first_bad_line(path: Path) -> BatchInputError | None:
    """The error naming the first malformed line of a JSONL file, or None when every line parses."""
    try:
        for _ in jsonl_records(path):
            pass
    except BatchInputError as exc:
        return exc
    return None


def count_rows(path: Path, fmt: Format | None = None) -> int:
    path = Path(path)
    if (fmt or file_format(path)) == "parquet":
        return pq.ParquetFile(path).metadata.num_rows
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def _rows_to_table(rows: list[dict], where: str) -> pa.Table:
    """Rows to an Arrow table; columns are the union of keys (missing values become null)."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    try:
        return pa.Table.from_pydict({name: [row.get(name) for row in rows] for name in names})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise BatchInputError(f"{where}: a column mixes incompatible types ({exc})") from None


def read_tables(path: Path, rows_per_table: int) -> Iterator[pa.Table]:
    """The input as Arrow tables of at most `rows_per_table` rows each, in order."""
    path = Path(path)
    if not path.is_file():
        raise BatchInputError(f"input file {path} does not exist")
    if file_format(path) == "parquet":
        for record_batch in pq.ParquetFile(path).iter_batches(batch_size=rows_per_table):
            yield pa.Table.from_batches([record_batch])
        return
    rows: list[dict] = []
    first_row = 1
    for record in jsonl_records(path):
        rows.append(record)
        if len(rows) == rows_per_table:
            yield _rows_to_table(rows, f"{path}, rows {first_row}-{first_row + len(rows) - 1}")
            first_row, rows = first_row + len(rows), []
    if rows:
        yield _rows_to_table(rows, f"{path}, rows {first_row}-{first_row + len(rows) - 1}")


class TableWriter:
    """Appends Arrow tables to one JSONL or Parquet file."""

    def __init__(self, path: Path, fmt: Format):
        self.path, self.fmt = Path(path), fmt
        self._jsonl = open(self.path, "w", encoding="utf-8") if fmt == "jsonl" else None
        self._parquet: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        if self._jsonl is not None:
            for row in table.to_pylist():
                self._jsonl.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            return
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.path, table.schema)
        elif table.schema != self._parquet.schema:
            table = table.cast(self._parquet.schema)  # e.g. an all-null column in the first batch
        self._parquet.write_table(table)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        elif self._parquet is not None:
            self._parquet.close()
        else:  # no rows at all: still a valid, empty Parquet file
            pq.write_table(pa.table({}), self.path)


@contextlib.contextmanager
def _atomic_writer(path: Path, fmt: Format) -> Iterator[TableWriter]:
    """A writer on a temporary file beside `path`, renamed onto `path` only when the block succeeds.

    On any exception (Ctrl-C included) the temporary file is removed and `path` is left untouched.
    """
    with atomic_path(path) as staging:
        writer = TableWriter(staging, fmt)
        try:
            yield writer
        finally:
            writer.close()


# ------------------------------------------------------------------------------------ predictors


def _check_output(output: Any, n_rows: int, predictor_cls: type) -> dict[str, list]:
    name = predictor_cls.__qualname__
    if not isinstance(output, dict) or not output:
        raise BatchPredictorError(
            f"{name} returned {type(output).__name__}; expected a non-empty dict of columns"
        )
    for column, values in output.items():
        length = len(values) if hasattr(values, "__len__") else None
        if length != n_rows:
            raise BatchPredictorError(
                f"{name} returned column {column!r} with {length} values for a batch of {n_rows} rows"
            )
    return output


def _to_plain(values: Any) -> list:
    """numpy arrays (and lists of them) to lists, so Arrow sees the same values whatever came back."""
    return (
        values.tolist()
        if hasattr(values, "tolist")
        else [v.tolist() if hasattr(v, "tolist") else v for v in values]
    )


def predict_table(predictor: Predictor, predictor_cls: type, table: pa.Table) -> pa.Table:
    """One batch through the predictor: Arrow in, Arrow out (the normalisation both engines share).

    Every output column must be something Arrow can type: numbers, strings, booleans, None, lists whose
    items share one type, or dicts. A list mixing types (e.g. `[doc_id, score]` pairs) cannot be stored
    in JSONL-and-Parquet-alike form by Ray Data either: return two columns, or a list of dicts, instead.
    """
    output = _check_output(predictor(table.to_pydict()), table.num_rows, predictor_cls)
    columns = {}
    for column, values in output.items():
        try:
            columns[str(column)] = pa.array(_to_plain(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise BatchPredictorError(
                f"{predictor_cls.__qualname__} returned column {column!r} with values Arrow cannot store "
                f"({exc}); lists must hold one type: return e.g. [{{'id': ..., 'score': ...}}] or two columns"
            ) from None
    return pa.Table.from_pydict(columns)


class ArrowPredictor:
    """The Ray actor: builds the user's predictor once, then maps Arrow batches through it."""

    def __init__(self, predictor_cls: type, predictor_kwargs: dict[str, Any]):
        self.predictor_cls = predictor_cls
        self.predictor = predictor_cls(**predictor_kwargs)

    def __call__(self, table: pa.Table) -> pa.Table:
        return predict_table(self.predictor, self.predictor_cls, table)


# ---------------------------------------------------------------------------------------- engines


def run_batch(
    predictor_cls: type,
    predictor_kwargs: dict[str, Any] | None,
    input_path: str | Path,
    output_path: str | Path,
    engine: Literal["local", "ray"] = "local",
    batch_size: int = DEFAULT_BATCH_SIZE,
    concurrency: int = 1,
    num_gpus: float = 0.0,
    rows_per_part: int = DEFAULT_ROWS_PER_PART,
    progress: bool = True,
) -> BatchResult:
    """Score every row of `input_path` with `predictor_cls(**predictor_kwargs)`; write `output_path`."""
    options = BatchOptions(
        engine=engine,
        batch_size=batch_size,
        concurrency=concurrency,
        num_gpus=num_gpus,
        rows_per_part=rows_per_part,
    )
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise BatchInputError(f"input file {input_path} does not exist")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = dict(predictor_kwargs or {})
    if options.engine == "ray":
        return _run_ray(predictor_cls, kwargs, input_path, output_path, options, progress)
    return _run_local(predictor_cls, kwargs, input_path, output_path, options, progress)


def _progress_bar(total: int | None, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="row", disable=not enabled, dynamic_ncols=True)


def parts_dir(output_path: Path) -> Path:
    return output_path.with_name(output_path.name + ".parts")


def _run_fingerprint(
    predictor_cls: type, kwargs: dict, input_path: Path, output_path: Path, rows_per_part: int
) -> dict:
    """What must match for finished parts of an earlier run to be reused."""
    stat = input_path.stat()
    return {
        "input": str(input_path.resolve()),
        "input_size": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
        "predictor": f"{predictor_cls.__module__}.{predictor_cls.__qualname__}",
        "predictor_kwargs_sha256": hash_value(kwargs),
        "rows_per_part": rows_per_part,
        "format": file_format(output_path),
    }


def _prepare_parts(folder: Path, fingerprint: dict) -> None:
    """Keep the parts of an interrupted run with the same fingerprint; otherwise start afresh."""
    manifest = folder / _MANIFEST
    if folder.exists():
        try:
            previous = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous == fingerprint:
            for stray in folder.glob(".part-*.tmp-*"):  # left by a run that was killed outright
                stray.unlink()
            return
        logger.warning(
            "%s holds parts of a different run (input, predictor or settings changed): discarding them",
            folder,
        )
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    manifest.write_text(json.dumps(fingerprint, indent=2))


def _run_local(
    predictor_cls: type,
    kwargs: dict,
    input_path: Path,
    output_path: Path,
    options: BatchOptions,
    progress: bool,
) -> BatchResult:
    fmt = file_format(output_path)
    folder = parts_dir(output_path)
    _prepare_parts(
        folder,
        _run_fingerprint(predictor_cls, kwargs, input_path, output_path, options.rows_per_part),
    )
    predictor: Predictor | None = (
        None  # built on the first part that needs it (a finished resume loads nothing)
    )
    parts: list[Path] = []
    reused = 0
    with _progress_bar(count_rows(input_path), progress, f"batch {predictor_cls.__name__}") as bar:
        for index, chunk in enumerate(read_tables(input_path, options.rows_per_part)):
            part = folder / f"part-{index:05d}.{fmt}"
            parts.append(part)
            if part.exists():
                reused += 1
                bar.update(chunk.num_rows)
                continue
            predictor = predictor or predictor_cls(**kwargs)
            with _atomic_writer(part, fmt) as writer:
                for batch in chunk.to_batches(max_chunksize=options.batch_size):
                    writer.write(
                        predict_table(predictor, predictor_cls, pa.Table.from_batches([batch]))
                    )
                    bar.update(batch.num_rows)
    rows = _merge_parts(parts, output_path, fmt)
    shutil.rmtree(folder)
    return BatchResult(output=output_path, rows=rows, parts_reused=reused)


def _merge_parts(parts: list[Path], output_path: Path, fmt: Format) -> int:
    """Concatenate the parts into the output, atomically (JSONL byte for byte, Parquet table by table)."""
    with atomic_path(output_path) as staging:
        if fmt == "jsonl":
            with open(staging, "wb") as merged:
                for part in parts:
                    with open(part, "rb") as handle:
                        shutil.copyfileobj(handle, merged)
        else:
            writer = TableWriter(staging, fmt)
            for part in parts:
                writer.write(pq.read_table(part))
            writer.close()
        return count_rows(staging, fmt)


def forwarded_environment() -> dict[str, str]:
    """The variables a predictor may rely on (tracking server, data root, offline switches) that Ray
    actors must see: on a cluster they start on other machines, not as children of this process."""
    return {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}


def _run_ray(
    predictor_cls: type,
    kwargs: dict,
    input_path: Path,
    output_path: Path,
    options: BatchOptions,
    progress: bool,
) -> BatchResult:
    try:
        import ray
        import ray.data
    except ImportError:
        raise UserError("--engine ray needs Ray Data: pip install 'ray[data]'") from None
    if not ray.is_initialized():
        ray.init()  # RAY_ADDRESS (a cluster) when set, else a local instance
    ray.data.DataContext.get_current().execution_options.preserve_order = (
        True  # output rows in input order
    )

    if file_format(input_path) == "parquet":
        dataset = ray.data.read_parquet(str(input_path))
    else:
        # Arrow's JSON-lines reader, not pandas' (`lines=True`): pandas fills a field missing from
        # some rows with NaN and stores mixed columns as Python objects, so predictors would see
        # other values than under the local engine (missing -> None there).
        dataset = ray.data.read_json(str(input_path), file_extensions=None)
    scored = dataset.map_batches(
        ArrowPredictor,
        fn_constructor_kwargs={"predictor_cls": predictor_cls, "predictor_kwargs": kwargs},
        batch_size=options.batch_size,
        batch_format="pyarrow",
        concurrency=options.concurrency,
        num_gpus=options.num_gpus or None,
        runtime_env={"env_vars": forwarded_environment()},
    )
    try:
        with (
            _atomic_writer(output_path, file_format(output_path)) as writer,
            _progress_bar(
                count_rows(input_path), progress, f"batch {predictor_cls.__name__} (ray)"
            ) as bar,
        ):
            for table in scored.iter_batches(batch_format="pyarrow", batch_size=None):
                writer.write(table)
                bar.update(table.num_rows)
    except Exception as exc:
        bad_line = first_bad_line(input_path) if file_format(input_path) == "jsonl" else None
        if bad_line is not None:  # Ray's JSON reader names no line: find it ourselves
            raise bad_line from exc
        raise
    return BatchResult(output=output_path, rows=writer.rows)


# --------------------------------------------------------------------------------------- CLI help


def add_batch_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `--engine --batch-size --concurrency --num-gpus --rows-per-part` to a batch command."""
    group = parser.add_argument_group("batch engine")
    group.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this process, resumable; ray: Ray Data (RAY_ADDRESS or a local instance)",
    )
    group.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="rows per predictor call"
    )
    group.add_argument(
        "--concurrency", type=int, default=1, help="ray: actors, each holding one model copy"
    )
    group.add_argument(
        "--num-gpus", type=float, default=0.0, help="ray: GPUs per actor (fractions share a GPU)"
    )
    group.add_argument(
        "--rows-per-part",
        type=int,
        default=DEFAULT_ROWS_PER_PART,
        help="local: rows per resumable part file",
    )
    return parser


def batch_options(args: argparse.Namespace) -> BatchOptions:
    """The validated engine settings from parsed arguments; pass on as `run_batch(..., **opts.model_dump())`."""
    return BatchOptions(
        engine=args.engine,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        num_gpus=args.num_gpus,
        rows_per_part=args.rows_per_part,
    )


# ---------------------------------------------------------------------------------------- commands


def add_model_io_arguments(
    parser: argparse.ArgumentParser, model_help: str = "a model directory or models:/NAME@ALIAS"
) -> argparse.ArgumentParser:
    """The surface every `nlprec-<package> <verb>` shares: `--model --input --output` and the
    engine arguments (`add_batch_arguments`)."""
    parser.add_argument("--model", required=True, help=model_help)
    parser.add_argument("--input", type=Path, required=True, help="rows in: JSONL or Parquet")
    parser.add_argument(
        "--output", type=Path, required=True, help="rows out: JSONL, or Parquet by its suffix"
    )
    return add_batch_arguments(parser)


def add_version_argument(parser: argparse.ArgumentParser, distribution: str) -> None:
    """`--version`: the installed version of `distribution` (read without importing it)."""
    import importlib.metadata

    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    parser.add_argument("--version", action="version", version=f"%(prog)s {version}")


def command_main(prog: str, run: Any, argv: list[str] | None = None) -> int:
    """Run `run(argv)` for a console script: a bad input, model or argument is one line on stderr
    (`prog: error: in.jsonl:7: not valid JSON ...`) and exit status 2, not a traceback."""
    import sys

    try:
        return int(run(argv) or 0)
    except (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, KeyError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (finished parts are kept; run again to resume)", file=sys.stderr)
        return 130

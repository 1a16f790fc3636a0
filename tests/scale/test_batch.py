"""nlprec.core.batch: local and Ray engines agree; resume after an interruption; clear input errors."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from nlprec.core.batch import (
    BatchInputError,
    BatchPredictorError,
    add_batch_arguments,
    batch_options,
    parts_dir,
    run_batch,
)


class ToyScorer:
    """Loads a 'model' (a weight) once; scores text length.

    Side channels for the tests: each load touches a file in `loads_dir`; each scored id is appended to
    `scored_log`; while the file `interrupt_flag` exists, a batch holding id `interrupt_at` raises
    KeyboardInterrupt (an interruption the resume test can switch off without changing the kwargs).
    """

    def __init__(
        self,
        weight: float = 1.0,
        loads_dir: str | None = None,
        scored_log: str | None = None,
        interrupt_flag: str | None = None,
        interrupt_at: int = -1,
    ):
        self.weight = weight
        self.scored_log = scored_log
        self.interrupt_flag, self.interrupt_at = interrupt_flag, interrupt_at
        if loads_dir:
            folder = Path(loads_dir)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"load-{id(self)}-{len(list(folder.iterdir()))}").touch()

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if (
            self.interrupt_flag
            and Path(self.interrupt_flag).exists()
            and self.interrupt_at in batch["id"]
        ):
            raise KeyboardInterrupt("simulated interruption")
        if self.scored_log:
            with open(self.scored_log, "a") as handle:
                handle.writelines(f"{i}\n" for i in batch["id"])
        return {
            "id": batch["id"],
            "score": [self.weight * len(text) for text in batch["text"]],
            "tokens": [text.split() for text in batch["text"]],
        }


class WrongLength:
    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        return {"id": batch["id"][:-1]}


def write_jsonl(path: Path, n: int) -> Path:
    with open(path, "w") as handle:
        for i in range(n):
            handle.write(json.dumps({"id": i, "text": "word " * (i % 7) + f"doc{i}"}) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_local_engine_scores_every_row_in_order(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", 50)
    loads = tmp_path / "loads"
    result = run_batch(
        ToyScorer,
        {"weight": 2.0, "loads_dir": str(loads)},
        source,
        tmp_path / "out.jsonl",
        batch_size=8,
        rows_per_part=16,
        progress=False,
    )
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert result.rows == 50 and [r["id"] for r in rows] == list(range(50))
    assert rows[3] == {
        "id": 3,
        "score": 2.0 * len("word " * 3 + "doc3"),
        "tokens": ["word"] * 3 + ["doc3"],
    }
    assert len(list(loads.iterdir())) == 1  # the model is loaded once, not once per batch or part
    assert not parts_dir(tmp_path / "out.jsonl").exists()


def test_parquet_in_and_out_match_jsonl(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", 30)
    run_batch(
        ToyScorer,
        {},
        source,
        tmp_path / "out.parquet",
        batch_size=7,
        rows_per_part=10,
        progress=False,
    )
    run_batch(ToyScorer, {}, source, tmp_path / "out.jsonl", progress=False)
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == read_jsonl(tmp_path / "out.jsonl")
    pq.write_table(pa.Table.from_pylist(read_jsonl(source)), tmp_path / "in.parquet")
    run_batch(
        ToyScorer, {}, tmp_path / "in.parquet", tmp_path / "from_parquet.jsonl", progress=False
    )
    assert (tmp_path / "from_parquet.jsonl").read_text() == (tmp_path / "out.jsonl").read_text()


def test_resume_skips_finished_parts(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", 40)
    output = tmp_path / "out.jsonl"
    flag, log = tmp_path / "interrupt", tmp_path / "scored.log"
    flag.touch()
    kwargs = {"scored_log": str(log), "interrupt_flag": str(flag), "interrupt_at": 25}
    with pytest.raises(KeyboardInterrupt):  # parts of 10 rows: 0 and 1 finish, part 2 dies half-way
        run_batch(ToyScorer, kwargs, source, output, batch_size=5, rows_per_part=10, progress=False)
    assert not output.exists()
    assert sorted(p.name for p in parts_dir(output).glob("part-*")) == [
        "part-00000.jsonl",
        "part-00001.jsonl",
    ]
    assert not list(parts_dir(output).glob(".*tmp*"))  # the half-written part left nothing behind

    flag.unlink()
    log.unlink()
    result = run_batch(
        ToyScorer, kwargs, source, output, batch_size=5, rows_per_part=10, progress=False
    )
    assert result.parts_reused == 2 and result.rows == 40
    assert [int(i) for i in log.read_text().split()] == list(
        range(20, 40)
    )  # finished rows not redone
    run_batch(ToyScorer, {}, source, tmp_path / "fresh.jsonl", progress=False)
    assert output.read_text() == (tmp_path / "fresh.jsonl").read_text()
    assert not parts_dir(output).exists()


def test_changed_input_discards_old_parts(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", 20)
    output = tmp_path / "out.jsonl"
    flag = tmp_path / "interrupt"
    flag.touch()
    kwargs = {"interrupt_flag": str(flag), "interrupt_at": 15}
    with pytest.raises(KeyboardInterrupt):
        run_batch(ToyScorer, kwargs, source, output, batch_size=5, rows_per_part=10, progress=False)
    flag.unlink()
    with open(source, "a") as handle:  # a different input: the finished part must not be reused
        handle.write(json.dumps({"id": 20, "text": "new"}) + "\n")
    result = run_batch(
        ToyScorer, kwargs, source, output, batch_size=5, rows_per_part=10, progress=False
    )
    assert result.parts_reused == 0 and [r["id"] for r in read_jsonl(output)] == list(range(21))


def test_malformed_line_is_named(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", 5)
    with open(source, "a") as handle:
        handle.write('\n{"id": 5, "text": oops}\n')
    with pytest.raises(BatchInputError, match=r"in.jsonl:7: not valid JSON"):
        run_batch(ToyScorer, {}, source, tmp_path / "out.jsonl", progress=False)
    assert not (tmp_path / "out.jsonl").exists()


def test_non_object_line_and_missing_file(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 0, "text": "a"}\n[1, 2]\n')
    with pytest.raises(BatchInputError, match=r"in.jsonl:2: expected a JSON object, got list"):
        run_batch(ToyScorer, {}, source, tmp_path / "out.jsonl", progress=False)
    with pytest.raises(BatchInputError, match="does not exist"):
        run_batch(ToyScorer, {}, tmp_path / "nope.jsonl", tmp_path / "out.jsonl", progress=False)


def test_predictor_returning_wrong_length_is_an_error(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", 4)
    with pytest.raises(
        BatchPredictorError, match="column 'id' with 3 values for a batch of 4 rows"
    ):
        run_batch(WrongLength, {}, source, tmp_path / "out.jsonl", progress=False)


def test_argparse_helper_gives_validated_options():
    parser = add_batch_arguments(argparse.ArgumentParser())
    options = batch_options(
        parser.parse_args(["--engine", "ray", "--batch-size", "16", "--num-gpus", "0.5"])
    )
    assert options.model_dump() == {
        "engine": "ray",
        "batch_size": 16,
        "concurrency": 1,
        "num_gpus": 0.5,
        "rows_per_part": 4096,
    }
    with pytest.raises(SystemExit):
        parser.parse_args(["--engine", "spark"])
    with pytest.raises(ValueError, match="batch_size"):
        batch_options(parser.parse_args(["--batch-size", "0"]))


# ------------------------------------------------------------------------------------------- Ray


@pytest.fixture()
def ray_with_this_module(ray_local):
    """Ray workers cannot import test modules by name: ship this one's classes by value."""
    ray_local.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray_local
    ray_local.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_ray_engine_equals_local_engine(tmp_path, ray_with_this_module):
    source = write_jsonl(tmp_path / "in.jsonl", 120)
    loads = tmp_path / "loads"
    run_batch(
        ToyScorer, {"weight": 0.5}, source, tmp_path / "local.jsonl", batch_size=16, progress=False
    )
    result = run_batch(
        ToyScorer,
        {"weight": 0.5, "loads_dir": str(loads)},
        source,
        tmp_path / "ray.jsonl",
        engine="ray",
        batch_size=16,
        concurrency=1,
        progress=False,
    )
    assert result.rows == 120
    assert (tmp_path / "ray.jsonl").read_text() == (tmp_path / "local.jsonl").read_text()
    assert len(list(loads.iterdir())) == 1  # one actor, one model load for 8 batches


def test_ray_engine_names_a_malformed_line(tmp_path, ray_with_this_module):
    source = write_jsonl(tmp_path / "in.jsonl", 3)
    with open(source, "a") as handle:
        handle.write("{not json\n")
    with pytest.raises(BatchInputError, match=r"in.jsonl:4: not valid JSON"):
        run_batch(ToyScorer, {}, source, tmp_path / "out.jsonl", engine="ray", progress=False)
    assert not (tmp_path / "out.jsonl").exists()


class MixedPairs:
    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        return {"hits": [[["d1", 0.5]] for _ in batch["id"]]}


def test_column_arrow_cannot_type_is_named(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", 2)
    with pytest.raises(BatchPredictorError, match="column 'hits' with values Arrow cannot store"):
        run_batch(MixedPairs, {}, source, tmp_path / "out.jsonl", progress=False)


def test_gzipped_jsonl_input(tmp_path):
    import gzip

    source = write_jsonl(tmp_path / "in.jsonl", 12)
    with gzip.open(tmp_path / "in.jsonl.gz", "wt") as handle:
        handle.write(source.read_text())
    run_batch(ToyScorer, {}, tmp_path / "in.jsonl.gz", tmp_path / "from_gz.jsonl", progress=False)
    run_batch(ToyScorer, {}, source, tmp_path / "plain.jsonl", progress=False)
    assert (tmp_path / "from_gz.jsonl").read_text() == (tmp_path / "plain.jsonl").read_text()


# ---------------------------------------------------------------- one surface for every package

BATCH_COMMANDS = {  # console script -> (module run by `python -m`, a batch verb)
    "nlprec-ranking": ("nlprec.ranking.cli", "search"),
    "nlprec-sessionrec": ("nlprec.sessionrec.batch", "recommend"),
    "nlprec-distill": ("nlprec.clinical_distill.cli", "tag"),
    "nlprec-longdoc": ("nlprec.clinical_longdoc.cli", "classify"),
    "nlprec-beliefs": ("nlprec.beliefs.__main__", "predict"),
}
SURFACE = ("--model", "--input", "--output", "--engine", "--concurrency", "--num-gpus")


@pytest.mark.parametrize("script", sorted(BATCH_COMMANDS))
def test_every_batch_command_has_the_shared_surface_and_a_version(script):
    import subprocess

    module, verb = BATCH_COMMANDS[script]
    help_text = subprocess.run(
        [sys.executable, "-m", module, verb, "--help"], capture_output=True, text=True, timeout=60
    )
    assert help_text.returncode == 0, help_text.stderr
    assert all(flag in help_text.stdout for flag in SURFACE), help_text.stdout
    version = subprocess.run(
        [str(Path(sys.executable).with_name(script)), "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0 and version.stdout.startswith(f"{script} "), version.stderr


@pytest.mark.parametrize("module", sorted({m for m, _ in BATCH_COMMANDS.values()} | {"nlprec.mohawk.cli"}))
def test_help_does_not_import_torch(module):
    """`--help` answers without loading torch (under a second on an idle machine)."""
    import subprocess

    probe = (
        "import runpy, sys; sys.argv = ['x', '--help']\n"
        f"try:\n    runpy.run_module({module!r}, run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "NO-TORCH" in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("script", ["nlprec-distill", "nlprec-sessionrec"])
def test_bad_input_is_one_line_naming_file_and_line(script, tmp_path):
    import subprocess

    bad = tmp_path / "in.jsonl"
    bad.write_text('{"text": "fine", "user_id": "u"}\n{not json\n')
    module, verb = BATCH_COMMANDS[script]
    args = ["--model", str(tmp_path / "no-model"), "--input", str(bad), "--output", str(tmp_path / "o.jsonl")]
    done = subprocess.run(
        [sys.executable, "-m", module, verb, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{script}: error: ") and "Traceback" not in done.stderr, done.stderr[-2000:]

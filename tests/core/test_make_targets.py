"""Every target `make help` lists does something: a dry run (`make -n`) of each prints commands.

A pattern rule listed in .PHONY silently does nothing ("Nothing to be done"), which is how
`make pipeline-<name>` once broke; the dry run catches that for every target, and for one real
pipeline target per pipeline file.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def listed_targets() -> list[str]:
    output = make("help").stdout
    targets = [line.split()[0] for line in output.splitlines() if line and not line.startswith("pipelines:")]
    return [t for t in targets if re.fullmatch(r"[a-z][a-z-]*", t)]


def pipelines() -> list[str]:
    return sorted(path.stem for path in (ROOT / "pipelines").glob("*.yaml"))


def test_help_lists_the_documented_targets():
    targets = listed_targets()
    for expected in ("setup", "lock", "test", "demo", "bench", "serve", "ui"):
        assert expected in targets, f"`make help` does not list {expected}"
    assert "pipeline-<name>" in make("help").stdout


@pytest.mark.parametrize("target", listed_targets())
def test_every_listed_target_has_commands(target):
    result = make("-n", "--always-make", target)  # stamps that are up to date still show their commands
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" not in result.stdout + result.stderr
    assert result.stdout.strip(), f"make -n {target} prints no command"


@pytest.mark.parametrize("pipeline", pipelines())
def test_every_pipeline_has_a_make_target(pipeline):
    result = make("-n", f"pipeline-{pipeline}", "ARGS=--set params.example=1")
    assert result.returncode == 0, result.stderr
    assert f"nlprec run pipelines/{pipeline}.yaml" in result.stdout
    assert "--set params.example=1" in result.stdout


def test_bench_names_how_each_script_runs():
    """A benchmark that needs arguments says how `make bench` runs it (or why it skips)."""
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        source = script.read_text()
        needs_arguments = "required=True" in source or "add_subparsers(" in source
        directive = re.search(r"^# make bench: *(.*)$", source, flags=re.M)
        if needs_arguments and not script.name.endswith("_gpu.py"):
            assert directive, f"{script.name} needs arguments: add '# make bench: ARGS' or '# make bench: skip REASON'"

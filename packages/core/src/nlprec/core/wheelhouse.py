"""The wheels a GPU node needs to run `nlprec run --no-track --export DIR`, downloaded from the lock.

A cluster node or an air-gapped box usually has PyTorch, transformers, sentence-transformers and
accelerate, but no network and none of our other dependencies. The runner's path without tracking
needs only pydantic, PyYAML, rich, filelock, safetensors and tqdm (and what they need); MLflow is
not among them. `python -m nlprec.core.wheelhouse DIR` downloads, with
the lock's pins and hashes, that set with its dependencies (a few MiB) for CPython 3.12 on
manylinux x86-64. `--package mohawk` adds what a model package's steps need beyond the node's own
packages. On the node:

    pip install --no-index --find-links DIR pydantic pyyaml rich filelock safetensors tqdm
    PYTHONPATH=packages/core/src:packages/mohawk/src python -m nlprec.core.cli run \\
        pipelines/mohawk-distill.yaml --no-track --export out/run
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from nlprec.core.errors import UserError

RUNNER_NEEDS = ("pydantic", "pyyaml", "rich", "filelock", "safetensors", "tqdm")
ON_THE_NODE = ("torch", "transformers", "sentence-transformers", "accelerate")
TRACKING_ONLY = ("mlflow", "mlflow-skinny")  # a package may declare them (model serving); --no-track never imports them
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
TARGET = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
          "implementation_name": "cpython", "platform_python_implementation": "CPython"}
_LOCK_ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+)")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, list[str]]:
    """name -> its lines in the lock (`name==version \\` and its `--hash` lines), comments dropped."""
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in path.read_text().splitlines():
        if match := _LOCK_ENTRY.match(line):
            current = entries[normalize(match["name"])] = [line]
        elif current is not None and line.strip().startswith("--hash="):
            current.append(line)
        elif not line.startswith(" "):
            current = None
    return entries


def requirements_of(name: str) -> list[str]:
    """The names `name` requires on the target (CPython 3.12, Linux x86-64), from its installed metadata."""
    from packaging.requirements import Requirement

    try:
        declared = importlib.metadata.requires(name) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    found = []
    for text in declared:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({**TARGET, "extra": ""}):
            found.append(normalize(requirement.name))
    return found


def closure(names: list[str] | tuple[str, ...]) -> set[str]:
    seen: set[str] = set()
    stack = [normalize(n) for n in names]
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(requirements_of(name))
    return seen


def wheel_set(packages: list[str] = ()) -> list[str]:
    """The distributions to ship: everything the runner needs (all small, so shipped even where the
    node may have some: its versions are unknown here), and what each named package's steps need
    beyond the node's own packages and their dependencies."""
    extra: list[str] = []
    for package in packages:
        dist = package if package.startswith("nlprec-") else f"nlprec-{package}"
        try:
            importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            raise UserError(f"no installed package {dist!r} (expected one of packages/*)") from None
        extra += [r for r in requirements_of(dist) if not r.startswith("nlprec-") and r not in TRACKING_ONLY]
    beyond_the_node = closure(extra) - closure(ON_THE_NODE) if extra else set()
    return sorted(closure(RUNNER_NEEDS) | beyond_the_node)


def download(names: list[str], folder: Path, lock: Path) -> list[Path]:
    entries = read_lock(lock)
    missing = [n for n in names if n not in entries]
    if missing:
        raise UserError(f"{lock}: no pin for {', '.join(missing)}")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write("".join(line + "\n" for n in names for line in entries[n]))
        requirements = handle.name
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
               "--require-hashes", "--only-binary=:all:", "--python-version", TARGET["python_version"],
               "--implementation", "cp", *(f"--platform={p}" for p in PLATFORMS), "-d", str(folder), "-r", requirements]
    try:
        subprocess.run(command, check=True)
    except subprocess.CalledProcessError as error:
        raise UserError(f"pip download failed (exit {error.returncode}): see its message above") from None
    finally:
        Path(requirements).unlink()
    return sorted(p for p in folder.glob("*.whl") if normalize(p.name.split("-")[0]) in names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nlprec.core.wheelhouse", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--package", action="append", default=[], help="also what this model package needs (e.g. mohawk)")
    parser.add_argument("--lock", type=Path, default=Path("requirements/lock.txt"))
    parser.add_argument("--dry-run", action="store_true", help="list the wheels, download nothing")
    args = parser.parse_args(argv)
    names = wheel_set(args.package)
    if args.dry_run:
        print("\n".join(names))
        return 0
    wheels = download(names, args.folder, args.lock)
    total = sum(p.stat().st_size for p in wheels)
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 2**20:7.2f} MiB  {wheel.name}")
    print(f"{len(wheels)} wheels, {total / 2**20:.1f} MiB in {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

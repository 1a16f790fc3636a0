"""Content-addressed step cache.

A step's key hashes what determines its result: every source file of its nlprec package and of
nlprec.core (editable installs never change their version, so the files themselves count), its
resolved config, the keys of the steps it needs, its seed and the versions of the third-party
packages results depend on. An entry is a directory `<key>/` holding `outputs/` (the files the step wrote) and
`result.json` (what it returned and the metrics it logged). Entries are written in a temporary
directory and renamed into place, so a crash never leaves half an entry and two processes computing
the same step never corrupt each other: the second rename loses and its copy is discarded.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlprec.core.hashing import files_under, hash_files, hash_value
from nlprec.core.io import commit_directory
from pydantic import BaseModel

CACHE_FORMAT = 1
_RESULT_FILE = "result.json"


@functools.cache
def _installed_distributions() -> dict[str, list[str]]:
    """Top-level module -> distributions; scanning every installed package takes about a second."""
    return importlib.metadata.packages_distributions()


def _distribution_of(module_name: str) -> str | None:
    top = module_name.split(".")[0]
    if top == "nlprec":  # namespace package: map nlprec.<pkg> to its distribution
        sub = module_name.split(".")[1] if "." in module_name else ""
        return "nlprec-" + sub.replace("_", "-") if sub else None
    names = _installed_distributions().get(top)
    return names[0] if names else None


def package_versions(module_name: str) -> dict[str, str]:
    """Versions of the step's own distribution, nlprec-core and the heavy libraries results depend on."""
    wanted = {"nlprec-core", "torch", "transformers", "sentence-transformers", "numpy"}
    own = _distribution_of(module_name)
    if own:
        wanted.add(own)
    versions = {}
    for name in sorted(wanted):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _source_roots(module_name: str) -> list[Path]:
    """The first-party source a step can reach: its nlprec package and nlprec.core, or its own file.

    A step of `nlprec.<pkg>.steps` may call any module of `nlprec.<pkg>` and of `nlprec.core`, so
    both folders count whole. A step defined outside nlprec (a user's module) counts its own file.
    """
    parts = module_name.split(".")
    packages = {"nlprec.core"}
    if parts[0] == "nlprec" and len(parts) > 1:
        packages.add(f"nlprec.{parts[1]}")
    roots = []
    for package in sorted(packages):
        module = importlib.import_module(package)
        roots.extend(Path(p) for p in module.__path__)
    if parts[0] != "nlprec":
        module = sys.modules.get(module_name)
        origin = getattr(module, "__file__", None)
        if origin:
            roots.append(Path(origin))
    return roots


_FINGERPRINTS: dict[str, tuple[tuple, str]] = {}


def source_fingerprint(module_name: str) -> str:
    """Hash of every Python file under the step's source roots: names and contents, in a fixed order.

    Every step of every trial and seed asks for it, so the contents are read again only when a
    file's name, size or modification time changed since the last call.
    """
    files = []
    for root in _source_roots(module_name):
        named = files_under(root, "*.py") if root.is_dir() else [(root.name, root)]
        files += [(str(Path(root.name) / name) if root.is_dir() else name, path) for name, path in named]
    stats = [(name, path.stat()) for name, path in files]
    stamp = tuple((name, stat.st_mtime_ns, stat.st_size) for name, stat in stats)
    known = _FINGERPRINTS.get(module_name)
    if known is None or known[0] != stamp:
        known = _FINGERPRINTS[module_name] = (stamp, hash_files(files))
    return known[1]


def step_key(function: Callable, config: BaseModel, upstream_keys: dict[str, str], seed: int) -> str:
    payload = {
        "format": CACHE_FORMAT,
        "function": f"{function.__module__}:{function.__qualname__}",
        "source": source_fingerprint(function.__module__),
        "config": config.model_dump(mode="json"),
        "upstream": dict(sorted(upstream_keys.items())),
        "versions": package_versions(function.__module__),
        "seed": seed,
    }
    return hash_value(payload, length=32)


@dataclass
class CacheEntry:
    key: str
    path: Path
    result: dict[str, Any]

    @property
    def outputs(self) -> Path:
        return self.path / "outputs"


def rewrite_paths(value: Any, old_root: str, new_root: str) -> Any:
    """Paths a step returned under its temporary output directory now point into the cache entry."""
    if isinstance(value, str) and value.startswith(old_root):
        return new_root + value[len(old_root) :]
    if isinstance(value, dict):
        return {k: rewrite_paths(v, old_root, new_root) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite_paths(v, old_root, new_root) for v in value]
    return value


class StepCache:
    """The cache directory: `<root>/<step name>-<key>/`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._staging = self.root / ".staging"
        self._staging.mkdir(exist_ok=True)

    def entry_path(self, step_name: str, key: str) -> Path:
        return self.root / f"{step_name}-{key}"

    def lookup(self, step_name: str, key: str) -> CacheEntry | None:
        path = self.entry_path(step_name, key)
        result_file = path / _RESULT_FILE
        if not result_file.exists():
            return None
        try:
            result = json.loads(result_file.read_text())
        except json.JSONDecodeError:
            return None
        return CacheEntry(key=key, path=path, result=result)

    def new_staging_dir(self, step_name: str) -> Path:
        """A fresh temporary directory for a running step; its `outputs/` is the step's output_dir."""
        staging = Path(tempfile.mkdtemp(prefix=f"{step_name}-", dir=self._staging))
        (staging / "outputs").mkdir()
        return staging

    def commit(
        self, staging: Path, step_name: str, key: str, result: dict[str, Any], replace: bool = False
    ) -> CacheEntry:
        """Write result.json into the staging dir, then rename it into place (atomic on one filesystem).

        `replace` (for --force) first moves an existing entry aside, so the old one stays whole until
        the new one is in place.
        """
        final = self.entry_path(step_name, key)
        result = rewrite_paths(result, str(staging), str(final))
        (staging / _RESULT_FILE).write_text(json.dumps(result, indent=2, default=str))
        theirs = not replace and final.exists()  # another process finished the same step first
        commit_directory(staging, final, replace=replace)
        existing = self.lookup(step_name, key) if theirs else None
        return existing or CacheEntry(key=key, path=final, result=result)

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def entries(self) -> list[dict[str, Any]]:
        rows = []
        for path in sorted(self.root.iterdir()):
            if path.name.startswith(".") or not (path / _RESULT_FILE).exists():
                continue
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            rows.append({"entry": path.name, "bytes": size, "modified": path.stat().st_mtime})
        return rows

    def prune(self, older_than_days: float | None = None, keep: set[str] | None = None) -> int:
        """Remove entries (all, or those older than N days) and any staging leftovers; returns the count."""
        removed = 0
        cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
        for row in self.entries():
            if keep and row["entry"] in keep:
                continue
            if cutoff is None or row["modified"] < cutoff:
                shutil.rmtree(self.root / row["entry"], ignore_errors=True)
                removed += 1
        stale = time.time() - 3600  # a younger staging dir may belong to a step running right now
        for leftover in self._staging.iterdir():
            if leftover.stat().st_mtime < stale:
                shutil.rmtree(leftover, ignore_errors=True)
        return removed

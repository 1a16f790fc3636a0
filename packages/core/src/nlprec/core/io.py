"""Atomic writes: a reader sees the old content or the new, never half of either.

Files are written to a temporary sibling (same folder, so the same file system), flushed to disk,
then renamed onto the target with `os.replace`, which POSIX makes atomic. A crash, an exception or
Ctrl-C part-way leaves the old file untouched and no temporary behind. Folders are built in a
temporary sibling and committed by rename in the same way (`atomic_directory`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of `path` to write (for libraries that write to a path themselves),
    renamed onto `path` when the block succeeds and removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(staging)
        os.replace(staging, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """A handle on a temporary sibling of `path`, flushed to disk and renamed onto `path` when the
    block succeeds."""
    with atomic_path(path) as staging, open(
        staging, mode, encoding=None if "b" in mode else encoding
    ) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)


def atomic_write_json(path: str | Path, payload: Any, indent: int | None = None) -> Path:
    """`payload` as JSON (non-JSON values such as paths written with `str`)."""
    return atomic_write_text(path, json.dumps(payload, indent=indent, default=str))


@contextlib.contextmanager
def atomic_directory(target: str | Path, replace: bool = True) -> Iterator[Path]:
    """A fresh staging folder beside `target`; when the block succeeds it becomes `target`.

    An existing `target` is swapped out and removed (`replace=True`), or kept (`replace=False`:
    another process that finished the same folder first wins, the staged copy is dropped). On an
    exception the staging folder is removed and `target` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        yield staging
        commit_directory(staging, target, replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def commit_directory(staging: Path, target: Path, replace: bool = True) -> Path:
    """Rename the finished folder `staging` onto `target` (see `atomic_directory`)."""
    staging, target = Path(staging), Path(target)
    if not target.exists():
        try:
            os.rename(staging, target)
            return target
        except OSError:  # another process committed the same target in between
            if not target.exists():
                raise
    if not replace:
        shutil.rmtree(staging, ignore_errors=True)
        return target
    retired = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
    os.rename(target, retired / "entry")
    os.rename(staging, target)
    shutil.rmtree(retired, ignore_errors=True)
    return target

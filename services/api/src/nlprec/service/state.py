"""The service's writable state: index updates and events survive a restart.

Layout under `state_dir`, one folder per served model source (a new champion starts afresh):

    ranking-<key>/index/            the SearchEngine as last checkpointed (written atomically)
    ranking-<key>/documents.jsonl   document writes since that copy (write-ahead log, replayed at start)
    sessionrec-<key>/snapshots/N/   recommender snapshots; CURRENT names the live one
    sessionrec-<key>/events.jsonl   events accepted since that snapshot (write-ahead log)

An event is appended (and fsynced) to the log before the recommender applies it, and the HTTP
answer comes after both. On start the service loads the snapshot and replays the log; replay is
harmless for events already in the snapshot because the recommender ignores a known event_id.
A snapshot is written to a fresh folder and only then named in CURRENT (an atomic rename), after
which the log is emptied; a crash at any point leaves a snapshot plus a log that reproduce the state.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nlprec.core.hashing import hash_text
from nlprec.core.io import atomic_write_bytes, atomic_write_text

logger = logging.getLogger("nlprec.service")


def source_key(resolved_source: str | Path) -> str:
    """A short stable name for a model source (its resolved local folder)."""
    return hash_text(str(Path(resolved_source).resolve()), length=12)


def model_state_folder(state_dir: Path, model: str, resolved_source: str | Path) -> Path:
    folder = state_dir / f"{model}-{source_key(resolved_source)}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "source.txt").write_text(f"{resolved_source}\n")
    return folder


class EventLog:
    """Append-only JSON-lines log of accepted events."""

    def __init__(self, path: Path):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, events: list[dict[str, Any]]) -> int:
        """Append and fsync; returns the log's size before, for `truncate` to undo the append."""
        lines = "".join(json.dumps(event, separators=(",", ":")) + "\n" for event in events)
        with self.path.open("a") as handle:
            offset = handle.tell()
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())
        return offset

    def truncate(self, offset: int) -> None:
        with self.path.open("r+") as handle:
            handle.truncate(offset)
            handle.flush()
            os.fsync(handle.fileno())

    def read(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open() as handle:
            for number, line in enumerate(handle, 1):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    # Only a crash in the middle of an append leaves a torn line, and that
                    # request was never answered, so its client retries it.
                    logger.warning("%s:%d: skipping a torn event line", self.path, number)

    def __len__(self) -> int:
        if not self.path.exists():
            return 0
        with self.path.open() as handle:
            return sum(1 for _ in handle)

    def clear(self) -> None:
        atomic_write_text(self.path, "")

    def size(self) -> int:
        """Bytes in the log: an offset for `drop_before`."""
        return self.path.stat().st_size if self.path.exists() else 0

    def drop_before(self, offset: int) -> None:
        """Keep only what was appended after `offset` (atomically); appends must not run meanwhile."""
        with self.path.open("rb") as handle:
            handle.seek(offset)
            tail = handle.read()
        atomic_write_bytes(self.path, tail)


class Snapshots:
    """Numbered snapshot folders with a CURRENT pointer file."""

    def __init__(self, folder: Path):
        self.folder = folder / "snapshots"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pointer = self.folder / "CURRENT"

    def current(self) -> Path | None:
        if not self.pointer.exists():
            return None
        path = self.folder / self.pointer.read_text().strip()
        return path if path.is_dir() else None

    def write(self, save: Callable[[Path], Any]) -> Path:
        """Call `save(folder)` on a fresh folder, then make it current and drop older ones."""
        current = self.current()
        number = int(current.name) + 1 if current is not None else 1
        target = self.folder / str(number)
        if target.exists():  # left by a crash before the pointer moved
            shutil.rmtree(target)
        save(target)
        atomic_write_text(self.pointer, target.name)
        for old in self.folder.iterdir():
            if old.is_dir() and old != target:
                shutil.rmtree(old, ignore_errors=True)
        return target

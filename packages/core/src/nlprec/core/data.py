"""Where datasets live: `NLPREC_DATA` (default ./data). Missing data is a clear error, never a crash."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nlprec.core.errors import UserError
from nlprec.core.io import atomic_open


class DatasetNotFound(UserError):
    """A dataset that is not where it is expected."""


def data_root() -> Path:
    return Path(os.environ.get("NLPREC_DATA") or "data").expanduser().resolve()


def dataset_path(ref: str | Path, must_contain: tuple[str, ...] = ()) -> Path:
    """An absolute path, or one relative to the data root; checks it (and `must_contain`) exists."""
    path = Path(ref).expanduser()
    if not path.is_absolute() and not path.exists():
        path = data_root() / path
    if not path.exists():
        raise DatasetNotFound(
            f"dataset {str(ref)!r} not found: expected it at {path} "
            f"(NLPREC_DATA={os.environ.get('NLPREC_DATA', '<unset: ./data>')})"
        )
    missing = [name for name in must_contain if not (path / name).exists()]
    if missing:
        raise DatasetNotFound(f"dataset {path} is incomplete: missing {', '.join(missing)}")
    return path.resolve()


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file (optionally .gz); a malformed line raises with its line number."""
    import gzip

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise UserError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            yield record


def write_jsonl_atomic(path: str | Path, records: list[dict[str, Any]] | Iterator[dict[str, Any]]) -> int:
    """Write records to `path` through a temporary file and a rename; returns the count."""
    count = 0
    with atomic_open(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count

"""Fingerprints: one hashing contract for caches, indexes, exports and data splits.

Every fingerprint is the sha256 hex digest of a canonical byte stream, cut to `length` hex
characters (None: all 64):

- a value (`hash_value`): its JSON with sorted keys, non-JSON values written with `str`;
- a text (`hash_text`): its UTF-8 bytes;
- a file's content (`hash_file`): its bytes, the usual checksum;
- a set of files (`hash_files`): for each (name, path) in the given order, the name, a NUL, the
  content, a NUL. The content is the file's bytes, or only the first `head_bytes` (cheap, for large
  weights, with the size added), or only size and modification time (`stat_only`, for large data);
- a stable pseudo-random number in [0, 1) (`unit_interval`): the first 8 bytes of the hash of the
  parts joined by ":", as a fraction of 2**64 (a split that does not depend on file order).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

BLOCK = 1 << 20


def _cut(digest: Any, length: int | None) -> str:
    return digest.hexdigest()[:length] if length else digest.hexdigest()


def hash_value(value: Any, length: int | None = None) -> str:
    return hash_text(json.dumps(value, sort_keys=True, default=str), length)


def hash_text(text: str, length: int | None = None) -> str:
    return _cut(hashlib.sha256(text.encode()), length)


def _update_with_file(digest: Any, path: Path, limit: int | None = None) -> None:
    with open(path, "rb") as handle:
        if limit is not None:
            digest.update(handle.read(limit))
            return
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)


def hash_file(path: str | Path, length: int | None = None) -> str:
    digest = hashlib.sha256()
    _update_with_file(digest, Path(path))
    return _cut(digest, length)


def hash_files(
    files: Iterable[tuple[str, Path]],
    length: int | None = None,
    head_bytes: int | None = None,
    stat_only: bool = False,
) -> str:
    """The fingerprint of named files (see the module doc); the caller fixes the order."""
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode() + b"\0")
        stat = Path(path).stat()
        if stat_only:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        elif head_bytes is not None:
            digest.update(f"{stat.st_size}:".encode())
            _update_with_file(digest, path, head_bytes)
        else:
            _update_with_file(digest, path)
        digest.update(b"\0")
    return _cut(digest, length)


def files_under(path: str | Path, pattern: str = "*") -> list[tuple[str, Path]]:
    """(name relative to `path`, path) of every file matching `pattern` under a folder, in name
    order; a single file is itself, by its name."""
    path = Path(path)
    if path.is_file():
        return [(path.name, path)]
    found = sorted(p for p in path.rglob(pattern) if p.is_file() and "__pycache__" not in p.parts)
    return [(str(p.relative_to(path)), p) for p in found]


def unit_interval(*parts: Any) -> float:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64

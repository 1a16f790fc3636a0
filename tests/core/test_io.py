"""Atomic writes: a crash part-way leaves the old file (or folder) intact and no temporary behind."""

import json

import pytest
from nlprec.core.io import (
    atomic_directory,
    atomic_open,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)


class Crash(Exception):
    pass


def test_writes_replace_the_file(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic_write_json(target, {"x": 1})
    assert json.loads(target.read_text()) == {"x": 1}
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_a_crash_mid_write_leaves_the_old_file_intact(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(Crash), atomic_open(target) as handle:
        handle.write("half of the new")
        raise Crash
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_crash_while_building_a_folder_leaves_the_old_folder(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target) as staging:
        (staging / "weights").write_text("v1")
    with pytest.raises(Crash), atomic_directory(target) as staging:
        (staging / "weights").write_text("v2, half")
        raise Crash
    assert (target / "weights").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    with atomic_directory(target) as staging:
        (staging / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"
    with atomic_directory(target, replace=False) as staging:  # a finished folder is kept
        (staging / "weights").write_text("v3")
    assert (target / "weights").read_text() == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]

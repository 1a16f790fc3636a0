"""Sessionization rules, loaders and bad input."""

import numpy as np
import pandas as pd
import pytest
from nlprec.sessionrec.data import EventLog, SessionData, sessionize
from nlprec.sessionrec.loaders import (
    ColumnMapping,
    read_event_file,
    read_lastfm1k,
)
from nlprec.sessionrec.split import temporal_split

MIN = 60.0


def log(rows, session=False):
    cols = ["user", "time", "item"] + (["session"] if session else [])
    return EventLog(pd.DataFrame(rows, columns=cols))


def test_gap_repeats_cap_and_unsorted_input():
    rows = [  # deliberately unsorted, with an exact duplicate event
        ("u", 30 * MIN, "c"),
        ("u", 0.0, "a"),
        ("u", 1 * MIN, "b"),
        ("u", 2 * MIN, "a"),  # in-session repeat: dropped, first play kept
        ("u", 1 * MIN, "b"),  # duplicate event
        ("u", 31 * MIN, "d"),
        ("u", 32 * MIN, "e"),
    ]
    data = sessionize(log(rows), gap_minutes=20, max_session_len=2, min_sessions=1)
    (user,) = data.users
    assert [[data.items[i] for i in s] for s in user.sessions] == [["a", "b"], ["c", "d"]]
    assert user.times.tolist() == [0.0, 30 * MIN]


def test_session_column_and_min_sessions():
    rows = [("u", 0.0, "a", "s1"), ("u", 1.0, "b", "s2"), ("v", 0.0, "a", "s9")]
    data = sessionize(log(rows, session=True), min_sessions=2)
    assert [u.user for u in data.users] == ["u"]
    assert len(data.users[0].sessions) == 2  # the id change splits, though 1 s apart
    assert data.items == ["a", "b"]


def test_bad_arguments_and_empty_logs():
    with pytest.raises(ValueError, match="empty"):
        sessionize(log([]))
    with pytest.raises(ValueError, match="gap_minutes"):
        sessionize(log([("u", 0.0, "a")]), gap_minutes=0)
    with pytest.raises(ValueError, match="no user"):
        sessionize(log([("u", 0.0, "a")]), min_sessions=2)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        sessionize(log([("u", 0.0, "zz")]), min_sessions=1, items=["a"])


def test_csv_loader_reports_bad_lines_with_numbers(tmp_path, caplog):
    path = tmp_path / "log.csv"
    path.write_text(
        "who,when,what\n"
        "u1,2024-01-01T10:00:00Z,a\n"
        "u1,1704103260,b\n"  # epoch seconds
        "u1,not-a-time,c\n"  # line 4
        "u2\n"  # line 5: too few fields
        "u2,2024-01-01T10:00:00Z,\n"  # line 6: empty item
        "u2,2999-01-01T00:00:00Z,d\n"  # line 7: future
    )
    events = read_event_file(path, ColumnMapping(user="who", time="when", item="what"), now=1.8e9)
    assert [n for n, _ in events.bad_lines] == [4, 5, 6, 7]
    assert "future" in dict(events.bad_lines)[7]
    assert events.frame["time"].tolist() == [1704103200.0, 1704103260.0]
    assert "4 bad line(s)" in caplog.text
    with pytest.raises(ValueError, match="no column 'nope'"):
        read_event_file(path, ColumnMapping(user="nope", time="when", item="what"))
    with pytest.raises(FileNotFoundError):
        read_event_file(tmp_path / "missing.csv", ColumnMapping())


def test_temporal_split_keeps_every_user_with_history():
    users = SessionData(["a"], []).users
    data = sessionize(
        log([("u", t * 3600.0, "a") for t in range(5)] + [("v", 0.0, "a"), ("v", 7200.0, "a")]),
        min_sessions=2,
    )
    split = temporal_split(data, test_sessions=1, val_sessions=1)
    assert users == [] and split.n_train.tolist() == [3, 1]  # v: no room for validation
    assert [(c.user, c.position) for c in split.test_cases] == [(0, 4), (1, 1)]
    assert [(c.user, c.position) for c in split.val_cases] == [(0, 3)]
    merged = split.merged_validation()
    assert merged.n_train.tolist() == [4, 1] and merged.test_cases == split.test_cases
    pop = split.train_popularity()
    assert pop.tolist() == [4.0]  # 3 + 1 training sessions


def test_save_load_roundtrip(tmp_path):
    data = sessionize(log([("u", 0.0, "a"), ("u", 7200.0, "b")]), min_sessions=1)
    back = SessionData.load(data.save(tmp_path / "s.json"))
    assert back.items == data.items and back.time_scale == data.time_scale
    assert [s.tolist() for s in back.users[0].sessions] == [[0], [1]]


def test_lastfm_sample_format(shared_data):
    events = read_lastfm1k(shared_data / "listening" / "lastfm1k-sample")
    assert len(events.frame) + len(events.bad_lines) == 5000
    data = sessionize(events)
    assert data.users[0].user == "user_000001" and data.n_sessions > 100
    assert all(np.all(np.diff(u.times) > 0) for u in data.users)

"""Batch inference over an event file (local engine), resumable through nlprec.core.batch."""

import json

import numpy as np
from nlprec.sessionrec.batch import main, parse_columns
from nlprec.sessionrec.data import SessionData, UserSessions
from nlprec.sessionrec.online import OnlineRecommender


def test_batch_command_writes_one_row_per_user(tmp_path):
    items = [f"i{j}" for j in range(5)]
    data = SessionData(
        items, [UserSessions("alice", [np.array([0, 1]), np.array([1])], np.array([0.0, 7200.0]))]
    )
    OnlineRecommender.from_sessions(data).save(tmp_path / "model")
    events = tmp_path / "events.csv"
    events.write_text("uid,ts,track\nalice,8000,i2\nbob,100,i3\nbob,50,i4\ncarol,oops,i1\n")
    out = tmp_path / "recs.jsonl"
    args = [
        "batch",
        "--model",
        str(tmp_path / "model"),
        "--events",
        str(events),
        "--columns",
        "user=uid,time=ts,item=track",
        "--output",
        str(out),
        "--k",
        "3",
    ]
    assert main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["user_id"] for r in rows] == ["alice", "bob"]  # carol's only line is bad (reported)
    assert all(len(r["items"]) == 3 and len(r["repeat"]) == 3 for r in rows)
    assert rows[0]["items"][0] in {"i1", "i2"} and not rows[0]["fallback"]
    assert parse_columns("user=0,time=1,item=5").item == 5

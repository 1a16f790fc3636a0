"""OnlineRecommender: recommendations, fallback, incremental idempotent updates, persistence."""

import numpy as np
import pytest
from nlprec.sessionrec.data import SessionData, UserSessions
from nlprec.sessionrec.online import Event, OnlineRecommender

NOW = 1_700_100_000.0


def tiny_state() -> OnlineRecommender:
    items = [f"i{j}" for j in range(6)]
    users = [
        UserSessions(
            "alice", [np.array([0, 1]), np.array([1, 2])], np.array([NOW - 7200, NOW - 3600])
        ),
        UserSessions("bob", [np.array([3]), np.array([4, 3])], np.array([NOW - 9000, NOW - 5000])),
    ]
    return OnlineRecommender.from_sessions(SessionData(items, users))


def test_known_user_gets_repeats_ranked_by_activation():
    rec = tiny_state().recommend("alice", k=3, now=NOW)
    assert not rec.fallback
    assert rec.items[0] == "i1"  # used twice, most recently
    assert rec.repeat == [True, True, True]
    assert rec.scores == sorted(rec.scores, reverse=True)


def test_cold_start_user_gets_flagged_popularity_fallback():
    state = tiny_state()
    rec = state.recommend("nobody", k=2, now=NOW)
    assert rec.fallback and rec.items == ["i1", "i3"] and rec.repeat == [False, False]
    assert not state.known_user("nobody") and state.known_user("alice")
    assert rec.notes  # says why


def test_history_only_and_unknown_items_and_exclude_seen():
    state = tiny_state()
    rec = state.recommend(history=["i5", "nope"], k=6, exclude_seen=True, now=NOW)
    assert not rec.fallback and "i5" not in rec.items and len(rec.items) == 5
    assert any("unknown" in n for n in rec.notes)
    empty = state.recommend(history=[], k=2, now=NOW)
    assert empty.fallback


def test_add_events_is_incremental_and_idempotent():
    state = tiny_state()
    events = [Event("carol", "i5", NOW - 100, "e1"), Event("carol", "i4", NOW - 2000, "e2")]
    assert state.add_events(events, now=NOW) == 2
    assert state.add_events(events, now=NOW) == 0
    assert state.user_events["carol"] == [(NOW - 2000, "i4"), (NOW - 100, "i5")]  # sorted
    rec = state.recommend("carol", k=2, now=NOW)
    assert rec.items[0] == "i5" and all(rec.repeat)
    assert state.user_events["alice"] == tiny_state().user_events["alice"]  # others untouched


def test_add_events_rejects_bad_batches_atomically():
    state = tiny_state()
    good, future = Event("dan", "i1", NOW, "g"), Event("dan", "i1", NOW + 10 * 86400, "f")
    with pytest.raises(ValueError, match="future"):
        state.add_events([good, future], now=NOW)
    with pytest.raises(ValueError, match="non-empty"):
        state.add_events([Event("", "i1", NOW, "x")], now=NOW)
    assert not state.known_user("dan")


def test_save_load_roundtrip_and_overwrite(tmp_path):
    state = tiny_state()
    state.add_events([Event("carol", "i5", NOW - 10, "e1")], now=NOW)
    target = tmp_path / "model"
    state.save(target)
    state.save(target)  # overwrite in place
    loaded = OnlineRecommender.load(target)
    assert loaded.model_version == state.model_version
    assert loaded.add_events([Event("carol", "i5", NOW - 10, "e1")], now=NOW) == 0
    assert loaded.recommend("alice", now=NOW) == state.recommend("alice", now=NOW)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temp leftovers
    with pytest.raises(FileNotFoundError):
        OnlineRecommender.load(tmp_path / "missing")

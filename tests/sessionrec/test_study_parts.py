"""The parts the listening study relies on: TIFU-KNN's original grouping, the validation/test
phases of the data, item-level SASRec, per-user unit scores, and the event-log loaders."""

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from nlprec.sessionrec.baselines import (
    SIMILARITY_MEMO,
    neighbour_similarity,
    tifu_groups,
    tifu_user_matrix,
    tifu_user_vector,
)
from nlprec.sessionrec.data import EventLog, SessionData, UserSessions, sessionize
from nlprec.sessionrec.loaders import ColumnMapping, read_event_logs
from nlprec.sessionrec.metrics import evaluate, evaluate_units
from nlprec.sessionrec.sasrec import SASRecConfig, SASRecRecommender
from nlprec.sessionrec.split import temporal_split
from nlprec.sessionrec.steps import (
    LoadOutput,
    TrainConfig,
    phase_split,
    pisa_config,
    without_last_sessions,
)


def test_tifu_groups_put_the_larger_groups_last():
    assert [len(g) for g in tifu_groups(5, 3)] == [1, 2, 2]
    assert [len(g) for g in tifu_groups(7, 3)] == [2, 2, 3]
    assert np.concatenate(tifu_groups(7, 3)).tolist() == list(range(7))
    assert [g.tolist() for g in tifu_groups(2, 3)] == [[0], [1]]  # fewer baskets than m


def test_tifu_group_decay_counts_from_m_even_with_fewer_groups():
    # 2 baskets, m = 3: each basket its own group, weighted r_g^(3-1-g), divided by 2 groups
    vec = tifu_user_vector(
        [np.array([0]), np.array([1])], 2, within_decay=1.0, group_decay=0.5, group_size=3
    )
    assert np.allclose(vec, [0.5**2 / 2, 0.5**1 / 2])
    # 3 baskets, m = 2: groups [0], [1, 2]; basket weights r_b^(2-b)
    vec = tifu_user_vector([np.array([0]), np.array([1]), np.array([1])], 2, 0.5, 0.1, group_size=2)
    assert np.allclose(vec, [0.25 * 0.1 / 2, (0.5 + 1.0) / 2 / 2])


def users(n_sessions: list[int]) -> SessionData:
    rows = [
        UserSessions(
            f"u{i}",
            [np.array([i % 5, (i + s) % 5]) for s in range(n)],
            np.arange(n, dtype=float) * 7200,
        )
        for i, n in enumerate(n_sessions)
    ]
    return SessionData([f"i{k}" for k in range(5)], rows)


def test_tifu_baskets_are_multi_hot_and_the_matrix_stacks_user_vectors():
    twice = tifu_user_vector([np.array([0, 0, 1])], 3, 0.9, 0.7, group_size=1)
    assert np.allclose(twice, [1.0, 1.0, 0.0])  # one basket, one group: weight 1 per item
    histories = [[np.array([0]), np.array([1, 2])], [], [np.array([2])]]
    matrix = tifu_user_matrix(histories, 3, 0.5, 0.1, group_size=2).toarray()
    for row, sessions in zip(matrix, histories):
        assert np.allclose(row, tifu_user_vector(sessions, 3, 0.5, 0.1, group_size=2))


def test_upcf_neighbour_similarity_is_the_asymmetric_cosine_and_is_reused():
    rng = np.random.default_rng(0)
    items = sp.csr_matrix((rng.random((9, 12)) < 0.4).astype(float))
    items[6, 0] = 1.0  # no empty user
    sizes = np.asarray(items.sum(axis=1)).ravel()
    overlap = (items @ items.T).toarray()
    alpha, keep = 0.25, 3
    expected = overlap / (sizes[:, None] ** alpha * sizes[None, :] ** (1 - alpha))
    np.fill_diagonal(expected, 0.0)
    cut = np.sort(expected, axis=1)[:, -keep][:, None]
    expected = np.where(expected >= cut, expected, 0.0)
    got = neighbour_similarity(items, alpha, keep, 0.0, batch=4)
    assert np.allclose(got.toarray(), expected)
    assert neighbour_similarity(items, alpha, keep, 0.0) is got  # memoised on the content
    assert neighbour_similarity(items, 0.5, keep, 0.0) is not got
    assert len(SIMILARITY_MEMO) >= 2


def test_ablations_take_the_selected_settings_as_base_under_their_own(tmp_path):
    data = LoadOutput(validation_file=tmp_path / "v.json")
    base = {"lr": 0.01, "dim": 64, "spreading": "previous"}
    cfg = TrainConfig(data=data, variant="pisa_bl", base=base, model={"spreading": "session"})
    resolved = pisa_config(cfg, seed=3)
    assert (resolved.lr, resolved.dim, resolved.spreading) == (0.01, 64, "session")
    assert resolved.components == ("bl",) and resolved.seed == 3


def test_validation_phase_never_reads_the_test_sessions(tmp_path):
    data = users([3, 5, 4])
    full = data.save(tmp_path / "full.json")
    view = without_last_sessions(data, 1).save(tmp_path / "view.json")
    load_out = LoadOutput(validation_file=view, test=full, ndcg_ideal="k")
    split, cases = phase_split(load_out.model_copy(update={"test": None}), "validation")
    # the target is each user's second-to-last session; training stops before it
    assert [(c.user, c.position) for c in cases] == [(0, 1), (1, 3), (2, 2)]
    assert split.n_train.tolist() == [1, 3, 2] and split.val_cases == cases
    split, cases = phase_split(load_out, "test")
    assert [(c.user, c.position) for c in cases] == [(0, 2), (1, 4), (2, 3)]
    assert split.n_train.tolist() == [1, 3, 2]  # validation sessions stay out of training
    assert [(c.user, c.position) for c in split.val_cases] == [(0, 1), (1, 3), (2, 2)]


def test_unit_scores_are_per_user_and_average_to_the_metric():
    class Fixed:
        def score(self, data, cases):
            return np.tile(np.arange(5, dtype=float), (len(cases), 1))

    split = temporal_split(users([3, 4, 5]), 1, 0)
    means, units = evaluate_units(Fixed(), split, split.test_cases)
    assert set(units["ndcg@10"]) == {"u0", "u1", "u2"}
    assert np.mean(list(units["ndcg@10"].values())) == pytest.approx(means["ndcg@10"])
    assert means == evaluate(Fixed(), split, split.test_cases)


def test_sasrec_learns_a_deterministic_item_order():
    """Users play items in the cycle 0 → 1 → … → 5 → 0 from different starts, one item per
    session: after item v comes v + 1 (mod 6)."""
    rows = [
        UserSessions(f"u{u}", [np.array([(u + k) % 6]) for k in range(6)], np.arange(6.0))
        for u in range(30)
    ]
    data = SessionData([f"i{k}" for k in range(12)], rows)
    split = temporal_split(data, 1, 1)
    cfg = SASRecConfig(dim=16, blocks=1, dropout=0.0, lr=0.01, epochs=60, eval_every=10)
    model = SASRecRecommender(cfg).fit(split)
    # negatives are never the user's own items, so the item just played may rank first; the
    # next item of the cycle must rank above every other item
    top2 = np.argsort(-model.score(split.data, split.test_cases[:3]), axis=1)[:, :2]
    assert [sorted(t) for t in top2.tolist()] == [[4, 5], [0, 5], [0, 1]]
    assert evaluate(model, split, split.test_cases, k=2)["recall@2"] > 0.75  # random: 0.17


def test_sessions_from_session_ids_alone():
    frame = pd.DataFrame(
        {
            "user": ["a"] * 4,
            "time": [0.0, 7200.0, 7300.0, 20000.0],  # a 2-hour gap inside session s1
            "item": ["x", "y", "x", "z"],
            "session": ["s1", "s1", "s2", "s3"],
        }
    )
    data = sessionize(EventLog(frame), gap_minutes=None, min_sessions=1)
    assert [len(s) for s in data.users[0].sessions] == [2, 1, 1]
    with pytest.raises(ValueError, match="no session column"):
        sessionize(EventLog(frame.drop(columns="session")), gap_minutes=None)


def test_a_folder_of_csv_and_parquet_logs_and_a_missing_column(tmp_path):
    part = pd.DataFrame({"uid": ["a", "a"], "ts": [1.0, 2.0], "track": ["x", "y"]})
    part.to_csv(tmp_path / "one.csv", index=False)
    part.assign(uid="b").to_parquet(tmp_path / "two.parquet")
    log = read_event_logs(tmp_path, ColumnMapping(user="uid", time="ts", item="track"))
    assert sorted(log.frame["user"]) == ["a", "a", "b", "b"]
    with pytest.raises(ValueError, match=r"two\.parquet.*'track_id'"):
        read_event_logs(
            tmp_path / "two.parquet", ColumnMapping(user="uid", time="ts", item="track_id")
        )
    with pytest.raises(ValueError, match=r"one\.csv.*'track_id'"):
        read_event_logs(tmp_path / "one.csv", ColumnMapping(user="uid", time="ts", item="track_id"))
    json.dumps(log.bad_lines)


def test_spreading_from_the_previous_or_the_same_session():
    from nlprec.sessionrec.actr import cooccurrence_matrix
    from nlprec.sessionrec.features import WindowShape, window_features

    sessions = [np.array([0, 1]), np.array([2, 3])]
    cooc = cooccurrence_matrix([np.array([0, 2]), np.array([1, 3]), np.array([2, 3])], 4)
    c = cooc.toarray()
    shape = WindowShape(4, 4, 4, pad=4, time_scale=1.0)
    times = np.array([0.0, 1.0])
    previous = window_features(sessions, times, 2, 2.0, cooc, shape)["spr"][1, :2]
    assert np.allclose(previous, [c[0, 2] + c[1, 2], c[0, 3] + c[1, 3]])
    same_shape = WindowShape(4, 4, 4, pad=4, time_scale=1.0, same_session_spreading=True)
    same = window_features(sessions, times, 2, 2.0, cooc, same_shape)["spr"][1, :2]
    assert np.allclose(same, [c[3, 2], c[2, 3]])


def test_pisa_scores_as_the_paper_and_the_repeat_term_is_a_named_variant():
    from nlprec.sessionrec.pisa import VARIANTS, PISAConfig

    assert PISAConfig().repeat_term is False
    assert {k: v.get("repeat_term", False) for k, v in VARIANTS.items()} == {
        "pisa": False,
        "pisa_bl_spr": False,
        "pisa_bl": False,
        "pisa_repeat": True,
    }

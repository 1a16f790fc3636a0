"""ACT-R components: vectorised versions agree with the loop definitions; causality."""

import numpy as np
import scipy.sparse as sp
from nlprec.sessionrec.actr import (
    base_level_matrix,
    base_level_reference,
    cooccurrence_matrix,
    cooccurrence_reference,
    partial_matching,
    softmax,
    spreading_activation,
)
from nlprec.sessionrec.features import WindowShape, window_features


def test_base_level_matches_reference():
    rng = np.random.default_rng(0)
    items = rng.integers(0, 7, size=40)
    times = np.sort(rng.uniform(0, 100, size=40))
    t_refs = np.array([10.0, 55.5, 101.0])
    distinct, act = base_level_matrix(items, times, t_refs)
    for p, t_ref in enumerate(t_refs):
        ref = base_level_reference(items, times, t_ref)
        for a, item in enumerate(distinct.tolist()):
            if item in ref:
                assert np.isclose(act[p, a], ref[item])
            else:
                assert act[p, a] == -np.inf  # no use before t_ref: causal


def test_base_level_equation_by_hand():
    _, act = base_level_matrix(np.array([3, 3]), np.array([0.0, 3.0]), np.array([4.0]))
    assert np.isclose(act[0, 0], np.log(4**-0.5 + 1**-0.5))


def test_cooccurrence_matches_reference_and_is_sparse():
    rng = np.random.default_rng(1)
    sessions = [rng.choice(9, size=rng.integers(1, 5), replace=False) for _ in range(30)]
    fast = cooccurrence_matrix(sessions, 9)
    assert sp.issparse(fast)
    assert np.allclose(fast.toarray(), cooccurrence_reference(sessions, 9))
    assert np.allclose(fast.toarray(), fast.toarray().T) and np.all(fast.diagonal() == 0)


def test_spreading_and_partial_matching():
    cooc = cooccurrence_matrix([np.array([0, 1]), np.array([0, 2]), np.array([1, 2])], 4)
    s = spreading_activation(cooc, np.array([0]), np.array([1, 2, 3]))
    assert np.allclose(s, [cooc[0, 1], cooc[0, 2], 0.0])
    emb = np.array([[1.0, 0], [1, 0], [0, 1]])
    pm = partial_matching(emb, context=np.array([0, 1]), candidates=np.array([0, 2]))
    assert np.allclose(pm, [1.0, 0.0])  # item 0 vs itself excluded


def test_softmax_handles_empty_rows():
    out = softmax(np.array([[-np.inf, -np.inf], [0.0, np.log(3.0)]]))
    assert np.allclose(out, [[0, 0], [0.25, 0.75]])


def test_window_features_are_causal():
    sessions = [np.array([0, 1]), np.array([1]), np.array([2, 0])]
    times = np.array([0.0, 10.0, 20.0])
    shape = WindowShape(max_sessions=4, max_items=3, n_favourites=2, pad=5, time_scale=1.0)
    f = window_features(sessions, times, end=2, t_ref_last=20.0, cooc=None, shape=shape)
    assert f["length"] == 2
    # position 0 (session 0) at t_ref = 10: only session 0 counts
    assert np.isclose(f["bl"][0, 0], np.log(10**-0.5))
    # position 1 (session 1 = [1]) at t_ref = 20: item 1 used at 0 and 10
    assert np.isclose(f["bl"][1, 0], np.log(20**-0.5 + 10**-0.5))
    assert f["fav"][1].tolist() == [1, 0]  # most active first
    assert f["target"][1].tolist()[:2] == [2, 0] and f["items"][2].tolist() == [5, 5, 5]


def test_window_features_decay_and_log_counts():
    """fav_bl follows the shape's decay d; fav_freq is ln of the number of earlier uses."""
    sessions = [np.array([0, 1]), np.array([1]), np.array([1, 0]), np.array([2])]
    times = np.array([0.0, 10.0, 20.0, 30.0])
    shape = WindowShape(4, 3, n_favourites=2, pad=5, time_scale=1.0, decay=0.2)
    f = window_features(sessions, times, end=3, t_ref_last=30.0, cooc=None, shape=shape)
    items = np.array([0, 1, 1, 1, 0])
    occ_times = np.array([0.0, 0.0, 10.0, 20.0, 20.0])
    ref = base_level_reference(items, occ_times, 30.0, decay=0.2)
    assert f["fav"][2].tolist() == [1, 0]
    assert np.allclose(f["fav_bl"][2], [ref[1], ref[0]])
    assert np.allclose(f["fav_freq"][2], np.log([3.0, 2.0]))  # item 1 used 3 times, item 0 twice
    assert np.allclose(f["fav_freq"][0], np.log([1.0, 1.0]))  # at t_ref = 10: one use each


def test_window_features_session_clock_ignores_timestamps():
    """session_clock: session k is at time k and the window predicts session `end`, so the
    features equal those of index timestamps, whatever the real times and query time."""
    sessions = [np.array([0, 1]), np.array([1]), np.array([1, 0]), np.array([2])]
    irregular = np.array([0.0, 3.0, 500.0, 501.0])
    clock = WindowShape(4, 3, n_favourites=2, pad=5, time_scale=3600.0, session_clock=True)
    f = window_features(sessions, irregular, end=3, t_ref_last=9e9, cooc=None, shape=clock)
    index = WindowShape(4, 3, n_favourites=2, pad=5, time_scale=1.0)
    g = window_features(sessions, np.arange(4.0), end=3, t_ref_last=3.0, cooc=None, shape=index)
    for key in f:
        assert np.array_equal(f[key], g[key]), key
    # position 2 (t_ref = session 3): item 1 used in sessions 0, 1, 2 → ages 3, 2, 1
    ref = base_level_reference(np.array([0, 1, 1, 1, 0]), np.array([0, 0, 1, 2, 2.0]), 3.0)
    assert np.allclose(f["fav_bl"][2], [ref[1], ref[0]])

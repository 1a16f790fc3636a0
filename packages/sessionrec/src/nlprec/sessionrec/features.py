"""ACT-R features of one user's session window, computed causally, for PISA.

For a window of input sessions i = start … end−1 (at most ``max_sessions``), position i is
used to predict session i+1 and its ACT-R reference time is t_ref(i) = start of session i+1
(for the last position: the target's start, or the query time online). Only occurrences
before t_ref(i) count. With ``session_clock`` the ACT-R time is the session index instead of
the wall clock: session k happens at time k, so an age is the number of sessions since a use
and t_ref(i) = i + 1 (the next session, online too) whatever the timestamps. Per position:

- ``items``  [T, L]  the session's items (pad = n_items);
- ``bl``     [T, L]  base-level activation B_v(t_ref(i)) of each of those items;
- ``spr``    [T, L]  spreading activation from the previous session (the session itself,
  minus the item, for a user's first session), or with ``same_session_spreading`` (the
  reference implementation's choice) always from the session's own other items;
- ``ctx``    [T, L]  the context session's items (partial matching is computed in the model,
  from the learned embeddings);
- ``fav`` / ``fav_bl`` [T, B]  the user's top-B items by B_v(t_ref(i)) and their activations;
- ``fav_freq`` [T, B]  ln n_v(t_ref(i)), the log number of earlier uses of each favourite
  (the base level with d = 0: frequency without recency);
- ``target`` [T, L]  session i+1's items (training only).

Every table is over the user's own distinct items (U of them), never the catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
from nlprec.sessionrec.actr import ACTR_DECAY, base_level_matrix, session_occurrences


@dataclass
class WindowShape:
    max_sessions: int  # T
    max_items: int  # L
    n_favourites: int  # B
    pad: int  # the padding item index (= n_items)
    time_scale: float  # seconds per ACT-R time unit
    decay: float = ACTR_DECAY  # d of the base-level activation
    session_clock: bool = False  # ACT-R time = session index (ages counted in sessions)
    same_session_spreading: bool = False  # spreading from the session's own other items


def empty_window(shape: WindowShape) -> dict[str, np.ndarray]:
    T, L, B = shape.max_sessions, shape.max_items, shape.n_favourites
    return {
        "items": np.full((T, L), shape.pad, np.int64),
        "bl": np.full((T, L), -np.inf, np.float32),
        "spr": np.zeros((T, L), np.float32),
        "ctx": np.full((T, L), shape.pad, np.int64),
        "fav": np.full((T, B), shape.pad, np.int64),
        "fav_bl": np.full((T, B), -np.inf, np.float32),
        "fav_freq": np.zeros((T, B), np.float32),
        "target": np.full((T, L), shape.pad, np.int64),
        "length": np.zeros((), np.int64),
    }


def window_features(
    sessions: list[np.ndarray],
    times: np.ndarray,
    end: int,
    t_ref_last: float,
    cooc: sp.csr_matrix,
    shape: WindowShape,
) -> dict[str, np.ndarray]:
    """Features of input sessions ``max(0, end − T) … end − 1`` (see the module docstring)."""
    if end < 1:
        raise ValueError("a window needs at least one input session (empty history)")
    start = max(0, end - shape.max_sessions)
    out = empty_window(shape)
    n_pos = end - start
    out["length"] = np.asarray(n_pos)
    if shape.session_clock:  # session k at time k; the window predicts session `end`
        times, t_ref_last = np.arange(len(sessions), dtype=float), float(end)
        shape = replace(shape, time_scale=1.0)
    t_refs = (
        np.append(np.asarray(times[start + 1 : end], dtype=float), t_ref_last) / shape.time_scale
    )  # [P]
    occ_items, occ_times = session_occurrences(
        sessions[:end], np.asarray(times[:end]) / shape.time_scale
    )
    distinct, activation = base_level_matrix(
        occ_items, occ_times, t_refs, shape.decay
    )  # [U], [P, U]
    _, log_count = base_level_matrix(occ_items, occ_times, t_refs, 0.0)  # [P, U] ln n_v
    L, B = shape.max_items, min(shape.n_favourites, len(distinct))
    # C restricted to the items of this window's sessions and contexts (W ≤ (T+1)·L of them)
    window_items = np.unique(np.concatenate([s[:L] for s in sessions[max(0, start - 1) : end]]))
    window_cooc = (
        cooc[window_items][:, window_items].toarray() if cooc is not None else None
    )  # [W, W]
    for p, i in enumerate(range(start, end)):
        items = sessions[i][:L]
        cols = np.searchsorted(distinct, items)
        out["items"][p, : len(items)] = items
        out["bl"][p, : len(items)] = activation[p, cols]
        context = sessions[i - 1][:L] if i > 0 else items
        out["ctx"][p, : len(context)] = context
        if window_cooc is not None:
            spread_from = items if shape.same_session_spreading else context
            rows = np.searchsorted(window_items, spread_from)
            local = np.searchsorted(window_items, items)
            out["spr"][p, : len(items)] = window_cooc[np.ix_(rows, local)].sum(axis=0)
        if B:
            top = np.argpartition(-activation[p], B - 1)[:B]
            top = top[np.isfinite(activation[p, top])]
            top = top[np.argsort(-activation[p, top], kind="stable")]
            out["fav"][p, : len(top)] = distinct[top]
            out["fav_bl"][p, : len(top)] = activation[p, top]
            out["fav_freq"][p, : len(top)] = log_count[p, top]
        if i + 1 < len(sessions):
            target = sessions[i + 1][:L]
            out["target"][p, : len(target)] = target
    return out


def stack_windows(windows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.stack([w[key] for w in windows]) for key in windows[0]}


# -- parallel construction (many users, several CPU cores) --------------------------------
_SHARED: dict = {}


def _window_job(job: tuple[int, int, float]) -> dict[str, np.ndarray]:
    user, end, t_ref = job
    u = _SHARED["data"].users[user]
    return window_features(u.sessions, u.times, end, t_ref, _SHARED["cooc"], _SHARED["shape"])


def build_windows(
    data, jobs: list[tuple[int, int, float]], cooc, shape: WindowShape, workers: int = 1
) -> list[dict]:
    """``window_features`` for (user index, end, t_ref) jobs, over ``workers`` forked processes."""
    if workers <= 1:
        _SHARED.update(data=data, cooc=cooc, shape=shape)
        return [_window_job(j) for j in jobs]
    import multiprocessing as mp

    _SHARED.update(data=data, cooc=cooc, shape=shape)
    with mp.get_context("fork").Pool(workers) as pool:
        return pool.map(_window_job, jobs, chunksize=max(1, len(jobs) // (workers * 8)))

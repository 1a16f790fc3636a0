"""PISA on a tiny generated world: training, variants, persistence, online serving."""

import numpy as np
import pytest
import torch
from nlprec.sessionrec.actr import base_level_reference, session_occurrences
from nlprec.sessionrec.data import sessionize
from nlprec.sessionrec.metrics import evaluate
from nlprec.sessionrec.online import Event, OnlineRecommender
from nlprec.sessionrec.pisa import PISAConfig, PISANet, PISARecommender, events_to_sessions
from nlprec.sessionrec.split import temporal_split
from nlprec.sessionrec.synthetic import SyntheticConfig, generate_listening_log
from pydantic import ValidationError

TINY = dict(
    dim=8,
    heads=2,
    layers=1,
    max_sessions=6,
    max_items=6,
    n_favourites=8,
    epochs=2,
    batch_size=16,
    max_val_cases=20,
)


@pytest.fixture(scope="module")
def split():
    cfg = SyntheticConfig(n_users=25, n_items=120, n_clusters=6, sessions_per_user=(5, 8), seed=3)
    return temporal_split(sessionize(generate_listening_log(cfg)), 1, 1)


def test_generator_is_deterministic():
    a = generate_listening_log(SyntheticConfig(n_users=3, seed=5)).frame
    b = generate_listening_log(SyntheticConfig(n_users=3, seed=5)).frame
    c = generate_listening_log(SyntheticConfig(n_users=3, seed=6)).frame
    assert a.equals(b) and not a.equals(c)


@pytest.mark.parametrize("components", [("bl", "spr", "pm"), ("bl",), ()])
def test_training_lowers_the_loss_and_scores_every_item(split, components):
    torch.manual_seed(0)
    model = PISARecommender(PISAConfig(**TINY, components=components, lr=1e-2)).fit(split)
    losses = [row["loss"] for row in model.history]
    assert losses[-1] < losses[0]
    scores = model.score(split.data, split.test_cases[:4])
    assert scores.shape == (4, split.data.n_items) and np.isfinite(scores).all()
    result = evaluate(model, split, split.test_cases)
    assert 0 <= result["ndcg@10"] <= 1


def test_session_weights_mix_softmaxed_components(split):
    net = PISANet(10, PISAConfig(**TINY, components=("bl", "spr")))
    items = torch.tensor([[[1, 2, 10]]])  # one position, two items + padding
    batch = {
        "items": items,
        "bl": torch.tensor([[[0.0, np.log(3.0), -np.inf]]], dtype=torch.float32),
        "spr": torch.zeros(1, 1, 3),
        "ctx": items,
    }
    w = net.session_weights(batch)[0, 0]
    assert torch.allclose(
        w, torch.tensor([(0.25 + 0.5) / 2, (0.75 + 0.5) / 2, 0.0])
    )  # equal logits
    mean_pool = PISANet(10, PISAConfig(**TINY, components=()))
    assert torch.allclose(mean_pool.session_weights(batch)[0, 0], torch.tensor([0.5, 0.5, 0.0]))


def test_causal_transformer_ignores_the_future(split):
    model = PISARecommender(PISAConfig(**TINY, dropout=0.0)).fit(split)
    case = split.test_cases[0]
    u = split.data.users[case.user]
    from nlprec.sessionrec.features import stack_windows, window_features

    w = stack_windows(
        [
            window_features(
                u.sessions,
                u.times,
                case.position,
                float(u.times[case.position]),
                model.cooc,
                model.shape,
            )
        ]
    )
    batch = model.to_tensors(w)
    z = model.net.represent(batch)
    batch["items"][0, -1] = model.n_items  # change a later (padding) position only
    assert torch.allclose(model.net.represent(batch)[0, 0], z[0, 0], atol=1e-5)


def test_save_load_and_online_serving(split, tmp_path):
    model = PISARecommender(PISAConfig(**TINY)).fit(split)
    model.save(tmp_path / "pisa")
    back = PISARecommender.load(tmp_path / "pisa")
    assert np.allclose(
        back.score(split.data, split.test_cases[:3]),
        model.score(split.data, split.test_cases[:3]),
        atol=1e-5,
    )
    state = OnlineRecommender.from_sessions(split.data, pisa=model)
    user = split.data.users[0].user
    now = float(split.data.users[0].times[-1]) + 3600
    rec = state.recommend(user, k=5, now=now)
    assert len(rec.items) == 5 and not rec.fallback and any(rec.repeat)
    assert state.add_events([Event(user, split.data.items[7], now, "new-1")], now=now) == 1
    assert state.recommend(user, k=5, now=now + 60).items  # still serves after the update
    state.save(tmp_path / "online")
    loaded = OnlineRecommender.load(tmp_path / "online")
    assert loaded.recommend(user, k=5, now=now + 60) == state.recommend(user, k=5, now=now + 60)
    assert loaded.recommend("stranger", k=3, now=now).fallback


def test_events_to_sessions_rules():
    sessions, starts = events_to_sessions(
        [(0.0, 1), (10.0, 1), (20.0, 2), (5000.0, 3)], gap_s=1200, max_items=5
    )
    assert [s.tolist() for s in sessions] == [[1, 2], [3]] and starts.tolist() == [0.0, 5000.0]
    with pytest.raises(ValueError, match="empty history"):
        events_to_sessions([], 1200, 5)


def test_frequency_term_and_scalar_learning_rate(split):
    """β_freq·ln n_v is added to each favourite's score (only with ``repeat_frequency``);
    ``scalar_lr`` puts the scalar mixing parameters in their own optimiser group."""
    cfg = PISAConfig(**TINY, repeat_term=True, repeat_frequency=True, scalar_lr=0.05, decay=0.2)
    model = PISARecommender(cfg).fit(split)
    case = split.test_cases[:2]
    before = model.score(split.data, case)
    with torch.no_grad():
        model.net.repeat_weights[3] += 1.0
    after = model.score(split.data, case)
    window = model.features["cases"][(case[0].user, case[0].position)]
    last = int(window["length"]) - 1
    fav, log_count = window["fav"][last], window["fav_freq"][last]
    real = fav != model.n_items
    assert np.allclose(after[0, fav[real]] - before[0, fav[real]], log_count[real], atol=1e-4)
    others = np.setdiff1d(np.arange(model.n_items), fav[real])
    assert np.allclose(after[0, others], before[0, others], atol=1e-5)
    groups = model.net.parameter_groups(0.05)
    assert len(groups) == 2 and groups[1]["lr"] == 0.05 and len(groups[1]["params"]) == 4
    assert len(model.net.parameter_groups(None)) == 1


def test_checkpoint_from_before_the_frequency_weight_loads(split, tmp_path):
    model = PISARecommender(PISAConfig(**TINY)).fit(split)
    model.save(tmp_path / "old")
    from safetensors.torch import load_file, save_file

    state = load_file(tmp_path / "old" / "model.safetensors")
    state["repeat_weights"] = state["repeat_weights"][:3].contiguous()  # the 3-weight format
    save_file(state, tmp_path / "old" / "model.safetensors")
    back = PISARecommender.load(tmp_path / "old")
    assert np.allclose(
        back.score(split.data, split.test_cases[:2]),
        model.score(split.data, split.test_cases[:2]),
        atol=1e-5,
    )


def test_session_clock_setting_reaches_features_and_survives_save(split, tmp_path):
    """clock="sessions" builds the base level on session indices (training, cases, serving)."""
    with pytest.raises(ValidationError):
        PISAConfig(clock="days")
    model = PISARecommender(PISAConfig(**{**TINY, "epochs": 1}, clock="sessions")).fit(split)
    assert model.shape.session_clock and PISAConfig(**TINY).clock == "time"
    case = split.test_cases[0]
    u = split.data.users[case.user]
    scores = model.score(split.data, [case])
    window = model.features["cases"][(case.user, case.position)]
    last = int(window["length"]) - 1
    # the last position's base level counts sessions back from the target (index `position`)
    items, times = session_occurrences(u.sessions[: case.position], np.arange(case.position))
    ref = base_level_reference(items, times, float(case.position))
    fav = window["fav"][last][window["fav"][last] != model.n_items]
    assert np.allclose(window["fav_bl"][last][: len(fav)], [ref[i] for i in fav.tolist()])
    loaded = PISARecommender.load(model.save(tmp_path / "m"))
    assert loaded.cfg.clock == "sessions"
    assert np.allclose(loaded.score(split.data, [case]), scores, atol=1e-5)
    # serving: the query time does not matter on the session clock (the next session is next)
    events = [(float(t), int(i)) for s, t in zip(u.sessions, u.times) for i in s.tolist()]
    soon, later = (loaded.score_events(events, events[-1][0] + dt, 1200.0) for dt in (60, 9e6))
    assert np.allclose(soon, later)


def test_long_term_score_adds_the_long_term_vector_to_every_score(split):
    """λ_ls (the reference code's long-term score): full-catalogue scores and the training
    scores of candidates agree, and λ_ls = 0 is the paper's z alone."""
    model = PISARecommender(PISAConfig(**{**TINY, "epochs": 1}, long_term_score=0.5)).fit(split)
    net = model.net.eval()
    cases = split.test_cases[:3]
    model.score(split.data, cases)  # fills the case windows
    windows = [model.features["cases"][(c.user, c.position)] for c in cases]
    from nlprec.sessionrec.features import stack_windows

    batch = model.to_tensors(stack_windows(windows))
    with torch.no_grad():
        full = net.full_scores(batch)
        z = net.represent(batch)
        last = batch["length"] - 1
        rows = torch.arange(len(last))
        items = torch.arange(split.data.n_items).expand(len(cases), 1, -1)
        sub = {k: v[rows, last].unsqueeze(1) for k, v in batch.items() if v.dim() > 1}
        candidates = net.candidate_scores(sub, z[rows, last].unsqueeze(1), items).squeeze(1)
        torch.testing.assert_close(full, candidates, rtol=1e-4, atol=1e-5)
        net.cfg = net.cfg.model_copy(update={"long_term_score": 0.0})
        assert not torch.allclose(net.full_scores(batch), full)

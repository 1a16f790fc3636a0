"""The core training helper: schedule shapes, clipping, the time budget, best-epoch selection."""

import math

import pytest
import torch
from nlprec.core.training import BestState, Schedule, Trainer, autocast, lr_multiplier


def _model() -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 1)


def test_schedule_warms_up_then_decays_linearly_or_along_a_cosine():
    linear = [lr_multiplier(s, 10, Schedule(warmup_fraction=0.2)) for s in range(10)]
    assert linear[:2] == [0.5, 1.0] and linear[2] == 1.0 and linear[-1] == pytest.approx(1 / 8)
    assert all(a >= b for a, b in zip(linear[1:], linear[2:]))
    cosine = [lr_multiplier(s, 10, Schedule(0.2, shape="cosine")) for s in range(10)]
    assert cosine[2] == 1.0 and cosine[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    wsd = [lr_multiplier(s, 100, Schedule(0.1, 0.2)) for s in range(100)]
    assert wsd[50] == wsd[79] == 1.0 and wsd[80] == 1.0 and wsd[90] == pytest.approx(0.5)
    assert lr_multiplier(5, 10, Schedule(0.2, shape="constant")) == 1.0


def test_schedule_follows_the_time_budget_when_it_runs_out_first():
    # step 3 of 100, but 90% of the time spent: the rate is nearly decayed
    assert lr_multiplier(3, 100, Schedule(0.0), time_fraction=0.9) == pytest.approx(0.1, abs=0.01)


def test_step_clips_the_gradient_norm():
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    trainer = Trainer(optimizer, 1, max_grad_norm=0.5, progress=False)
    before = [p.detach().clone() for p in model.parameters()]
    loss = 1000.0 * model(torch.ones(1, 4)).sum()  # gradient norm far above 0.5
    trainer.step(loss)
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert moved.norm().item() == pytest.approx(0.5, rel=1e-4)  # SGD lr 1: the step is the clipped gradient
    assert all(p.grad is None for p in model.parameters())


def test_time_budget_stops_training_early():
    model = _model()
    trainer = Trainer(torch.optim.SGD(model.parameters(), lr=0.1), 1000, max_seconds=0.0, progress=False)
    seen = list(trainer.iterate(range(1000)))
    assert seen == [] and trainer.summary()["stopped_early"] == 1.0
    unbounded = Trainer(torch.optim.SGD(model.parameters(), lr=0.1), 3, progress=False)
    for _ in unbounded.iterate(range(3)):
        unbounded.step(model(torch.ones(1, 4)).sum())
    assert unbounded.summary()["train_steps"] == 3 and unbounded.summary()["stopped_early"] == 0.0


def test_frozen_group_waits_and_metrics_are_logged_with_steps():
    model = _model()
    optimizer = torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias]}], lr=0.1)
    logged = []
    trainer = Trainer(optimizer, 4, frozen_until={0: 0.5}, progress=False, metric_prefix="toy.",
                      log_every=1, log_metrics=lambda m, step: logged.append((step, m)))  # fmt: skip
    weight, bias = model.weight.detach().clone(), model.bias.detach().clone()
    trainer.step(model(torch.ones(1, 4)).sum())
    assert torch.equal(model.weight, weight) and not torch.equal(model.bias, bias)
    assert logged[0][0] == 0 and set(logged[0][1]) == {"toy.loss", "toy.lr"}


def test_best_state_restores_the_best_epoch():
    model = _model()
    best = BestState(model)
    best.update(0, 0.3)
    kept = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not best.update(1, 0.2)  # worse: the epoch-0 weights stay the best
    assert best.restore() == 0 and torch.equal(model.weight, kept)
    lower = BestState(model, higher_is_better=False)
    assert lower.update(0, 2.0) and lower.update(1, 1.0) and not lower.update(2, 1.5)


def test_autocast_is_full_precision_on_cpu_by_default():
    with autocast("cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with autocast("cpu", "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16

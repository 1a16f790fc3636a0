"""Step functions the study tests use (imported through `uses: study_steps:<fn>`)."""

import json
import os
import time
from pathlib import Path

import numpy as np
from nlprec.core.step import across_seeds
from pydantic import BaseModel, ConfigDict


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    units: int = 200


@across_seeds
def data(ctx, cfg: DataConfig) -> dict:
    """A data step: its test part under `test` and `test_*` keys, as the study contract asks."""
    return {"train": "train-part", "validation": "validation-part", "test": "test-part",
            "test_labels": "test-labels", "units": cfg.units}


class ScoredConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: float = 0.0
    system: str = "s"
    shift: float = 0.0  # added to every unit's score
    noise: float = 0.0  # per-seed noise on each unit's score


def scored(ctx, cfg: ScoredConfig) -> dict:
    """Records which split it evaluated (and what it could see), logs `<system>.score` = -(x-2)^2 +
    0.01 * seed, and per-unit scores around a fixed per-unit base."""
    record = os.environ.get("NLPREC_TEST_EVALUATIONS")
    if record:
        with open(record, "a") as handle:
            line = {"x": cfg.x, "split": ctx.split, "seed": ctx.seed, "inputs": sorted(ctx.inputs["data"])}
            handle.write(json.dumps(line) + "\n")
    part = ctx.inputs["data"][ctx.split]  # a KeyError if a trial asked for test
    assert part == f"{ctx.split}-part"
    ctx.log_metrics({f"{cfg.system}.score": -((cfg.x - 2.0) ** 2) + 0.01 * ctx.seed})
    units = ctx.inputs["data"]["units"]
    base = np.random.default_rng(12345).normal(0.5, 0.3, size=units)
    noise_rng = np.random.default_rng([ctx.seed, sum(map(ord, cfg.system))])
    noise = noise_rng.normal(0.0, cfg.noise, size=units)
    values = base + cfg.shift + noise
    ctx.log_unit_scores(cfg.system, "score", {f"u{i}": float(v) for i, v in enumerate(values)})
    return {"x": cfg.x}


class BudgetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sleep: float = 0.0


def budget(ctx, cfg: BudgetConfig) -> dict:
    time.sleep(cfg.sleep)
    (Path(ctx.output_dir) / "budget.json").write_text(json.dumps([ctx.max_seconds, ctx.time_left()]))
    return {"max_seconds": ctx.max_seconds, "time_left": ctx.time_left()}

"""PISA training under torchrun: two gloo processes train what one process trains on the same
global batches (issue #10), through the pipeline's train step and the shared launcher
(nlprec.core.launch)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from nlprec.core.distributed import DistributedContext, rank_slice
from nlprec.core.step import StepContext
from nlprec.sessionrec.data import sessionize
from nlprec.sessionrec.pisa import PISAConfig, PISANet
from nlprec.sessionrec.steps import LoadOutput, TrainConfig, train
from nlprec.sessionrec.synthetic import SyntheticConfig, generate_listening_log
from safetensors.torch import load_file

MODEL = dict(
    dim=8,
    heads=2,
    layers=1,
    max_sessions=5,
    max_items=6,
    n_favourites=8,
    epochs=2,
    batch_size=6,  # 37 windows: 6 full global batches and a last one of 1 row (rank 1 gets none)
    max_val_cases=12,
    dropout=0.0,  # dropout masks are drawn per process: equal only in distribution
    lr=1e-2,
)


@pytest.fixture(scope="module")
def sessions_file(tmp_path_factory):
    cfg = SyntheticConfig(n_users=14, n_items=80, n_clusters=4, sessions_per_user=(6, 9), seed=2)
    path = tmp_path_factory.mktemp("ddp") / "sessions.json"
    sessionize(generate_listening_log(cfg)).save(path)
    return path


def run_step(tmp_path, sessions_file, nproc: int, variant: str):
    ctx = StepContext(
        name="pisa",
        output_dir=tmp_path / f"{variant}-{nproc}",
        inputs={},
        params={},
        seed=0,
        device="cpu",
    )
    ctx.output_dir.mkdir()
    cfg = TrainConfig(
        data=LoadOutput(validation_file=sessions_file, test=sessions_file, ndcg_ideal="k"),
        variant=variant,
        seeds=[0],
        model=MODEL,
        save_model=True,
        nproc_per_node=nproc,
    )
    threads = torch.get_num_threads()
    try:
        out = train(ctx, cfg)
    finally:
        torch.set_num_threads(threads)
    history = json.loads((ctx.output_dir / "history.json").read_text())
    return out, history, load_file(f"{out.model_dir}/model.safetensors")


def test_two_gloo_processes_train_what_one_process_trains(tmp_path, sessions_file):
    variant = "pisa"
    one, history_one, weights_one = run_step(tmp_path, sessions_file, 1, variant)
    two, history_two, weights_two = run_step(tmp_path, sessions_file, 2, variant)

    # float32 sums in another order, then Adam's g/√v: equal to ~1e-4, far below the training moves
    assert weights_one.keys() == weights_two.keys()
    for name, tensor in weights_one.items():
        torch.testing.assert_close(weights_two[name], tensor, rtol=1e-3, atol=1e-3, msg=name)
    torch.manual_seed(0)  # what fit starts from: training moved the item embeddings well past that
    initial = PISANet(len(weights_one["item.weight"]) - 1, PISAConfig(**MODEL)).item.weight
    assert (weights_one["item.weight"] - initial.detach()).abs().max() > 1e-2
    assert history_one[0]["best_epoch"] == history_two[0]["best_epoch"] >= 0
    epochs_one, epochs_two = history_one[0]["epochs"], history_two[0]["epochs"]
    losses = [row["loss"] for row in epochs_one]
    assert [row["loss"] for row in epochs_two] == pytest.approx(losses, rel=1e-5)
    assert [r["val_ndcg@10"] for r in epochs_two] == pytest.approx(
        [r["val_ndcg@10"] for r in epochs_one], abs=1e-9
    )
    for key, value in one.metrics.items():
        assert two.metrics[key] == pytest.approx(value, abs=1e-6), key
    # rank 0 alone wrote: one result, one model, no per-rank copies
    written = sorted(p.name for p in (tmp_path / f"{variant}-2" / "ddp").iterdir())
    assert written == ["launch_config.json", "launch_inputs.json", "model", "result.json"]


def test_rank_slice_splits_every_global_batch_once():
    for n_rows in (0, 1, 5, 6, 7):
        for world in (1, 2, 3):
            parts = [
                np.arange(n_rows)[rank_slice(n_rows, DistributedContext(rank=r, world_size=world))]
                for r in range(world)
            ]
            assert np.concatenate(parts).tolist() == list(range(n_rows))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1

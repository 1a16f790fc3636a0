"""Two gloo processes under torchrun train the same weights as one process on the same global batch."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from nlprec.core.distributed import (
    DistributedContext,
    distributed_loader,
    for_rank,
    init_distributed,
    launch_torchrun,
    per_rank_batch_size,
)
from nlprec.core.errors import UserError
from nlprec.core.step import StepContext
from safetensors.torch import load_file

TOY_SCRIPT = Path(__file__).with_name("ddp_toy.py")


def run_toy_in_this_process(out: Path, monkeypatch) -> None:
    """The single-process reference: the same script, without torchrun (saves a process start)."""
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    spec = importlib.util.spec_from_file_location("ddp_toy", TOY_SCRIPT)
    toy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(toy)
    threads = torch.get_num_threads()
    try:
        toy.main(out)
    finally:
        torch.set_num_threads(threads)  # the script pins one thread; give the session its own back


def test_two_gloo_processes_equal_one_process(tmp_path, monkeypatch):
    single, double = tmp_path / "single", tmp_path / "double"
    run_toy_in_this_process(single, monkeypatch)
    launch_torchrun(
        [TOY_SCRIPT, double], nproc_per_node=2, env={"OMP_NUM_THREADS": "1"}, timeout=300
    )

    weights_single, weights_double = (
        load_file(single / "model.safetensors"),
        load_file(double / "model.safetensors"),
    )
    assert weights_single.keys() == weights_double.keys()
    for name, tensor in weights_single.items():
        torch.testing.assert_close(weights_double[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    initial = torch.nn.Linear(
        6, 8
    )  # training moved the weights: the comparison is not of two inits
    assert not torch.allclose(weights_single["0.weight"], initial.weight)

    # Each rank saw half of every global batch: together every row once per epoch, no overlap.
    ranks = [json.loads((double / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    rows_per_rank_epoch = 64 // 2
    first_epoch = [set(r["seen"][:rows_per_rank_epoch]) for r in ranks]
    assert not first_epoch[0] & first_epoch[1] and len(first_epoch[0] | first_epoch[1]) == 64
    assert sorted(ranks[0]["seen"] + ranks[1]["seen"]) == sorted(
        json.loads((single / "rank-0.json").read_text())["seen"]
    )
    # Rank 0 alone reported; both runs end on the same (all-reduced) loss.
    metrics_single, metrics_double = (
        json.loads((d / "metrics.json").read_text()) for d in (single, double)
    )
    assert metrics_double["rank"] == 0
    assert metrics_double["final_loss"] == pytest.approx(metrics_single["final_loss"], rel=1e-5)


def test_single_process_context_without_torchrun(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    dist_ctx = init_distributed()
    assert (
        dist_ctx == DistributedContext(device=dist_ctx.device)
        and dist_ctx.is_main
        and not dist_ctx.is_distributed
    )


def test_bad_environment_and_uneven_batch_are_clear_errors(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(UserError, match="WORLD_SIZE='two' is not an integer"):
        init_distributed()
    with pytest.raises(UserError, match="global batch size 10 does not split evenly over 4"):
        per_rank_batch_size(10, DistributedContext(world_size=4))


def test_sampler_splits_each_global_batch_between_ranks():
    dataset = torch.utils.data.TensorDataset(torch.arange(24))

    def batches(rank: int, world: int) -> list[list[int]]:
        loader = distributed_loader(
            dataset, 8, DistributedContext(rank=rank, world_size=world), seed=3
        )
        loader.sampler.set_epoch(1)
        return [batch[0].tolist() for batch in loader]

    single = batches(0, 1)
    split = list(zip(batches(0, 2), batches(1, 2)))
    assert [sorted(a + b) for a, b in split] == [sorted(batch) for batch in single]


def test_for_rank_silences_the_tracker_off_rank_zero(tmp_path):
    step_ctx = StepContext(
        name="train", output_dir=tmp_path, inputs={}, params={}, seed=0, tracker=object()
    )
    assert for_rank(step_ctx, DistributedContext(rank=0, world_size=2)).tracker is step_ctx.tracker
    assert for_rank(step_ctx, DistributedContext(rank=1, world_size=2)).tracker is None

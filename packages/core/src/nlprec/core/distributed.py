"""Data-parallel training with torch DDP under `torchrun`: the few helpers a training loop needs.

The same script runs as one process (`python train.py`) or as N (`torchrun --nproc-per-node N
train.py`, on one machine or several): `init_distributed()` reads what torchrun puts in the
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and, when WORLD_SIZE > 1, joins
the process group (NCCL on GPUs, gloo on CPU). Then

    dist_ctx = init_distributed()
    model = wrap_model(model.to(dist_ctx.device), dist_ctx)             # DDP: gradients averaged
    loader = distributed_loader(dataset, global_batch_size=32, dist_ctx=dist_ctx, seed=0)
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)                                 # a new shuffle each epoch
        for batch in loader: ...
    save_checkpoint(model, out / "model.safetensors", dist_ctx)         # rank 0 writes, all wait
    if dist_ctx.is_main: write metrics                                  # rank 0 alone reports
    shutdown(dist_ctx)

A global batch of B rows is split into B / world_size rows per rank; DDP averages the gradients, so
with a mean loss N processes take exactly the optimisation steps one process takes on batches of B
(tests/scale/test_distributed.py checks it). A pipeline step launches the script with
`launch_torchrun(...)` and logs what rank 0 wrote through its StepContext, so MLflow sees one run
whatever the number of processes; `for_rank(step_ctx, dist_ctx)` silences the tracker on the other
ranks when a step itself runs under torchrun.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from nlprec.core.errors import UserError
from nlprec.core.io import atomic_path, atomic_write_json
from torch.utils.data import DataLoader, Dataset, DistributedSampler

logger = logging.getLogger("nlprec.distributed")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: a single process, no process group
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(backend: str | None = None) -> DistributedContext:
    """Join the torchrun job described by the environment; a plain single process when there is none.

    `backend` defaults to NCCL when this process has a GPU and gloo otherwise.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    use_cuda = torch.cuda.is_available() and backend != "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    device = f"cuda:{local_rank}" if use_cuda else "cpu"
    if world_size == 1:
        return DistributedContext(device=device)
    backend = backend or ("nccl" if use_cuda else "gloo")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend, init_method="env://")
    if rank != 0:
        logging.getLogger("nlprec").setLevel(logging.WARNING)  # rank 0 alone logs progress
    return DistributedContext(rank, world_size, local_rank, backend, device)


def shutdown(dist_ctx: DistributedContext) -> None:
    if dist_ctx.is_distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@contextmanager
def distributed_session(backend: str | None = None) -> Iterator[DistributedContext]:
    """`init_distributed` for a `with` block that always leaves the process group on the way out,
    also when training raises (a rank left in the group would hang the others' shutdown)."""
    dist_ctx = init_distributed(backend)
    try:
        yield dist_ctx
    finally:
        shutdown(dist_ctx)


def barrier(dist_ctx: DistributedContext) -> None:
    if dist_ctx.is_distributed:
        torch.distributed.barrier()


def wrap_model(
    model: torch.nn.Module, dist_ctx: DistributedContext, **ddp_kwargs: Any
) -> torch.nn.Module:
    """DistributedDataParallel around `model` (already on `dist_ctx.device`); the model itself alone.

    `ddp_kwargs` go to DDP (e.g. `find_unused_parameters=True` for a model with parameters the loss
    does not reach, such as an unused BERT pooler; dropping such parameters is faster).
    """
    if not dist_ctx.is_distributed:
        return model
    device_ids = [dist_ctx.local_rank] if dist_ctx.device.startswith("cuda") else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def per_rank_batch_size(global_batch_size: int, dist_ctx: DistributedContext) -> int:
    if global_batch_size % dist_ctx.world_size:
        raise UserError(
            f"global batch size {global_batch_size} does not split evenly over {dist_ctx.world_size} processes"
        )
    return global_batch_size // dist_ctx.world_size


def distributed_loader(
    dataset: Dataset,
    global_batch_size: int,
    dist_ctx: DistributedContext,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    **loader_kwargs: Any,
) -> DataLoader:
    """A DataLoader whose DistributedSampler gives this rank its share of every global batch.

    With one process the sampler is the same permutation (same seed), so a single-process run visits
    the same global batches. Call `loader.sampler.set_epoch(epoch)` at the start of each epoch.
    """
    sampler = DistributedSampler(
        dataset,
        num_replicas=dist_ctx.world_size,
        rank=dist_ctx.rank,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
    )
    return DataLoader(
        dataset,
        batch_size=per_rank_batch_size(global_batch_size, dist_ctx),
        sampler=sampler,
        **loader_kwargs,
    )


def all_reduce_mean(value: torch.Tensor, dist_ctx: DistributedContext) -> torch.Tensor:
    """The mean of `value` over every rank (for metrics such as the epoch loss)."""
    if not dist_ctx.is_distributed:
        return value
    return global_sum(value.detach(), dist_ctx) / dist_ctx.world_size


def global_sum(value: torch.Tensor, dist_ctx: DistributedContext) -> torch.Tensor:
    """The sum of `value` over every rank (e.g. the item counts of a whole global batch)."""
    if not dist_ctx.is_distributed:
        return value
    reduced = value.clone()
    torch.distributed.all_reduce(reduced, op=torch.distributed.ReduceOp.SUM)
    return reduced


def loss_weight(local_units: float, global_units: float, dist_ctx: DistributedContext) -> float:
    """The factor on a rank's mean loss (a mean over its `local_units` items, tokens or pairs) that
    makes DDP's gradient average the gradient of the mean over the global batch's `global_units`:

        sum_r w_r * mean_r / world = sum_r (units_r / units) * mean_r = global mean,
        w_r = world * units_r / units

    One process: 1 (0 when the batch scores nothing, so such a batch still joins the backward)."""
    return dist_ctx.world_size * local_units / global_units if global_units else 0.0


def rank_slice(n_rows: int, dist_ctx: DistributedContext) -> slice:
    """This rank's contiguous share of a global batch of `n_rows` (shares differ by at most 1)."""
    bounds = [round(n_rows * r / dist_ctx.world_size) for r in range(dist_ctx.world_size + 1)]
    return slice(bounds[dist_ctx.rank], bounds[dist_ctx.rank + 1])


def save_checkpoint(model: torch.nn.Module, path: Path, dist_ctx: DistributedContext) -> Path:
    """Rank 0 writes the (unwrapped) weights as safetensors; every rank waits until it is on disk."""
    from safetensors.torch import save_file

    path = Path(path)
    if dist_ctx.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            name: tensor.detach().cpu().contiguous()
            for name, tensor in unwrap_model(model).state_dict().items()
        }
        with atomic_path(path) as staging:
            save_file(state, str(staging))
    barrier(dist_ctx)
    return path


def write_json_on_main(path: Path, payload: dict, dist_ctx: DistributedContext) -> Path:
    """Rank 0 writes `payload` as JSON (staged, then renamed into place); every rank waits for it."""
    path = Path(path)
    if dist_ctx.is_main:
        atomic_write_json(path, payload)
    barrier(dist_ctx)
    return path


def for_rank(step_ctx: Any, dist_ctx: DistributedContext) -> Any:
    """A StepContext that logs to MLflow on rank 0 and logs nothing (tracker=None) on the other ranks."""
    return step_ctx if dist_ctx.is_main else dataclasses.replace(step_ctx, tracker=None)


def launch_torchrun(
    script_args: list[str],
    nproc_per_node: int,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> None:
    """Run `torchrun --standalone --nproc-per-node N <script_args>` on this machine and wait for it.

    `script_args` is a script path and its arguments, or `-m module ...`. For several machines run
    torchrun on each with `--nnodes/--rdzv-endpoint` instead (docs/scaling.md).
    """
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc_per_node}",
    ]
    command += [str(arg) for arg in script_args]
    completed = subprocess.run(
        command, env={**os.environ, **(env or {})}, timeout=timeout, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"torchrun exited with status {completed.returncode}: {' '.join(command)}"
        )

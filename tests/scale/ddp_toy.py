"""A tiny regression trained with nlprec.core.distributed: `python ddp_toy.py OUT` or under torchrun.

Rank 0 writes OUT/model.safetensors and OUT/metrics.json; every rank writes OUT/rank-<r>.json with
the row indices it trained on (so the test can check the global batches were split, not repeated).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from nlprec.core.distributed import (
    all_reduce_mean,
    distributed_loader,
    init_distributed,
    save_checkpoint,
    shutdown,
    wrap_model,
)
from torch.utils.data import TensorDataset

N_ROWS, N_FEATURES, GLOBAL_BATCH, EPOCHS, LR, SEED = 64, 6, 8, 3, 0.05, 0


def toy_data() -> TensorDataset:
    generator = torch.Generator().manual_seed(SEED)
    features = torch.randn(N_ROWS, N_FEATURES, generator=generator)  # (N, F)
    target = features @ torch.arange(1.0, N_FEATURES + 1) + 0.1 * torch.randn(
        N_ROWS, generator=generator
    )  # (N,)
    return TensorDataset(torch.arange(N_ROWS), features, target)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    dist_ctx = init_distributed(backend="gloo")
    torch.manual_seed(
        SEED
    )  # identical initial weights on every rank (DDP also broadcasts rank 0's)
    model = wrap_model(
        torch.nn.Sequential(torch.nn.Linear(N_FEATURES, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)),
        dist_ctx,
    )
    optimiser = torch.optim.SGD(model.parameters(), lr=LR)
    loader = distributed_loader(toy_data(), GLOBAL_BATCH, dist_ctx, shuffle=True, seed=SEED)
    seen: list[int] = []
    for epoch in range(EPOCHS):
        loader.sampler.set_epoch(epoch)
        for index, features, target in loader:
            loss = torch.nn.functional.mse_loss(
                model(features).squeeze(-1), target
            )  # mean over this rank's rows
            optimiser.zero_grad()
            loss.backward()  # DDP: gradients averaged over ranks = the gradient of the global-batch mean
            optimiser.step()
            seen += index.tolist()
    final_loss = all_reduce_mean(loss.detach(), dist_ctx)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank-{dist_ctx.rank}.json").write_text(
        json.dumps({"world_size": dist_ctx.world_size, "seen": seen})
    )
    save_checkpoint(model, out / "model.safetensors", dist_ctx)
    if dist_ctx.is_main:
        (out / "metrics.json").write_text(
            json.dumps({"final_loss": float(final_loss), "rank": dist_ctx.rank})
        )
    shutdown(dist_ctx)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

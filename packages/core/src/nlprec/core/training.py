"""The small helper under the paper-specific training loops (PISA, the MOHAWK stages, breakpoint
training, distillation losses): the loop keeps its own batches and loss, the helper does the rest
of an optimisation step the same way everywhere.

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    trainer = Trainer(optimizer, total_steps, schedule=Schedule(warmup_fraction=0.1),
                      max_seconds=ctx.time_left(), device=ctx.device, log_metrics=ctx.log_metrics)
    for batch in trainer.iterate(batches, desc="train"):   # stops when the time budget runs out
        with trainer.autocast():
            loss = loss_fn(batch)
        trainer.step(loss)                                  # backward, clip, step, schedule, log

Learning rate (a multiplier of each group's rate, `lr_multiplier`): linear warm-up over
`warmup_fraction` of the steps, then constant until the last `decay_fraction` (None: from the end of
warm-up, the BERT recipe), decaying linearly or along a cosine to 0. With a time budget the decay
follows whichever runs out first, steps or time, so a time-capped run still ends at a low rate.

Precision: bf16 autocast on CUDA ("auto"), fp32 on CPU (bf16 matmuls are slow on most CPUs); "fp16"
adds a gradient scaler. `BestState` keeps the weights of the epoch with the best validation score.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

Precision = Literal["auto", "fp32", "bf16", "fp16"]
LogMetrics = Callable[..., None]  # ctx.log_metrics(metrics, step=...)


@dataclass(frozen=True)
class Schedule:
    warmup_fraction: float = 0.0
    decay_fraction: float | None = None  # None: decay from the end of warm-up
    shape: Literal["linear", "cosine", "constant"] = "linear"


def lr_multiplier(step: int, total: int, schedule: Schedule, time_fraction: float = 0.0) -> float:
    """The learning-rate multiplier at optimisation step `step` of `total` (see the module doc);
    `time_fraction`: the share of the time budget already spent."""
    warmup = max(1, round(total * schedule.warmup_fraction))
    if step < warmup:
        return (step + 1) / warmup
    if schedule.shape == "constant":
        return 1.0
    decay_start = warmup if schedule.decay_fraction is None else total - round(total * schedule.decay_fraction)
    span = max(1, total - decay_start)
    done = min(1.0, max(0.0, (step - decay_start) / span, (time_fraction * total - decay_start) / span))
    if schedule.shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * done))
    return 1.0 - done


def autocast(device: str, precision: Precision = "auto"):
    """The autocast context for `precision` on `device` ("auto": bf16 on CUDA, fp32 elsewhere)."""
    on_cuda = str(device).startswith("cuda")
    if precision == "fp32" or (precision == "auto" and not on_cuda):
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast("cuda" if on_cuda else "cpu", dtype=dtype)


class Trainer:
    """One optimisation step at a time: backward, gradient clipping, optimiser and schedule steps,
    the time budget, a progress bar and metric logging. See the module doc."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        *,
        schedule: Schedule = Schedule(),
        max_grad_norm: float | None = 1.0,
        max_seconds: float | None = None,
        device: str = "cpu",
        precision: Precision = "auto",
        frozen_until: dict[int, float] | None = None,
        log_metrics: LogMetrics | None = None,
        log_every: int = 0,
        metric_prefix: str = "",
        progress: bool = True,
    ) -> None:
        """`frozen_until`: {parameter-group index: fraction of training (steps or time) during
        which that group's learning rate is 0} (linear probing, then fine-tuning)."""
        self.optimizer, self.total_steps, self.schedule = optimizer, max(1, total_steps), schedule
        self.max_grad_norm, self.max_seconds = max_grad_norm, max_seconds
        self.device, self.precision = device, precision
        self.log_metrics, self.log_every, self.metric_prefix = log_metrics, log_every, metric_prefix
        self.progress = progress
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16" and str(device).startswith("cuda"))
        frozen = frozen_until or {}
        self.started = time.monotonic()  # before the scheduler: LambdaLR evaluates step 0 at once
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            [lambda s, i=i: self._multiplier(s, frozen.get(i, 0.0)) for i in range(len(optimizer.param_groups))],
        )
        self.steps, self.losses = 0, []

    def _multiplier(self, step: int, frozen_fraction: float) -> float:
        if frozen_fraction and max(step / self.total_steps, self.time_fraction()) < frozen_fraction:
            return 0.0
        return lr_multiplier(step, self.total_steps, self.schedule, self.time_fraction())

    # ------------------------------------------------------------------ time budget

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def time_fraction(self) -> float:
        """Share of the time budget spent (0 without a budget)."""
        return self.elapsed() / self.max_seconds if self.max_seconds else 0.0

    def out_of_time(self) -> bool:
        return self.max_seconds is not None and self.elapsed() >= self.max_seconds

    # ------------------------------------------------------------------ the step

    def autocast(self):
        return autocast(self.device, self.precision)

    def step(self, loss: torch.Tensor) -> float:
        """Backward `loss`, clip, take the optimiser and schedule steps, clear the gradients;
        returns the loss as a float (logged every `log_every` steps)."""
        self.scaler.scale(loss).backward()
        if self.max_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        self.losses.append(value)
        if self.log_metrics is not None and self.log_every and self.steps % self.log_every == 0:
            lr = self.optimizer.param_groups[-1]["lr"]
            self.log_metrics({f"{self.metric_prefix}loss": value, f"{self.metric_prefix}lr": lr}, step=self.steps)
        self.steps += 1
        return value

    def iterate(self, batches: Iterable[Any], desc: str = "train", total: int | None = None) -> Iterator[Any]:
        """`batches` with a progress bar (showing the last loss); stops early, before the next
        batch, once the time budget is spent."""
        bar = tqdm(batches, desc=desc, total=total, leave=False, mininterval=2.0, disable=not self.progress)
        for batch in bar:
            if self.out_of_time():
                break
            yield batch
            if self.losses:
                bar.set_postfix(loss=f"{self.losses[-1]:.4f}", refresh=False)
        bar.close()

    def summary(self) -> dict[str, float]:
        return {
            "train_seconds": self.elapsed(),
            "train_steps": self.steps,
            "final_loss": self.losses[-1] if self.losses else math.nan,
            "stopped_early": float(self.steps < self.total_steps and self.out_of_time()),
        }


class BestState:
    """The weights of the epoch with the best validation score (a copy in memory).

    `update(epoch, score)` keeps the state when the score beats the best so far; `restore()` puts the
    best weights back into the model and returns their epoch (None if nothing was recorded)."""

    def __init__(self, model: torch.nn.Module, higher_is_better: bool = True) -> None:
        self.model, self.sign = model, 1.0 if higher_is_better else -1.0
        self.epoch: int | None = None
        self.score = -math.inf
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, score: float) -> bool:
        if self.state is not None and self.sign * score <= self.sign * self.score:
            return False
        self.epoch, self.score = epoch, score
        self.state = copy.deepcopy(self.model.state_dict())
        return True

    def restore(self) -> int | None:
        if self.state is not None:
            self.model.load_state_dict(self.state)
        return self.epoch

"""What a step adds around `transformers.Trainer`: arguments with the project's defaults (best
epoch on dev, one checkpoint kept, bf16 on CUDA, CPU without CUDA, no reporting integrations) and a
callback that forwards the trainer's logs to ``ctx.log_metrics`` and stops at the step's time budget;
`ScheduledTrainer` follows the learning-rate schedule of `nlprec.core.training` (full rate from the
first step of a one-step warm-up, so that short fine-tuning runs keep the numbers of that loop).

    args = training_arguments(ctx.output_dir / "trainer", seed=ctx.seed, metric="f1", epochs=3,
                              learning_rate=5e-5, per_device_train_batch_size=16)
    trainer = transformers.Trainer(model, args, ..., callbacks=[StepCallback(ctx.log_metrics,
                                   ctx.time_left, prefix="ner.")])
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from nlprec.core.training import Schedule, lr_multiplier
from transformers import Trainer, TrainerCallback, TrainingArguments


def training_arguments(
    output_dir: str | Path,
    *,
    seed: int,
    metric: str,
    epochs: float,
    greater_is_better: bool = True,
    **overrides: Any,
) -> TrainingArguments:
    """Epoch-wise evaluation and checkpoints, the best checkpoint (on ``metric``, as the
    ``compute_metrics`` of the trainer names it) loaded at the end; ``overrides`` win."""
    cuda = torch.cuda.is_available()
    settings: dict[str, Any] = {
        "output_dir": str(output_dir),
        "seed": seed,
        "num_train_epochs": epochs,
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "save_total_limit": 1,
        "load_best_model_at_end": True,
        "metric_for_best_model": metric,
        "greater_is_better": greater_is_better,
        "report_to": "none",
        "use_cpu": not cuda,
        "bf16": cuda and torch.cuda.is_bf16_supported(),
        "logging_strategy": "epoch",
        "dataloader_num_workers": 0,
        "save_only_model": True,
    }
    settings.update(overrides)
    return TrainingArguments(**settings)


class StepCallback(TrainerCallback):
    """Forwards every log (loss, learning rate, eval_*) to ``log_metrics(metrics, step=...)`` under
    ``prefix``, and stops training once ``time_left()`` (seconds, or None) is used up."""

    def __init__(
        self,
        log_metrics: Callable[..., None] | None = None,
        time_left: Callable[[], float | None] | None = None,
        prefix: str = "",
    ) -> None:
        self.log_metrics, self.prefix = log_metrics, prefix
        left = time_left() if time_left is not None else None
        self.deadline = None if left is None else time.monotonic() + left
        self.stopped_early = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.log_metrics is None or not state.is_world_process_zero:
            return
        numbers = {f"{self.prefix}{k}": float(v) for k, v in (logs or {}).items()
                   if isinstance(v, int | float)}  # fmt: skip
        if numbers:
            self.log_metrics(numbers, step=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.stopped_early = True
            control.should_training_stop = True  # the epoch's end still evaluates and saves


class ScheduledTrainer(Trainer):
    """`transformers.Trainer` whose learning rate follows `nlprec.core.training.lr_multiplier`
    under ``schedule`` (warm-up counted from step 1, linear or cosine decay to 0)."""

    def __init__(self, *args, schedule: Schedule = Schedule(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.schedule = schedule

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            total = max(1, num_training_steps)
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer or self.optimizer, lambda step: lr_multiplier(step, total, self.schedule)
            )
        return self.lr_scheduler

"""Fine-tuning the heads of this package with `transformers.Trainer` on `datasets.Dataset`s.

`fit_with_trainer` (document classification, NER, extractive QA): AdamW with the head's own
learning rate (`HeadTrainer`), linear warm-up and decay, clipping, bf16 on CUDA, dev scored every
epoch by the task's ``compute_metrics``, the weights of the best dev epoch kept in memory
(`KeepBest`, core's `BestState`: an LP-FT head's start state competes too), the time budget.
Batches hold up to ``max_batch`` items, fewer when the costliest item (encoder rows x tokens)
times the items would exceed ``max_tokens``. Under ``torchrun`` the `accelerate` data loader gives
every rank its part of the same global batches.

`group_by_tokens` batches inputs for prediction (sorted by length: little padding).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from nlprec.core.hf_training import ScheduledTrainer, StepCallback, training_arguments
from nlprec.core.training import BestState, Schedule
from nlprec.core.training import autocast as core_autocast
from torch import nn
from transformers import PrinterCallback, TrainerCallback

logger = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    epochs: int = 3
    lr: float = 5e-5
    head_lr: float = 1e-3  # the freshly initialised head learns faster than the encoder
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_tokens: int = 8192  # padded tokens per batch (rows x longest row)
    max_batch: int = 16
    gradient_checkpointing: bool = False
    device: str = "cpu"
    seed: int = 0
    time_budget_s: float | None = None  # stop early (logged) when training exceeds it
    progress: bool = True
    dist_ctx: Any = None  # nlprec.core.distributed.DistributedContext under torchrun, else None
    work_dir: str | None = None  # transformers.Trainer's scratch folder goes in it (removed after)
    log_metrics: Callable[..., None] | None = None  # ctx.log_metrics: training curves


def _distributed(settings: TrainSettings) -> bool:
    return settings.dist_ctx is not None and settings.dist_ctx.is_distributed


def group_by_tokens(
    widths: Sequence[int],
    rows: Sequence[int],
    max_tokens: int,
    max_batch: int,
) -> list[list[int]]:
    """Pack items into batches with sum(rows) * max(width) <= max_tokens (an oversized item goes alone).

    widths: padded length an item needs; rows: encoder rows it uses (segments per document).
    Items are sorted by width so padding stays small.
    """
    order = sorted(range(len(widths)), key=widths.__getitem__)
    batches, current, current_rows, current_width = [], [], 0, 0
    for i in order:
        width, n_rows = max(widths[i], current_width), current_rows + rows[i]
        if current and (n_rows * width > max_tokens or len(current) >= max_batch):
            batches.append(current)
            current, n_rows, width = [], rows[i], widths[i]
        current.append(i)
        current_rows, current_width = n_rows, width
    if current:
        batches.append(current)
    return batches


def autocast_for(device: str):
    """bf16 autocast on CUDA; plain fp32 on CPU (bf16 matmuls are slow on most CPUs)."""
    return core_autocast(device)


def _param_groups(model: nn.Module, settings: TrainSettings) -> list[dict]:
    encoder_decay, encoder_no_decay, head = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if not name.startswith("encoder."):
            head.append(param)
        elif param.ndim < 2:
            encoder_no_decay.append(param)
        else:
            encoder_decay.append(param)
    return [
        {"params": encoder_decay, "lr": settings.lr, "weight_decay": settings.weight_decay},
        {"params": encoder_no_decay, "lr": settings.lr, "weight_decay": 0.0},
        {"params": head, "lr": settings.head_lr, "weight_decay": 0.0},
    ]


class HeadTrainer(ScheduledTrainer):
    """`transformers.Trainer` for a head of this package (an `nn.Module`): logits are
    ``forward(model, inputs)``, the loss ``loss_fn(logits, labels)``; the optimiser gives the head
    its own learning rate."""

    def __init__(self, *args, forward: Callable, loss_fn: Callable, settings: TrainSettings, **kwargs):
        super().__init__(*args, **kwargs)
        self.forward, self.loss_fn, self.settings = forward, loss_fn, settings

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = torch.optim.AdamW(_param_groups(self.model, self.settings))
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        logits = self.forward(model, inputs)
        loss = self.loss_fn(logits, labels)
        return (loss, {"logits": logits}) if return_outputs else loss


class KeepBest(TrainerCallback):
    """Keeps the weights of the evaluation with the best ``eval_<metric>`` (`BestState`, in memory:
    every rank holds its own identical copy under DDP); ``restore()`` loads them back."""

    def __init__(self, model: nn.Module, metric: str) -> None:
        self.best, self.key, self.scores = BestState(model), f"eval_{metric}", []

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.scores.append(float(metrics[self.key]))
        self.best.update(len(self.scores) - 1, self.scores[-1])


def fit_with_trainer(
    network: nn.Module,
    train_dataset,
    dev_dataset,
    collator,
    forward: Callable[[nn.Module, dict], torch.Tensor],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    compute_metrics: Callable,
    metric: str,
    settings: TrainSettings,
    longest: int,
    score_start: bool = False,
) -> dict:
    """Train ``network`` in place with `HeadTrainer` (see the module doc); dev is scored after every
    epoch (and, with ``score_start``, before the first) and the best dev ``metric`` (a key of
    ``compute_metrics``) is kept. ``longest``: the cost (rows x tokens) of the costliest item.

    Returns a history dict: per-epoch losses and dev scores, the best epoch counted from 0
    (-1: the start), the dev score at the start, whether the budget stopped it, seconds.
    """
    started = time.monotonic()
    with_dev = dev_dataset is not None and len(dev_dataset) > 0
    world = settings.dist_ctx.world_size if _distributed(settings) else 1
    rows = max(1, min(settings.max_batch, settings.max_tokens // max(longest, 1)) // world)
    budget = settings.time_budget_s
    callback = StepCallback(settings.log_metrics, lambda: budget)
    keep = KeepBest(network, metric)
    history: dict = {"loss": [], "dev": [], "best_epoch": None, "stopped_early": False}
    if settings.work_dir is not None:
        Path(settings.work_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.work_dir) as scratch:
        args = training_arguments(
            scratch,
            seed=settings.seed,
            metric=metric,
            epochs=settings.epochs,
            eval_strategy="epoch" if with_dev else "no",
            save_strategy="no",
            load_best_model_at_end=False,
            per_device_train_batch_size=rows,
            per_device_eval_batch_size=rows,
            label_names=["labels"],
            remove_unused_columns=False,
            disable_tqdm=not settings.progress,
            use_cpu=not settings.device.startswith("cuda"),
        )
        trainer = HeadTrainer(
            model=network,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=dev_dataset if with_dev else None,
            data_collator=collator,
            compute_metrics=compute_metrics,
            callbacks=[callback, keep],
            forward=forward,
            loss_fn=loss_fn,
            settings=settings,
            schedule=Schedule(warmup_fraction=settings.warmup_ratio),
        )
        trainer.remove_callback(PrinterCallback)  # the logs go to settings.log_metrics
        if score_start and with_dev:
            history["start_dev"] = trainer.evaluate()[f"eval_{metric}"]
        if settings.epochs > 0:
            with _checkpointing(network, settings.gradient_checkpointing):
                trainer.train()
    start = 1 if "start_dev" in history else 0
    history["dev"] = keep.scores[start:]
    history["loss"] = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    best = keep.best.restore()
    history["best_epoch"] = None if best is None else best - start
    history["stopped_early"] = callback.stopped_early
    if callback.stopped_early:
        logger.warning("time budget of %.0fs reached at step %d", budget, trainer.state.global_step)
    network.eval()
    history["seconds"] = time.monotonic() - started
    return history


@contextlib.contextmanager
def _checkpointing(network: nn.Module, enabled: bool):
    """Gradient checkpointing of the wrapped `transformers` encoder while training."""
    encoder_model = getattr(getattr(network, "encoder", None), "model", None)
    enabled = enabled and encoder_model is not None
    if enabled:
        encoder_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        yield
    finally:
        if enabled:
            encoder_model.gradient_checkpointing_disable()

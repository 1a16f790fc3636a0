"""Fine-tuning the heads of this package.

NER: `fit_with_trainer`, `transformers.Trainer` (AdamW with the head's own
learning rate, linear warm-up and decay, clipping, bf16 on GPU, dev scored every epoch, the best
epoch loaded at the end, the time budget) on `datasets.Dataset`s; under ``torchrun`` its
`accelerate` data loader gives every rank its part of the same global batches.

Classification and QA: `fit`, the loop on `nlprec.core.training` with token-budget batches and best-epoch selection.
Under ``torchrun`` (``TrainSettings.dist_ctx`` from `nlprec.core.distributed.init_distributed`)
every rank builds the same global batches (same seed), takes its share of each with
`rank_batches`, and scales its loss so that DDP's gradient average equals the gradient one process
computes on the whole global batch:

    loss_r = weight_r * mean-loss over rank r's items,   weight_r = world_size * units_r / units

(units: items, or labelled tokens).  A rank whose share is empty runs one item at weight 0,
so every rank joins every gradient all-reduce.  Every rank evaluates the dev set itself (identical
weights, so identical best-epoch choices); the callers let rank 0 alone write and log.
"""

from __future__ import annotations

import contextlib
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from nlprec.core.distributed import loss_weight
from nlprec.core.hf_training import ScheduledTrainer, StepCallback, training_arguments
from nlprec.core.training import BestState, Schedule, Trainer
from nlprec.core.training import autocast as core_autocast
from torch import nn
from transformers import PrinterCallback

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
    work_dir: str | None = None  # transformers.Trainer checkpoints (a temporary folder in it)
    log_metrics: Callable[..., None] | None = None  # ctx.log_metrics: training curves


def _distributed(settings: TrainSettings) -> bool:
    return settings.dist_ctx is not None and settings.dist_ctx.is_distributed


@dataclass
class Shard:
    """This rank's part of a global batch and the weight of its mean loss (see the module doc)."""

    batch: Any
    weight: float


def rank_batches(
    groups: Sequence[Sequence[int]],
    collate: Callable[[list[int]], Any],
    settings: TrainSettings,
    units: Callable[[list[int]], float] = len,
) -> list:
    """Collated batches of ``groups``: all of each group in one process, this rank's share under DDP.

    ``units(items)`` counts what the loss averages over (items, or labelled tokens).
    """
    if not _distributed(settings):
        return [collate(list(group)) for group in groups]
    rank, world = settings.dist_ctx.rank, settings.dist_ctx.world_size
    shards = []
    for group in groups:
        local = list(group[rank::world])
        total = units(list(group))
        if not local or total == 0:
            shards.append(Shard(collate(list(group[:1])), 0.0))
            continue
        shards.append(Shard(collate(local), loss_weight(units(local), total, settings.dist_ctx)))
    return shards


def group_by_tokens(
    widths: Sequence[int],
    rows: Sequence[int],
    max_tokens: int,
    max_batch: int,
    rng: random.Random | None = None,
) -> list[list[int]]:
    """Pack items into batches with sum(rows) * max(width) <= max_tokens (an oversized item goes alone).

    widths: padded length an item needs; rows: encoder rows it uses (segments per document).
    Items are sorted by width (jittered when ``rng`` is given) so padding stays small; the batch
    order is shuffled by ``rng``.
    """
    order = sorted(range(len(widths)), key=lambda i: widths[i] + (rng.random() * 8 if rng else 0))
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
    if rng:
        rng.shuffle(batches)
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


def fit(
    model: nn.Module,
    epoch_batches: Callable[[random.Random], list],
    loss_fn: Callable[[nn.Module, object], torch.Tensor],
    settings: TrainSettings,
    dev_score: Callable[[nn.Module], float] | None = None,
    desc: str = "train",
    score_start: bool = False,
) -> dict:
    """Train ``model`` in place on `nlprec.core.training` (AdamW groups, linear warm-up/decay,
    clipping, autocast, time budget); keep the weights of the epoch with the best dev score.

    epoch_batches(rng) -> the batches of one epoch; loss_fn(model, batch) -> scalar loss.
    Returns a history dict (losses, dev scores, best epoch, seconds).
    """
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    model.to(settings.device)
    network = model  # what the loss runs through: DDP around the model under torchrun
    if _distributed(settings):
        from nlprec.core.distributed import wrap_model

        # unused: e.g. the encoder's pooler, which no head reads
        network = wrap_model(model, settings.dist_ctx, find_unused_parameters=True)
    encoder_model = getattr(getattr(model, "encoder", None), "model", None)
    if settings.gradient_checkpointing and encoder_model is not None:
        encoder_model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    steps_per_epoch = len(epoch_batches(random.Random(settings.seed)))
    trainer = Trainer(
        torch.optim.AdamW(_param_groups(model, settings)),
        settings.epochs * steps_per_epoch,
        schedule=Schedule(warmup_fraction=settings.warmup_ratio),
        max_seconds=settings.time_budget_s,
        device=settings.device,
        progress=settings.progress,
    )
    history: dict = {"loss": [], "dev": [], "best_epoch": None, "stopped_early": False}
    best = BestState(model)
    if score_start and dev_score is not None:
        model.eval()
        history["start_dev"] = dev_score(model)
        best.update(-1, history["start_dev"])
    for epoch in range(settings.epochs):
        model.train()
        losses = []
        for batch in trainer.iterate(epoch_batches(rng), desc=f"{desc} epoch {epoch + 1}"):
            with trainer.autocast():
                if isinstance(batch, Shard):
                    loss = loss_fn(network, batch.batch) * batch.weight
                else:
                    loss = loss_fn(network, batch)
            trainer.step(loss)
            losses.append(_global_loss(loss, settings))
        history["loss"].append(sum(losses) / max(len(losses), 1))
        if dev_score is not None:
            model.eval()
            history["dev"].append(dev_score(model))
            best.update(epoch, history["dev"][-1])
        logger.info(
            "%s epoch %d: loss %.4f dev %s",
            desc,
            epoch + 1,
            history["loss"][-1],
            history["dev"][-1:],
        )
        if trainer.out_of_time():
            logger.warning(
                "%s: time budget of %.0fs reached in epoch %d",
                desc,
                settings.time_budget_s,
                epoch + 1,
            )
            history["stopped_early"] = True
            break
    history["best_epoch"] = best.restore()
    if settings.gradient_checkpointing and encoder_model is not None:
        encoder_model.gradient_checkpointing_disable()
    model.eval()
    history["seconds"] = trainer.elapsed()
    return history


def _global_loss(loss: torch.Tensor, settings: TrainSettings) -> float:
    """The global batch's mean loss: the ranks' weighted losses averaged (one process: as it is)."""
    if not _distributed(settings):
        return loss.item()
    from nlprec.core.distributed import all_reduce_mean

    return all_reduce_mean(loss.detach().float(), settings.dist_ctx).item()


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists: returns input_ids (R, W) and attention_mask (R, W)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


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
) -> dict:
    """Train ``network`` in place with `HeadTrainer` (AdamW groups, linear warm-up/decay,
    clipping, bf16 on CUDA, evaluation and a checkpoint every epoch), load the epoch with the best
    dev ``metric`` (a key of ``compute_metrics``) at the end, stop at the time budget.

    Batches: up to ``max_batch`` rows, fewer when ``longest`` (tokens of the longest item) times the
    rows would exceed ``max_tokens``. Returns a history dict
    (per-epoch losses and dev scores, best epoch counted from 0, seconds).
    """
    started = time.monotonic()
    with_dev = dev_dataset is not None and len(dev_dataset) > 0
    world = settings.dist_ctx.world_size if _distributed(settings) else 1
    rows = max(1, min(settings.max_batch, settings.max_tokens // max(longest, 1)) // world)
    budget = settings.time_budget_s
    callback = StepCallback(settings.log_metrics, lambda: budget)
    with _checkpoint_dir(settings) as checkpoints:
        args = training_arguments(
            checkpoints,
            seed=settings.seed,
            metric=metric,
            epochs=settings.epochs,
            per_device_train_batch_size=rows,
            per_device_eval_batch_size=rows,
            label_names=["labels"],
            remove_unused_columns=False,
            disable_tqdm=not settings.progress,
            use_cpu=not settings.device.startswith("cuda"),
            **({} if with_dev else {"eval_strategy": "no", "save_strategy": "no",
                                    "load_best_model_at_end": False}),  # fmt: skip
        )
        trainer = HeadTrainer(
            model=network,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=dev_dataset if with_dev else None,
            data_collator=collator,
            compute_metrics=compute_metrics,
            callbacks=[callback],
            forward=forward,
            loss_fn=loss_fn,
            settings=settings,
            schedule=Schedule(warmup_fraction=settings.warmup_ratio),
        )
        trainer.remove_callback(PrinterCallback)  # the logs go to settings.log_metrics
        with _checkpointing(network, settings.gradient_checkpointing):
            trainer.train()
    network.eval()
    logs = trainer.state.log_history
    dev = [log[f"eval_{metric}"] for log in logs if f"eval_{metric}" in log]
    best = max(range(len(dev)), key=dev.__getitem__) if dev else None
    if callback.stopped_early:
        logger.warning("time budget of %.0fs reached at step %d", budget, trainer.state.global_step)
    return {
        "loss": [log["loss"] for log in logs if "loss" in log],
        "dev": dev,
        "best_epoch": best,
        "stopped_early": callback.stopped_early,
        "seconds": time.monotonic() - started,
    }


@contextlib.contextmanager
def _checkpoint_dir(settings: TrainSettings):
    """Where the trainer's checkpoints live while it trains: a temporary folder, or under DDP one
    folder in ``work_dir`` that every rank reads the best checkpoint from (rank 0 removes it)."""
    if settings.work_dir is not None:
        Path(settings.work_dir).mkdir(parents=True, exist_ok=True)
    if not _distributed(settings):
        with tempfile.TemporaryDirectory(dir=settings.work_dir) as folder:
            yield folder
        return
    folder = Path(settings.work_dir or ".") / f"checkpoints-seed{settings.seed}"
    yield str(folder)
    torch.distributed.barrier()
    if settings.dist_ctx.is_main:
        shutil.rmtree(folder, ignore_errors=True)


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

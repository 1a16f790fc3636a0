"""Training and prediction loops shared by the breakpoint model and the flat baselines."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from nlprec.beliefs.losses import belief_cross_entropy, constraint_loss
from nlprec.beliefs.model import BreakpointModel, StoryBatch
from nlprec.beliefs.records import Story
from nlprec.core.distributed import DistributedContext, loss_weight, wrap_model
from nlprec.core.training import Schedule, Trainer
from pydantic import BaseModel, Field
from tqdm.auto import tqdm


class TrainConfig(BaseModel):
    model_config = {"extra": "forbid"}
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(5e-5, gt=0)
    head_lr: float = Field(1e-3, gt=0, description="learning rate of projection and scorer")
    weight_decay: float = Field(0.01, ge=0)
    warmup: float = Field(0.1, ge=0, le=1, description="fraction of steps with linear warm-up")
    max_grad_norm: float = Field(1.0, gt=0)
    max_seconds: float | None = Field(None, gt=0, description="stop training after this long")
    frozen_encoder_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="train only the heads (encoder learning rate 0) for this fraction of training, "
        "then fine-tune everything (linear probing, then fine-tuning)",
    )
    seed: int = 0


def make_trainer(model: torch.nn.Module, cfg: TrainConfig, total_steps: int) -> Trainer:
    """AdamW with a lower rate on the pretrained encoder, linear warm-up then linear decay.

    With ``cfg.max_seconds`` the decay follows whichever runs out first, steps or time, so a
    time-capped run still ends at a low learning rate. With ``cfg.frozen_encoder_fraction`` the
    encoder's rate is 0 until that fraction of training (by steps or time) has passed: on bAbI,
    end-to-end fine-tuning settled on "false once the person is mentioned" and never predicted
    true, while heads on a frozen encoder did learn true (benchmarks/RESULTS.md).
    """
    encoder_params = [p for n, p in model.named_parameters() if n.startswith("encoder.")]
    head_params = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    optimizer = torch.optim.AdamW(
        [{"params": encoder_params, "lr": cfg.lr}, {"params": head_params, "lr": cfg.head_lr}],
        weight_decay=cfg.weight_decay,
    )
    return Trainer(
        optimizer,
        total_steps,
        schedule=Schedule(warmup_fraction=cfg.warmup),
        max_grad_norm=cfg.max_grad_norm,
        max_seconds=cfg.max_seconds,
        frozen_until={0: cfg.frozen_encoder_fraction},
    )


def fit(
    model: torch.nn.Module,
    make_batches: Callable[[random.Random], list[Any]],
    step_loss: Callable[[Any], tuple[torch.Tensor, int]],
    cfg: TrainConfig,
    desc: str,
) -> dict[str, float]:
    """Generic loop: ``make_batches(rng)`` gives one epoch of batches, ``step_loss(batch)`` returns
    (loss, number of scored pairs). Returns training statistics incl. pairs per second."""
    rng = random.Random(cfg.seed)
    n_batches = len(make_batches(random.Random(cfg.seed)))
    trainer = make_trainer(model, cfg, n_batches * cfg.epochs)
    model.train()
    pairs = 0
    for epoch in range(cfg.epochs):
        if trainer.out_of_time():
            break
        for batch in trainer.iterate(make_batches(rng), f"{desc} epoch {epoch + 1}/{cfg.epochs}"):
            loss, n_pairs = step_loss(batch)
            trainer.step(loss)
            pairs += n_pairs
    _sync(model)
    stats = trainer.summary()
    model.eval()
    return {**stats, "train_pairs_per_s": pairs / stats["train_seconds"]}


def _sync(model: torch.nn.Module) -> None:
    if next(model.parameters()).is_cuda:
        torch.cuda.synchronize()


def story_batches(
    stories: list[Story], batch_size: int, rng: random.Random | None
) -> list[list[Story]]:
    """Batches of similar length (shuffled between batches when ``rng`` is given)."""
    order = sorted(range(len(stories)), key=lambda i: len(stories[i].sentences))
    batches = [
        [stories[i] for i in order[k : k + batch_size]] for k in range(0, len(order), batch_size)
    ]
    if rng is not None:
        rng.shuffle(batches)
    return batches


def n_scored_pairs(stories: Iterable[Story]) -> int:
    return sum(s.n_breakpoints * len(s.propositions) for s in stories)


def n_labelled_pairs(stories: Iterable[Story]) -> int:
    return sum(label >= 0 for s in stories for row in s.labels for label in row)


def n_constraint_pairs(stories: Iterable[Story]) -> int:
    return sum(s.n_breakpoints * len(s.constraints) for s in stories)


def train_breakpoint(
    model: BreakpointModel,
    stories: list[Story],
    cfg: TrainConfig,
    device: str,
    dist_ctx: DistributedContext | None = None,
) -> dict[str, float]:
    """Train on batches of ``cfg.batch_size`` stories. Under torchrun (``dist_ctx`` with several
    processes) every rank draws the same global batches, encodes its share of the stories, and
    weights its mean loss by its share of the scored pairs, so the DDP-averaged gradient is the
    gradient one process computes on the whole global batch; batches with fewer stories than
    processes are skipped. Pairs per second are this rank's."""
    dist_ctx = dist_ctx or DistributedContext(device=device)
    model.to(device)
    net = wrap_model(model, dist_ctx, find_unused_parameters=True)  # the BERT pooler is unused

    collated: dict[tuple[int, ...], StoryBatch] = {}

    def collate_once(local: list[Story]) -> StoryBatch:
        """Batches keep their stories across epochs (story_batches only reorders them), so each
        is tokenised once and kept on the device: collating a batch of 16 bAbI stories takes
        about 50 ms of CPU, which every epoch used to pay again before each GPU step."""
        key = tuple(id(s) for s in local)
        if key not in collated:
            collated[key] = model.collate(local).to(device)
        return collated[key]

    labelled_counts = {id(s): n_labelled_pairs([s]) for s in stories}

    def labelled(batch_stories: list[Story]) -> int:
        return sum(labelled_counts[id(s)] for s in batch_stories)

    def step_loss(global_batch: list[Story]) -> tuple[torch.Tensor, int]:
        local = global_batch[dist_ctx.rank :: dist_ctx.world_size]
        batch = collate_once(local)
        logits = net(batch)
        share = loss_weight(labelled(local), labelled(global_batch), dist_ctx)
        if share == 0:
            loss = logits.sum() * 0.0  # nothing scored here; DDP still needs every rank's backward
        else:
            loss = share * belief_cross_entropy(logits, batch.labels)
        if model.cfg.constraint_weight > 0 and n_constraint_pairs(local):
            c_share = loss_weight(
                n_constraint_pairs(local), n_constraint_pairs(global_batch), dist_ctx
            )
            loss = loss + model.cfg.constraint_weight * c_share * constraint_loss(
                logits, batch.constraints, batch.constraint_mask, batch.breakpoint_mask
            )
        return loss, n_scored_pairs(local)

    def epoch_batches(rng: random.Random) -> list[list[Story]]:
        batches = story_batches(stories, cfg.batch_size, rng)
        return [b for b in batches if len(b) >= dist_ctx.world_size]

    return fit(model, epoch_batches, step_loss, cfg, "breakpoint")


@torch.no_grad()
def predict_breakpoint(
    model: BreakpointModel, stories: list[Story], device: str, batch_size: int = 32
) -> tuple[list[np.ndarray], float]:
    """Probabilities [T, P, 3] per story (input order) and pairs scored per second."""
    model.to(device).eval()
    out: dict[str, np.ndarray] = {}
    started = time.perf_counter()
    for batch_stories in tqdm(
        story_batches(stories, batch_size, None), desc="breakpoint predict", leave=False
    ):
        probs = model(model.collate(batch_stories).to(device)).float().softmax(-1).cpu().numpy()
        for b, story in enumerate(batch_stories):
            out[id(story)] = probs[b, : story.n_breakpoints, : len(story.propositions)]
    seconds = time.perf_counter() - started
    return [out[id(s)] for s in stories], n_scored_pairs(stories) / max(seconds, 1e-9)


def iterate_chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for k in range(0, len(items), size):
        yield items[k : k + size]

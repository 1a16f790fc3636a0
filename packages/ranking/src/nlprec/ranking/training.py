"""Fine-tuning the bi-encoder and the cross-encoder with sentence-transformers' trainers.

Hard negatives come from a first-stage run (BM25, dense or their fusion): the top-ranked
documents that are not judged relevant.

Training is ``SentenceTransformerTrainer`` / ``CrossEncoderTrainer`` (AdamW, linear warm-up and
decay, clipping at 1.0, duplicate-free batches from ``BatchSamplers.NO_DUPLICATES``; DDP through
accelerate when started under torchrun) with the library's losses:

- bi-encoder: ``MultipleNegativesRankingLoss`` (InfoNCE over in-batch and hard negatives,
  ``scale`` 20) or ``CachedMultipleNegativesRankingLoss`` (GradCache: the same gradients with
  memory bounded by ``mini_batch_size`` texts per forward pass, whatever the batch size);
  queries and documents get the model's ``query`` / ``document`` prompts;
- cross-encoder (monoBERT, a 1-logit ``CrossEncoder``): ``listwise`` = ``ListNetLoss`` with a
  one-hot target, i.e. softmax cross-entropy over [s(q, d+), s(q, d-_1), ..., s(q, d-_n)];
  ``listnet`` (graded 1/0 labels, target softmax(labels)) and ``lambda`` (``LambdaLoss``) over
  the same lists; ``bce`` = ``BinaryCrossEntropyLoss`` on the (query, document) pairs.
  The classifier head (pooler + 1-logit layer) can get its own learning rate (``head_lr``);
  ``micro_batch_size`` bounds memory by gradient accumulation.

Under torchrun ``batch_size`` stays the global batch: each of the N processes takes
``batch_size / N`` examples of it, the bi-encoder loss gathers every rank's embeddings and DDP
averages the gradients, so N processes take the steps one process takes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from nlprec.ranking.data import Qrels, Run, document_text
from pydantic import BaseModel, Field
from transformers import TrainerCallback

MNRL_SCALE = 20.0  # sentence-transformers' default temperature 1/0.05
# ListNetLoss's target is softmax(labels): labels (1e4, 0, ..., 0) make it the positive's one-hot
# (exp(-1e4) is 0 in float32), so the loss is softmax cross-entropy over [d+, d-_1, ..., d-_n]
ONE_HOT_LABEL = 1e4


class TrainingExample(BaseModel):
    query: str
    positive: str
    negatives: list[str]


def mine_hard_negatives(
    queries: Mapping[str, str],
    qrels: Qrels,
    run: Run,
    documents: Mapping[str, Mapping[str, str]],
    n_negatives: int,
    skip_top: int = 0,
    seed: int = 0,
    sample_from: int | None = None,
) -> list[TrainingExample]:
    """One example per (query, relevant document): the query, the document and hard negatives.

    Negatives are the highest-ranked documents of ``run`` not judged relevant, after skipping the
    first ``skip_top`` (often unlabelled positives). With ``sample_from`` set they are drawn at
    random from that many top candidates instead of taken in order. (sentence-transformers'
    ``mine_hard_negatives`` mines with an embedding model; here the candidates come from any
    first-stage run, e.g. the BM25 + dense hybrid.)
    """
    rng = random.Random(seed)
    examples = []
    for qid, relevant in qrels.items():
        if qid not in queries:
            continue
        ranked = [d for d, _ in sorted(run.get(qid, {}).items(), key=lambda item: -item[1])]
        pool = [d for d in ranked if relevant.get(d, 0) <= 0][skip_top:]
        for doc_id, rel in relevant.items():
            if rel <= 0 or doc_id not in documents:
                continue
            if sample_from is not None:
                candidates = pool[:sample_from]
                negatives = rng.sample(candidates, min(n_negatives, len(candidates)))
            else:
                negatives = pool[:n_negatives]
            if len(negatives) < n_negatives:
                continue  # every example needs the same number of negatives
            examples.append(
                TrainingExample(
                    query=queries[qid],
                    positive=document_text(documents[doc_id]),
                    negatives=[document_text(documents[d]) for d in negatives],
                )
            )
    return examples


class BiEncoderTrainConfig(BaseModel):
    model_config = {"extra": "forbid"}
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    loss: Literal["mnrl", "cached_mnrl"] = "mnrl"
    mini_batch_size: int = Field(16, ge=1, description="cached_mnrl: texts per forward chunk")
    max_seq_length: int = Field(256, ge=16)
    max_steps: int = Field(-1, description="-1: full epochs; >0 stops early (tests)")


class CrossEncoderTrainConfig(BaseModel):
    model_config = {"extra": "forbid"}
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=2, description="examples (queries) per step")
    lr: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    loss: Literal["bce", "listwise", "listnet", "lambda"] = "listwise"
    mini_batch_size: int | None = Field(
        None, ge=1, description="listwise/listnet/lambda: pairs per forward chunk (None: the batch)"
    )
    micro_batch_size: int | None = Field(
        None,
        ge=1,
        description="examples per forward + backward, gradients accumulated over the "
        "batch: the same step with the activations of this many lists (None: the whole batch)",
    )
    max_length: int = Field(256, ge=16)
    max_steps: int = Field(-1, description="-1: full epochs; >0 stops early (tests)")
    head_lr: float | None = Field(
        None, gt=0, description="learning rate of the pooler and classifier; None: lr"
    )


# the parts a sequence classifier adds or re-purposes
HEAD_PARTS = ("classifier.", "pooler.")


def is_head_parameter(name: str) -> bool:
    return any(part in name for part in HEAD_PARTS)


def parameter_groups(model: torch.nn.Module, lr: float, head_lr: float | None = None) -> list[dict]:
    """The body at ``lr`` and, with ``head_lr``, the head as a group of its own."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if head_lr is None:
        return [{"params": [p for _, p in named], "lr": lr}]
    return [{"params": [p for n, p in named if not is_head_parameter(n)], "lr": lr},
            {"params": [p for n, p in named if is_head_parameter(n)], "lr": head_lr}]  # fmt: skip


class TimeBudget(TrainerCallback):
    """Stops training after the step that uses up ``max_seconds`` (the step's ``ctx.time_left()``)."""

    def __init__(self, max_seconds: float) -> None:
        self.deadline = time.monotonic() + max_seconds

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() >= self.deadline:
            control.should_training_stop = True


class ForwardLogs(TrainerCallback):
    """The trainer's logs (loss, learning rate, gradient norm) as ``<prefix>.<name>`` metrics at
    the optimisation step, and a line of progress."""

    def __init__(
        self, prefix: str, log_metrics: Callable | None, log: Callable[[str], None]
    ) -> None:
        self.prefix, self.log_metrics, self.log = prefix, log_metrics, log

    def on_log(self, args, state, control, logs=None, **kwargs):
        numbers = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, int | float)}
        if not state.is_world_process_zero or not numbers:
            return
        if self.log_metrics is not None:
            self.log_metrics(
                {f"{self.prefix}.{k}": v for k, v in numbers.items()}, step=state.global_step
            )
        if "loss" in numbers:
            self.log(
                f"{self.prefix} step {state.global_step}/{state.max_steps} loss {numbers['loss']:.4f}"
            )


@dataclass(frozen=True)
class TrainingSetup:
    """Where and how a trainer runs: its output folder, device, seed, number of processes and
    callbacks."""

    output_dir: Path
    device: str = "cpu"
    seed: int = 0
    world_size: int = 1
    callbacks: list[TrainerCallback] = field(default_factory=list)


def _arguments(
    args_cls, cfg, setup: TrainingSetup, per_device: int, accumulation: int = 1, **extra
):
    """The trainer arguments both trainings share: ``cfg.batch_size`` examples per optimisation
    step over all processes, AdamW (weight decay 0.01) with linear warm-up and decay, clipping at
    1.0, no checkpoints, logs every 20 steps to the callbacks only."""
    from sentence_transformers.base.training_args import BatchSamplers

    world, device = setup.world_size, str(setup.device)
    if cfg.batch_size != world * accumulation * per_device:
        raise ValueError(f"batch_size {cfg.batch_size} does not split into {world} process(es) x "
                         f"{accumulation} micro-batch(es) of {per_device}")  # fmt: skip
    return args_cls(
        output_dir=str(setup.output_dir), seed=setup.seed, data_seed=setup.seed,
        per_device_train_batch_size=per_device, gradient_accumulation_steps=accumulation,
        learning_rate=cfg.lr, weight_decay=0.01, warmup_steps=cfg.warmup_ratio,
        lr_scheduler_type="linear", max_grad_norm=1.0,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        batch_sampler=BatchSamplers.NO_DUPLICATES, dataloader_drop_last=False,
        use_cpu=not device.startswith("cuda"), bf16=device.startswith("cuda"),
        save_strategy="no", report_to="none", logging_steps=20, logging_first_step=True,
        disable_tqdm=True, **extra,
    )  # fmt: skip


def biencoder_dataset(examples: list[TrainingExample]):
    """(anchor, positive, negative_1 ... negative_n) columns: what MNRL reads, in its order."""
    from datasets import Dataset

    columns = {"anchor": [e.query for e in examples], "positive": [e.positive for e in examples]}
    for j in range(len(examples[0].negatives)):
        columns[f"negative_{j + 1}"] = [e.negatives[j] for e in examples]
    return Dataset.from_dict(columns)


def biencoder_loss(model, cfg: BiEncoderTrainConfig, distributed: bool = False) -> torch.nn.Module:
    from sentence_transformers.sentence_transformer import losses

    if cfg.loss == "cached_mnrl":
        return losses.CachedMultipleNegativesRankingLoss(
            model,
            scale=MNRL_SCALE,
            mini_batch_size=cfg.mini_batch_size,
            gather_across_devices=distributed,
        )
    return losses.MultipleNegativesRankingLoss(
        model, scale=MNRL_SCALE, gather_across_devices=distributed
    )


def column_prompts(model, columns: list[str]) -> dict[str, str]:
    """The model's ``query`` prompt for the anchor column, its ``document`` prompt for the others."""
    prompts = model.prompts or {}
    wanted = {c: prompts.get("query" if c == "anchor" else "document") for c in columns}
    return {c: p for c, p in wanted.items() if p}


def biencoder_trainer(
    model_name_or_dir: str,
    examples: list[TrainingExample],
    cfg: BiEncoderTrainConfig,
    setup: TrainingSetup,
):
    """A ``SentenceTransformerTrainer`` for the model, the examples and ``cfg``."""
    from nlprec.ranking.encoder import load_encoder
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    if not examples:
        raise ValueError(
            "no training examples (does the split have judged queries with relevant documents?)"
        )
    torch.manual_seed(setup.seed)
    model = load_encoder(model_name_or_dir, device=setup.device, max_seq_length=cfg.max_seq_length)
    dataset = biencoder_dataset(examples)
    args = _arguments(SentenceTransformerTrainingArguments, cfg, setup, cfg.batch_size // setup.world_size,
                      prompts=column_prompts(model, dataset.column_names))  # fmt: skip
    return _quiet(SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, callbacks=list(setup.callbacks),
        loss=biencoder_loss(model, cfg, distributed=setup.world_size > 1),
    ))  # fmt: skip


def _quiet(trainer):
    """The trainer without its printing of every log (``ForwardLogs`` reports them)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def cross_encoder_dataset(examples: list[TrainingExample], loss: str):
    """``bce``: (query, document, label) pairs; the list losses: (query, docs, labels) with the
    positive first (ListNet's target softmax(labels) is its one-hot for ``listwise``)."""
    from datasets import Dataset

    if loss == "bce":
        rows = [
            (e.query, d, float(i == 0))
            for e in examples
            for i, d in enumerate([e.positive, *e.negatives])
        ]
        return Dataset.from_dict({"query": [r[0] for r in rows], "document": [r[1] for r in rows],
                                  "label": [r[2] for r in rows]})  # fmt: skip
    top = ONE_HOT_LABEL if loss == "listwise" else 1.0
    return Dataset.from_dict({
        "query": [e.query for e in examples],
        "docs": [[e.positive, *e.negatives] for e in examples],
        "labels": [[top] + [0.0] * len(e.negatives) for e in examples],
    })  # fmt: skip


def cross_encoder_loss(model, cfg: CrossEncoderTrainConfig, pairs_per_step: int) -> torch.nn.Module:
    """The library loss; the list losses score ``cfg.mini_batch_size`` pairs per forward pass,
    by default all ``pairs_per_step`` of a (micro-)batch at once."""
    from sentence_transformers.cross_encoder import losses

    chunk = cfg.mini_batch_size or pairs_per_step
    if cfg.loss in ("listwise", "listnet"):
        return losses.ListNetLoss(model, mini_batch_size=chunk)
    if cfg.loss == "lambda":
        return losses.LambdaLoss(model, mini_batch_size=chunk)
    return losses.BinaryCrossEntropyLoss(model)


def _cross_encoder_trainer(head_lr: float | None):
    """``CrossEncoderTrainer``, with the head in a parameter group of its own when ``head_lr`` is
    set (the trainer's schedule then scales both groups)."""
    from sentence_transformers.cross_encoder import CrossEncoderTrainer

    if head_lr is None:
        return CrossEncoderTrainer

    class HeadLearningRateTrainer(CrossEncoderTrainer):
        def create_optimizer(self, model=None):
            if self.optimizer is None:
                groups = parameter_groups(model or self.model, self.args.learning_rate, head_lr)
                self.optimizer = torch.optim.AdamW(groups, lr=self.args.learning_rate,
                                                   weight_decay=self.args.weight_decay)  # fmt: skip
            return self.optimizer

    return HeadLearningRateTrainer


def cross_encoder_trainer(
    model_name_or_dir: str,
    examples: list[TrainingExample],
    cfg: CrossEncoderTrainConfig,
    setup: TrainingSetup,
):
    """A ``CrossEncoderTrainer`` for a 1-logit ``CrossEncoder`` (monoBERT) from an encoder
    checkpoint. ``micro_batch_size`` examples go through each forward + backward and the gradients
    are accumulated up to ``batch_size`` (the losses are means over examples: the same step)."""
    from nlprec.ranking.rerank import load_cross_encoder
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments

    if not examples:
        raise ValueError("no training examples for the cross-encoder")
    torch.manual_seed(setup.seed)
    model = load_cross_encoder(model_name_or_dir, cfg.max_length, device=setup.device)
    if setup.world_size > 1 and cfg.mini_batch_size is not None:
        raise ValueError("cross-encoder mini_batch_size runs in one process only (DDP takes one "
                         "forward pass per step); bound memory with micro_batch_size")  # fmt: skip
    per_device = min(cfg.micro_batch_size or cfg.batch_size, cfg.batch_size // setup.world_size)
    accumulation = cfg.batch_size // (setup.world_size * per_device)
    # every parameter of a cross-encoder scores; DDP's search for unused ones does not see through
    # the model's output mapping and would mark the head ready twice
    args = _arguments(CrossEncoderTrainingArguments, cfg, setup, per_device, accumulation,
                      ddp_find_unused_parameters=False)  # fmt: skip
    return _quiet(_cross_encoder_trainer(cfg.head_lr)(
        model=model, args=args, train_dataset=cross_encoder_dataset(examples, cfg.loss),
        loss=cross_encoder_loss(model, cfg, per_device * (1 + len(examples[0].negatives))),
        callbacks=list(setup.callbacks),
    ))  # fmt: skip


def fine_tune(
    model_name_or_dir: str,
    examples: list[TrainingExample],
    cfg: BiEncoderTrainConfig | CrossEncoderTrainConfig,
    output_dir: str | Path,
    device: str = "cpu",
    seed: int = 0,
    log=print,
    dist_ctx=None,
    log_metrics=None,
    max_seconds: float | None = None,
) -> Path:
    """Fine-tune the bi-encoder (a ``BiEncoderTrainConfig``) or the cross-encoder, log through
    ``log`` / ``log_metrics``, stop when ``max_seconds`` run out; returns the saved model dir."""
    prefix, build = (("biencoder", biencoder_trainer) if isinstance(cfg, BiEncoderTrainConfig)
                     else ("cross_encoder", cross_encoder_trainer))  # fmt: skip
    world_size = dist_ctx.world_size if dist_ctx is not None else 1
    callbacks = [ForwardLogs(prefix, log_metrics, log)] + (
        [TimeBudget(max_seconds)] if max_seconds is not None else []
    )
    trainer = build(
        model_name_or_dir,
        examples,
        cfg,
        TrainingSetup(Path(output_dir), device, seed, world_size, callbacks),
    )
    trainer.train()
    model_dir = Path(output_dir) / "model"
    trainer.save_model(str(model_dir))  # the main process writes
    return model_dir

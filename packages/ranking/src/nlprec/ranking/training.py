"""Fine-tuning the bi-encoder and the cross-encoder with sentence-transformers' losses.

Hard negatives come from a first-stage run (BM25, dense or their fusion): the top-ranked
documents that are not judged relevant.

The losses, the duplicate-free batching and the models are sentence-transformers':

- bi-encoder: ``MultipleNegativesRankingLoss`` (InfoNCE over in-batch and hard negatives,
  ``scale`` 20) or ``CachedMultipleNegativesRankingLoss`` (GradCache: the same gradients with
  memory bounded by ``mini_batch_size`` texts per forward pass, whatever the batch size);
  queries and documents get the model's ``query`` / ``document`` prompts;
- cross-encoder (monoBERT, a 1-logit ``CrossEncoder``): ``listwise`` = ``ListNetLoss`` with a
  one-hot target, i.e. softmax cross-entropy over [s(q, d+), s(q, d-_1), ..., s(q, d-_n)];
  ``listnet`` (graded 1/0 labels, target softmax(labels)) and ``lambda`` (``LambdaLoss``) over
  the same lists; ``bce`` = ``BinaryCrossEntropyLoss`` on the (query, document) pairs.
  The classifier head (pooler + 1-logit layer) can get its own learning rate (``head_lr``).
- batches: ``NoDuplicatesBatchSampler`` (a text appearing twice in a batch would be a false
  in-batch negative).

``SentenceTransformerTrainer`` / ``CrossEncoderTrainer`` need ``datasets`` and ``accelerate``,
which are not in the project's lock, so the optimiser step around the library loss is written
here (AdamW, linear warm-up and decay, clipping at 1.0). Under torchrun (``dist_ctx``) every rank
draws the same global batches and trains on its share; the bi-encoder loss gathers every rank's
embeddings (``gather_across_devices``) and gradients are averaged, so N processes take the steps
one process takes on the same global batches.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import torch
from nlprec.ranking.data import Qrels, Run, document_text
from pydantic import BaseModel, Field

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
    ``mine_hard_negatives`` mines with an embedding model and needs ``datasets``; here the
    candidates are a first-stage run, e.g. the hybrid.)
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


class ExampleTable:
    """The examples as the column table sentence-transformers' batch samplers read
    (``column_names``, ``len``, rows as dicts): query, positive, negative_1 ... negative_n."""

    def __init__(self, examples: list[TrainingExample]) -> None:
        self.examples = examples
        n_neg = len(examples[0].negatives) if examples else 0
        self.column_names = ["query", "positive"] + [f"negative_{j + 1}" for j in range(n_neg)]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, str]:
        example = self.examples[index]
        return dict(
            zip(self.column_names, [example.query, example.positive, *example.negatives], strict=True)
        )


def no_duplicate_batches(
    examples: list[TrainingExample], batch_size: int, seed: int
) -> list[list[int]]:
    """Shuffled batches of example indices in which no text appears twice (the library's
    ``NoDuplicatesBatchSampler``); a last batch smaller than two is dropped."""
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    sampler = NoDuplicatesBatchSampler(
        ExampleTable(examples), batch_size=batch_size, drop_last=False,
        generator=torch.Generator(), seed=seed,
    )  # fmt: skip
    return [list(batch) for batch in sampler if len(batch) >= 2]


class BiEncoderTrainConfig(BaseModel):
    model_config = {"extra": "forbid"}
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    loss: Literal["mnrl", "cached_mnrl"] = "mnrl"
    mini_batch_size: int = Field(16, ge=1, description="cached_mnrl: texts per forward chunk")
    max_seq_length: int = Field(256, ge=16)
    max_steps: int = Field(-1, description="-1: full epochs; >0 stops early (tests)")


class CrossEncoderTrainConfig(BaseModel):
    model_config = {"extra": "forbid"}
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=2, description="examples (queries) per step")
    lr: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    loss: Literal["bce", "listwise", "listnet", "lambda"] = "listwise"
    mini_batch_size: int | None = Field(
        None, ge=1, description="listwise/listnet/lambda: pairs per forward chunk (None: the batch)"
    )
    micro_batch_size: int | None = Field(
        None, ge=1, description="examples per forward + backward, gradients accumulated over the "
        "batch: the same step with the activations of this many lists (None: the whole batch)",
    )
    max_length: int = Field(256, ge=16)
    max_steps: int = Field(-1)
    head_lr: float | None = Field(
        None, gt=0, description="learning rate of the pooler and classifier; None: lr"
    )


# the parts a sequence classifier adds or re-purposes
HEAD_PARTS = ("classifier.", "pooler.")


def is_head_parameter(name: str) -> bool:
    return any(part in name for part in HEAD_PARTS)


def optimizer_and_schedule(
    model: torch.nn.Module,
    lr: float,
    warmup_ratio: float,
    total_steps: int,
    head_lr: float | None = None,
):
    """AdamW with linear warm-up and decay; with ``head_lr`` the head is its own parameter group."""
    from transformers import get_linear_schedule_with_warmup

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    split = head_lr is not None
    head = [p for n, p in named if split and is_head_parameter(n)]
    body = [p for n, p in named if not (split and is_head_parameter(n))]
    groups = [{"params": body, "lr": lr}] + ([{"params": head, "lr": head_lr}] if head else [])
    optimizer = torch.optim.AdamW(groups, lr=lr)
    warmup = int(math.ceil(warmup_ratio * total_steps))
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, max(total_steps, 1))


def rank_share(batch: list[int], rank: int, world_size: int) -> list[int]:
    """This rank's contiguous share of a global batch. Every rank gets the same number of examples
    (gathering embeddings needs equal shapes): a batch that does not split evenly loses its last
    ``len(batch) % world_size`` examples under several processes."""
    per_rank = len(batch) // world_size
    return batch[rank * per_rank : (rank + 1) * per_rank]


def average_gradients(model: torch.nn.Module, world_size: int) -> None:
    """Every gradient becomes its mean over ranks (what DDP's reducer does after backward)."""
    for param in model.parameters():
        if param.grad is not None:
            torch.distributed.all_reduce(param.grad, op=torch.distributed.ReduceOp.SUM)
            param.grad /= world_size


def _fit(
    model: torch.nn.Module,
    examples: list[TrainingExample],
    cfg: BiEncoderTrainConfig | CrossEncoderTrainConfig,
    seed: int,
    batch_loss: Callable[[list[TrainingExample]], torch.Tensor],
    log,
    name: str,
    dist_ctx=None,
) -> list[float]:
    """Duplicate-free global batches, one library loss per batch, AdamW steps; returns the losses."""
    from nlprec.core.distributed import all_reduce_mean

    world, rank = (dist_ctx.world_size, dist_ctx.rank) if dist_ctx else (1, 0)
    micro = getattr(cfg, "micro_batch_size", None)

    def global_batches(epoch: int) -> list[list[int]]:  # each rank needs at least one example
        return [b for b in no_duplicate_batches(examples, cfg.batch_size, seed + epoch) if len(b) >= world]

    per_epoch = len(global_batches(0))
    total = per_epoch * cfg.epochs if cfg.max_steps <= 0 else min(per_epoch * cfg.epochs, cfg.max_steps)
    optimizer, scheduler = optimizer_and_schedule(
        model, cfg.lr, cfg.warmup_ratio, total, getattr(cfg, "head_lr", None)
    )
    model.train()
    step, losses = 0, []
    for epoch in range(cfg.epochs):
        for batch in global_batches(epoch):
            loss = _accumulate(batch_loss, [examples[i] for i in rank_share(batch, rank, world)], micro)
            if world > 1:
                average_gradients(model, world)
                loss = all_reduce_mean(loss.detach(), dist_ctx)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step(), scheduler.step(), optimizer.zero_grad()
            step += 1
            losses.append(loss.item())
            if step % 20 == 0 or step == total:
                log(f"{name} step {step}/{total} loss {loss.item():.4f}")
            if step >= total:
                model.eval()
                return losses
    model.eval()
    return losses


def _accumulate(batch_loss, chosen: list[TrainingExample], micro: int | None) -> torch.Tensor:
    """Backward over ``chosen`` in chunks of ``micro`` examples, each loss weighted by its share:
    the gradient of the whole batch's mean loss, with the activations of one chunk at a time
    (exact for losses that are means of per-example terms, as the cross-encoder losses here are)."""
    micro = micro or len(chosen)
    total = 0.0
    for start in range(0, len(chosen), micro):
        chunk = chosen[start : start + micro]
        loss = batch_loss(chunk) * (len(chunk) / len(chosen))
        loss.backward()
        total += loss.detach()
    return total


def _save_on_main(save, dist_ctx) -> None:
    """Rank 0 (or the only process) saves; every rank waits until it has."""
    from nlprec.core.distributed import barrier

    if dist_ctx is None or dist_ctx.is_main:
        save()
    if dist_ctx is not None:
        barrier(dist_ctx)


def biencoder_loss(model, cfg: BiEncoderTrainConfig, distributed: bool = False) -> torch.nn.Module:
    from sentence_transformers.sentence_transformer import losses

    if cfg.loss == "cached_mnrl":
        if distributed:
            raise ValueError("loss 'cached_mnrl' runs in one process only; use 'mnrl' under torchrun")
        return losses.CachedMultipleNegativesRankingLoss(
            model, scale=MNRL_SCALE, mini_batch_size=cfg.mini_batch_size
        )
    return losses.MultipleNegativesRankingLoss(
        model, scale=MNRL_SCALE, gather_across_devices=distributed
    )


def train_biencoder(
    model_name_or_dir: str,
    examples: list[TrainingExample],
    cfg: BiEncoderTrainConfig,
    output_dir: str | Path,
    device: str = "cpu",
    seed: int = 0,
    log=print,
    dist_ctx=None,
) -> Path:
    """Fine-tune a SentenceTransformer with in-batch + hard negatives; returns the saved model dir."""
    from nlprec.ranking.encoder import load_encoder
    from sentence_transformers.util import batch_to_device

    if not examples:
        raise ValueError(
            "no training examples (does the split have judged queries with relevant documents?)"
        )
    torch.manual_seed(seed)
    model = load_encoder(model_name_or_dir, device=device, max_seq_length=cfg.max_seq_length)
    loss_fn = biencoder_loss(model, cfg, distributed=dist_ctx is not None and dist_ctx.is_distributed)
    prompts = model.prompts or {}

    def features(texts: list[str], prompt: str | None) -> dict:
        return batch_to_device(model.preprocess(texts, prompt=prompt or None), model.device)

    def batch_loss(chosen: list[TrainingExample]) -> torch.Tensor:
        columns = [[e.query for e in chosen], [e.positive for e in chosen]]
        columns += [[e.negatives[j] for e in chosen] for j in range(len(chosen[0].negatives))]
        kinds = ["query"] + ["document"] * (len(columns) - 1)
        with _autocast(device):
            return loss_fn([features(c, prompts.get(k)) for c, k in zip(columns, kinds, strict=True)], None)

    _fit(model, examples, cfg, seed, batch_loss, log, "bi-encoder", dist_ctx)
    model_dir = Path(output_dir) / "model"
    _save_on_main(lambda: model.save_pretrained(str(model_dir)), dist_ctx)
    return model_dir


def cross_encoder_loss(model, cfg: CrossEncoderTrainConfig) -> tuple[torch.nn.Module, Callable]:
    """The library loss and how a batch of examples becomes its (inputs, labels)."""
    from sentence_transformers.cross_encoder import losses

    def lists(chosen: list[TrainingExample]):  # queries, document lists, relevance labels
        docs = [[e.positive, *e.negatives] for e in chosen]
        labels = [torch.tensor([1.0] + [0.0] * len(e.negatives)) for e in chosen]
        return [[e.query for e in chosen], docs], labels

    def pairs(chosen: list[TrainingExample]):  # (query, document) pairs, 0/1 labels
        rows = [(e.query, d, float(i == 0)) for e in chosen for i, d in enumerate([e.positive, *e.negatives])]
        return [[r[0] for r in rows], [r[1] for r in rows]], torch.tensor([r[2] for r in rows])

    def one_hot_lists(chosen: list[TrainingExample]):  # ListNet's target softmax(labels) = one-hot
        inputs, labels = lists(chosen)
        return inputs, [ONE_HOT_LABEL * label for label in labels]

    if cfg.loss == "listwise":
        return losses.ListNetLoss(model, mini_batch_size=cfg.mini_batch_size), one_hot_lists
    if cfg.loss == "listnet":
        return losses.ListNetLoss(model, mini_batch_size=cfg.mini_batch_size), lists
    if cfg.loss == "lambda":
        return losses.LambdaLoss(model, mini_batch_size=cfg.mini_batch_size), lists
    return losses.BinaryCrossEntropyLoss(model), pairs


def train_cross_encoder(
    model_name_or_dir: str,
    examples: list[TrainingExample],
    cfg: CrossEncoderTrainConfig,
    output_dir: str | Path,
    device: str = "cpu",
    seed: int = 0,
    log=print,
    dist_ctx=None,
) -> Path:
    """Fine-tune a 1-logit ``CrossEncoder`` (monoBERT) from an encoder checkpoint; returns its dir.

    Under torchrun each rank scores its share of the global batch (each example's list is
    self-contained, so nothing is gathered) and rank 0 saves."""
    from nlprec.ranking.rerank import load_cross_encoder

    if not examples:
        raise ValueError("no training examples for the cross-encoder")
    torch.manual_seed(seed)
    model = load_cross_encoder(model_name_or_dir, cfg.max_length, device=device)
    loss_fn, to_inputs = cross_encoder_loss(model, cfg)

    def batch_loss(chosen: list[TrainingExample]) -> torch.Tensor:
        inputs, labels = to_inputs(chosen)
        if isinstance(labels, torch.Tensor):
            labels = labels.to(model.device)
        with _autocast(device):
            return loss_fn(inputs, labels).float()

    _fit(model, examples, cfg, seed, batch_loss, log, "cross-encoder", dist_ctx)
    model_dir = Path(output_dir) / "model"
    _save_on_main(lambda: model.save_pretrained(str(model_dir)), dist_ctx)
    return model_dir


def _autocast(device: str):
    on_gpu = str(device).startswith("cuda")
    return torch.autocast("cuda" if on_gpu else "cpu", dtype=torch.bfloat16, enabled=on_gpu)

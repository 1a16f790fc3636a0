"""Fine-tuning the bi-encoder and the cross-encoder on a dataset's training qrels.

Hard negatives come from a first-stage run (BM25, dense or their fusion): the top-ranked
documents that are not judged relevant.

The loops are plain PyTorch around the sentence-transformers / transformers models, so they
run where ``datasets`` and ``accelerate`` (which the library trainers need) are not installed,
e.g. the GPU machine.

Bi-encoder, MultipleNegativesRankingLoss / InfoNCE over in-batch and hard negatives::

    S = scale * Q @ D^T          Q: (B, dim) queries, D: (B * (1 + n_neg), dim) positives then negatives
    L = cross_entropy(S, labels = arange(B))

with batches that never hold the same text twice (a duplicate would be a false negative). The
cached variant (sentence-transformers' CachedMultipleNegativesRankingLoss, GradCache) gives the
same gradients with constant memory for large batches.

Cross-encoder (monoBERT), logits s(q, d) from a 1-label sequence classifier:
  ``bce``:      binary cross-entropy on (q, d, label)
  ``listwise``: cross-entropy of softmax over [s(q, d+), s(q, d-_1), ..., s(q, d-_n)] (positive first)
  distillation (``distill_weight`` λ > 0, listwise only): the target is no longer one-hot but
      (1 - λ) · onehot(positive) + λ · softmax(t / τ), t = the first stage's min-max scores of the
      same documents (the fused ranking as teacher), τ = ``teacher_temperature``.
The classifier head (pooler + 1-logit layer) of a checkpoint that never ranked pairs can get its
own, larger learning rate (``head_lr``): with ~100 steps at the encoder's 2e-5 it barely moves.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from nlprec.ranking.data import Qrels, Run, document_text
from pydantic import BaseModel, Field

MNRL_SCALE = 20.0  # sentence-transformers' default temperature 1/0.05


class TrainingExample(BaseModel):
    query: str
    positive: str
    negatives: list[str]
    teacher_scores: list[float] | None = Field(
        None, description="first-stage scores of [positive, *negatives], for distillation"
    )


def mine_hard_negatives(
    queries: Mapping[str, str],
    qrels: Qrels,
    run: Run,
    documents: Mapping[str, Mapping[str, str]],
    n_negatives: int,
    skip_top: int = 0,
    seed: int = 0,
    sample_from: int | None = None,
    with_teacher_scores: bool = False,
) -> list[TrainingExample]:
    """One example per (query, relevant document): the query, the document and hard negatives.

    Negatives are the highest-ranked documents of ``run`` not judged relevant, after skipping the
    first ``skip_top`` (often unlabelled positives). With ``sample_from`` set they are drawn at
    random from that many top candidates instead of taken in order. ``with_teacher_scores`` keeps
    the run's min-max-normalised scores of the positive and the negatives (a positive the run did
    not retrieve gets 0, the floor of the normalised scale).
    """
    rng = random.Random(seed)
    examples = []
    for qid, relevant in qrels.items():
        if qid not in queries:
            continue
        ranked = [d for d, _ in sorted(run.get(qid, {}).items(), key=lambda item: -item[1])]
        teacher = _minmax(run.get(qid, {}))
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
                    teacher_scores=[teacher.get(d, 0.0) for d in [doc_id, *negatives]]
                    if with_teacher_scores
                    else None,
                )
            )
    return examples


def _minmax(scores: Mapping[str, float]) -> dict[str, float]:
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    span = high - low
    return {d: (s - low) / span if span > 0 else 1.0 for d, s in scores.items()}


def no_duplicate_batches(
    examples: list[TrainingExample], batch_size: int, seed: int
) -> list[list[int]]:
    """Shuffled batches of example indices in which no text (query or document) appears twice.

    An example that clashes with the batch being filled waits for the next one. Examples that
    cannot be placed by the end are dropped, as is a last batch smaller than two.
    """
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    batches, waiting = [], []
    batch, seen = [], set()
    for index in order:
        waiting.append(index)
        still_waiting = []
        for candidate in waiting:
            texts = {
                examples[candidate].query,
                examples[candidate].positive,
                *examples[candidate].negatives,
            }
            if len(batch) < batch_size and not (texts & seen):
                batch.append(candidate)
                seen |= texts
            else:
                still_waiting.append(candidate)
        waiting = still_waiting
        if len(batch) == batch_size:
            batches.append(batch)
            batch, seen = [], set()
    if len(batch) >= 2:
        batches.append(batch)
    return batches


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
    loss: Literal["bce", "listwise"] = "listwise"
    max_length: int = Field(256, ge=16)
    max_steps: int = Field(-1)
    head_lr: float | None = Field(
        None, gt=0, description="learning rate of the pooler and classifier; None: lr"
    )
    distill_weight: float = Field(
        0.0, ge=0, le=1, description="listwise: weight of the first-stage teacher in the target"
    )
    teacher_temperature: float = Field(0.1, gt=0)


# the parts a sequence classifier adds or re-purposes
HEAD_PREFIXES = ("classifier.", "bert.pooler.")


def _optimizer(
    model: torch.nn.Module,
    lr: float,
    warmup_ratio: float,
    total_steps: int,
    head_lr: float | None = None,
):
    from transformers import get_linear_schedule_with_warmup

    named = list(model.named_parameters())
    head = [p for n, p in named if head_lr is not None and n.startswith(HEAD_PREFIXES)]
    body = [p for n, p in named if not (head_lr is not None and n.startswith(HEAD_PREFIXES))]
    groups = [{"params": body, "lr": lr}] + ([{"params": head, "lr": head_lr}] if head else [])
    optimizer = torch.optim.AdamW(groups, lr=lr)
    warmup = int(math.ceil(warmup_ratio * total_steps))
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, max(total_steps, 1))


def _steps(n_batches_per_epoch: int, epochs: int, max_steps: int) -> int:
    total = n_batches_per_epoch * epochs
    return min(total, max_steps) if max_steps > 0 else total


def _autocast(device: str):
    on_gpu = device.startswith("cuda")
    return torch.autocast("cuda" if on_gpu else "cpu", dtype=torch.bfloat16, enabled=on_gpu)


def info_nce_loss(
    query_emb: torch.Tensor, doc_emb: torch.Tensor, scale: float = MNRL_SCALE
) -> torch.Tensor:
    """query_emb (B, dim), doc_emb (B * (1 + n_neg), dim) with row i = positive of query i."""
    query_emb = torch.nn.functional.normalize(query_emb, dim=-1)
    doc_emb = torch.nn.functional.normalize(doc_emb, dim=-1)
    scores = scale * query_emb @ doc_emb.T  # (B, B * (1 + n_neg))
    labels = torch.arange(len(query_emb), device=scores.device)
    return torch.nn.functional.cross_entropy(scores, labels)


def listwise_targets(
    n_docs: int, teacher_scores: torch.Tensor | None, weight: float, temperature: float
) -> torch.Tensor:
    """(B, n_docs) target distributions: one-hot on the positive (column 0), mixed with the
    teacher's softmax(t / temperature) at ``weight`` when teacher scores (B, n_docs) are given."""
    batch = 1 if teacher_scores is None else len(teacher_scores)
    onehot = torch.zeros(batch, n_docs)
    onehot[:, 0] = 1.0
    if teacher_scores is None or weight == 0:
        return onehot
    return (1 - weight) * onehot + weight * torch.softmax(teacher_scores / temperature, dim=-1)


def rank_share(batch: list[int], rank: int, world_size: int) -> list[int]:
    """This rank's contiguous share of a global batch. Every rank gets the same number of examples
    (gathering embeddings needs equal shapes): a batch that does not split evenly loses its last
    ``len(batch) % world_size`` examples under several processes."""
    per_rank = len(batch) // world_size
    return batch[rank * per_rank : (rank + 1) * per_rank]


def average_gradients(model: torch.nn.Module, world_size: int) -> None:
    """What DDP does after backward, done explicitly: every gradient becomes its mean over ranks.

    Explicit rather than the DDP wrapper because the bi-encoder runs two forward passes per step
    (queries, documents) and the BERT pooler gets no gradient, both awkward for DDP's reducer.
    Parameters without a gradient have none on every rank (same model, same loss)."""
    for param in model.parameters():
        if param.grad is not None:
            torch.distributed.all_reduce(param.grad, op=torch.distributed.ReduceOp.SUM)
            param.grad /= world_size


def _run_training(
    model, examples: list[TrainingExample], cfg, seed: int, batch_loss, log, name: str,
    dist_ctx=None,
) -> list[float]:  # fmt: skip
    """The loop both trainers share: duplicate-free batches, AdamW with linear warm-up and decay,
    gradient clipping at 1.0; ``batch_loss(chosen_examples) -> loss`` is the model-specific part.

    Under torchrun (``dist_ctx`` with world size N) every rank draws the same global batches, takes
    its share, and the gradients are averaged over ranks before clipping: N processes take the
    steps one process takes on the same global batches. Returns each step's loss (the mean over
    ranks)."""
    from nlprec.core.distributed import all_reduce_mean

    world, rank = (dist_ctx.world_size, dist_ctx.rank) if dist_ctx else (1, 0)

    def global_batches(epoch_seed: int) -> list[list[int]]:  # each rank needs at least one example
        return [
            b for b in no_duplicate_batches(examples, cfg.batch_size, epoch_seed) if len(b) >= world
        ]

    per_epoch = len(global_batches(seed))
    total = _steps(per_epoch, cfg.epochs, cfg.max_steps)
    optimizer, scheduler = _optimizer(
        model, cfg.lr, cfg.warmup_ratio, total, getattr(cfg, "head_lr", None)
    )
    step, losses = 0, []
    for epoch in range(cfg.epochs):
        for batch in global_batches(seed + epoch):
            share = rank_share(batch, rank, world)
            loss = batch_loss([examples[i] for i in share])
            loss.backward()
            if world > 1:
                average_gradients(model, world)
                loss = all_reduce_mean(loss, dist_ctx)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step(), scheduler.step(), optimizer.zero_grad()
            step += 1
            losses.append(loss.item())
            if step % 20 == 0 or step == total:
                log(f"{name} step {step}/{total} loss {loss.item():.4f}")
            if step >= total:
                return losses
    return losses


def gathered_info_nce_loss(
    query_emb: torch.Tensor, doc_emb: torch.Tensor, world_size: int, scale: float = MNRL_SCALE
) -> torch.Tensor:
    """InfoNCE of this rank's queries against every rank's documents (in-batch negatives across
    processes), the embeddings gathered with their gradients.

    query_emb (b, dim), doc_emb (b * (1 + n_neg), dim): this rank's share, columns [positives,
    negatives 1, ...]. The gathered documents are put back in the single-process order (each
    column over all ranks in turn), so row ``rank * b + i`` is the positive of local query i. With
    gradients averaged over ranks, the step equals one process's step on the whole global batch:
    each rank's loss is the mean over its b queries, and all_gather's backward sums the other
    ranks' gradients into this rank's embeddings.
    """
    from torch.distributed.nn.functional import all_gather

    b = len(query_emb)
    n_columns = len(doc_emb) // b
    docs_by_rank = all_gather(doc_emb.contiguous())  # world_size x (b * n_columns, dim)
    docs = torch.cat([docs_by_rank[r][j * b : (j + 1) * b] for j in range(n_columns)
                      for r in range(world_size)])  # fmt: skip
    query_emb = torch.nn.functional.normalize(query_emb, dim=-1)
    docs = torch.nn.functional.normalize(docs, dim=-1)
    scores = scale * query_emb @ docs.T  # (b, world_size * b * n_columns)
    rank = torch.distributed.get_rank()
    labels = torch.arange(b, device=scores.device) + rank * b
    return torch.nn.functional.cross_entropy(scores, labels)


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
    """Fine-tune a SentenceTransformer with in-batch + hard negatives; returns the saved model dir.

    Under torchrun pass ``dist_ctx`` (``nlprec.core.distributed.init_distributed()``): in-batch
    negatives then span every rank's share of the global batch, and rank 0 alone saves."""
    from nlprec.ranking.encoder import load_encoder

    if not examples:
        raise ValueError(
            "no training examples (does the split have judged queries with relevant documents?)"
        )
    distributed = dist_ctx is not None and dist_ctx.is_distributed
    if distributed and cfg.loss == "cached_mnrl":
        raise ValueError("loss 'cached_mnrl' runs in one process only; use 'mnrl' under torchrun")
    torch.manual_seed(seed)
    model = load_encoder(model_name_or_dir, device=device, max_seq_length=cfg.max_seq_length)
    model.train()
    cached = None
    if cfg.loss == "cached_mnrl":
        from sentence_transformers.sentence_transformer.losses import (
            CachedMultipleNegativesRankingLoss,
        )

        cached = CachedMultipleNegativesRankingLoss(
            model, scale=MNRL_SCALE, mini_batch_size=cfg.mini_batch_size
        )
    n_neg = len(examples[0].negatives)
    tokenize = (
        getattr(model, "preprocess", None) or model.tokenize
    )  # renamed in sentence-transformers 6

    def features(texts: list[str]) -> dict[str, torch.Tensor]:
        batch = tokenize(texts)
        return {
            k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
        }

    def batch_loss(chosen: list[TrainingExample]) -> torch.Tensor:
        columns = [[e.query for e in chosen], [e.positive for e in chosen]]
        columns += [[e.negatives[j] for e in chosen] for j in range(n_neg)]
        with _autocast(device):
            if cached is not None:
                return cached([features(c) for c in columns], None)
            query_emb = model(features(columns[0]))["sentence_embedding"]  # (B, dim)
            docs = [t for c in columns[1:] for t in c]  # positives, then each negative column
            doc_emb = model(features(docs))["sentence_embedding"]  # (B * (1 + n_neg), dim)
            if distributed:
                return gathered_info_nce_loss(query_emb, doc_emb, dist_ctx.world_size)
            return info_nce_loss(query_emb, doc_emb)

    _run_training(model, examples, cfg, seed, batch_loss, log, "bi-encoder", dist_ctx)
    model.eval()
    model_dir = Path(output_dir) / "model"
    _save_on_main(lambda: model.save_pretrained(str(model_dir)), dist_ctx)
    return model_dir


def _save_on_main(save, dist_ctx) -> None:
    """Rank 0 (or the only process) saves; every rank waits until it has."""
    from nlprec.core.distributed import barrier

    if dist_ctx is None or dist_ctx.is_main:
        save()
    if dist_ctx is not None:
        barrier(dist_ctx)


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
    """Fine-tune a 1-logit sequence classifier (monoBERT) from an encoder checkpoint; returns its dir.

    The saved folder is a plain transformers checkpoint that ``sentence_transformers.CrossEncoder``
    loads for inference. Under torchrun (``dist_ctx``) each rank scores its share of the global
    batch (each example's list is self-contained, so nothing is gathered) and rank 0 saves.
    """
    from nlprec.ranking.encoder import resolve_model_dir
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not examples:
        raise ValueError("no training examples for the cross-encoder")
    distill = cfg.distill_weight > 0
    if distill and cfg.loss != "listwise":
        raise ValueError("distill_weight needs loss='listwise' (soft targets over each list)")
    if distill and any(e.teacher_scores is None for e in examples):
        raise ValueError(
            "distill_weight > 0 needs teacher_scores on every example "
            "(mine_hard_negatives(..., with_teacher_scores=True))"
        )
    torch.manual_seed(seed)
    source = resolve_model_dir(model_name_or_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    model = AutoModelForSequenceClassification.from_pretrained(
        str(source), num_labels=1, dtype=torch.float32
    )
    model = model.to(device)
    model.train()
    n_neg = len(examples[0].negatives)

    def batch_loss(chosen: list[TrainingExample]) -> torch.Tensor:
        # pairs grouped per example: positive first, then its negatives -> (B * (1 + n_neg),)
        queries = [e.query for e in chosen for _ in range(1 + n_neg)]
        docs = [d for e in chosen for d in [e.positive, *e.negatives]]
        encoded = tokenizer(queries, docs, padding=True, truncation="only_second", max_length=cfg.max_length,
                            return_tensors="pt").to(device)  # fmt: skip
        with _autocast(device):
            logits = model(**encoded).logits.view(len(chosen), 1 + n_neg).float()  # (B, 1 + n_neg)
        if cfg.loss == "listwise":
            teacher = torch.tensor([e.teacher_scores for e in chosen]) if distill else None
            targets = listwise_targets(
                1 + n_neg, teacher, cfg.distill_weight, cfg.teacher_temperature
            )
            targets = targets.expand(len(chosen), -1).to(device)  # (B, 1 + n_neg)
            return torch.nn.functional.cross_entropy(logits, targets)
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)

    _run_training(model, examples, cfg, seed, batch_loss, log, "cross-encoder", dist_ctx)
    model_dir = Path(output_dir) / "model"

    def save() -> None:
        model.save_pretrained(str(model_dir))
        tokenizer.save_pretrained(str(model_dir))

    _save_on_main(save, dist_ctx)
    return model_dir

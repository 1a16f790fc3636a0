"""Fine-tuning the bi-encoder and the cross-encoder on a dataset's training qrels.

Hard negatives come from a first-stage run (BM25, dense or their fusion): the top-ranked
documents that are not judged relevant. Both trainers are the sentence-transformers ones.

Bi-encoder, MultipleNegativesRankingLoss (InfoNCE over in-batch and hard negatives):
    L = -log( exp(s * cos(q, d+)) / sum_{d in batch positives + negatives} exp(s * cos(q, d)) )
with a batch sampler that keeps duplicate texts out of a batch (a duplicate would be a false
negative). The cached variant (GradCache) allows large batches at constant memory.

Cross-encoder: binary cross-entropy on (query, document, label), or the listwise
MultipleNegativesRankingLoss over (query, positive, negative_1..n).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from nlprec.ranking.data import Qrels, Run, document_text
from pydantic import BaseModel, Field


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

    Negatives are the highest-ranked unjudged-relevant documents of ``run`` after skipping the
    first ``skip_top`` (which are often unlabelled positives). With ``sample_from`` set, they are
    drawn at random from that many top candidates instead of taken in order.
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
                continue  # a fixed column count is needed by the losses
            examples.append(
                TrainingExample(
                    query=queries[qid],
                    positive=document_text(documents[doc_id]),
                    negatives=[document_text(documents[d]) for d in negatives],
                )
            )
    return examples


def _columns(examples: list[TrainingExample]) -> dict[str, list[str]]:
    n = len(examples[0].negatives) if examples else 0
    columns = {"anchor": [e.query for e in examples], "positive": [e.positive for e in examples]}
    for i in range(n):
        columns[f"negative_{i + 1}"] = [e.negatives[i] for e in examples]
    return columns


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
    batch_size: int = Field(32, ge=2)
    lr: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    loss: Literal["bce", "listwise"] = "bce"
    max_length: int = Field(256, ge=16)
    max_steps: int = Field(-1)


def _common_args(cfg, output_dir: Path, device: str, seed: int) -> dict:
    on_gpu = device.startswith("cuda")
    return {
        "output_dir": str(output_dir / "trainer"),
        "num_train_epochs": cfg.epochs,
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.batch_size,
        "learning_rate": cfg.lr,
        "warmup_ratio": cfg.warmup_ratio,
        "save_strategy": "no",
        "report_to": "none",  # steps never talk to MLflow; the runner logs what they return
        "logging_steps": 50,
        "seed": seed,
        "bf16": on_gpu,
        "use_cpu": not on_gpu,
        "dataloader_drop_last": True,
    }


def train_biencoder(
    model_name_or_dir: str,
    examples: list[TrainingExample],
    cfg: BiEncoderTrainConfig,
    output_dir: str | Path,
    device: str = "cpu",
    seed: int = 0,
) -> Path:
    """Fine-tune a SentenceTransformer with (cached) MNRL; returns the saved model directory."""
    from datasets import Dataset
    from nlprec.ranking.encoder import load_encoder
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer import losses

    if not examples:
        raise ValueError(
            "no training examples (does the split have judged queries with relevant documents?)"
        )
    output_dir = Path(output_dir)
    model = load_encoder(model_name_or_dir, device=device, max_seq_length=cfg.max_seq_length)
    if cfg.loss == "cached_mnrl":
        loss = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=cfg.mini_batch_size)
    else:
        loss = losses.MultipleNegativesRankingLoss(model)
    args = SentenceTransformerTrainingArguments(
        **_common_args(cfg, output_dir, device, seed), batch_sampler=BatchSamplers.NO_DUPLICATES
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=Dataset.from_dict(_columns(examples)), loss=loss
    )
    trainer.train()
    model_dir = output_dir / "model"
    model.save_pretrained(str(model_dir))
    return model_dir


def train_cross_encoder(
    model_name_or_dir: str,
    examples: list[TrainingExample],
    cfg: CrossEncoderTrainConfig,
    output_dir: str | Path,
    device: str = "cpu",
    seed: int = 0,
) -> Path:
    """Fine-tune a 1-logit CrossEncoder from an encoder checkpoint; returns the saved model directory."""
    from datasets import Dataset
    from nlprec.ranking.rerank import load_cross_encoder
    from sentence_transformers import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.cross_encoder import losses

    if not examples:
        raise ValueError("no training examples for the cross-encoder")
    output_dir = Path(output_dir)
    model = load_cross_encoder(model_name_or_dir, cfg.max_length, device)
    extra = {}
    if cfg.loss == "bce":
        rows = [(e.query, e.positive, 1.0) for e in examples]
        rows += [(e.query, n, 0.0) for e in examples for n in e.negatives]
        random.Random(seed).shuffle(rows)
        dataset = Dataset.from_dict(
            {
                "query": [r[0] for r in rows],
                "passage": [r[1] for r in rows],
                "label": [r[2] for r in rows],
            }
        )
        loss = losses.BinaryCrossEntropyLoss(model)
    else:
        dataset = Dataset.from_dict(_columns(examples))
        loss = losses.MultipleNegativesRankingLoss(model, num_negatives=4)
        extra["batch_sampler"] = BatchSamplers.NO_DUPLICATES
    args = CrossEncoderTrainingArguments(**_common_args(cfg, output_dir, device, seed), **extra)
    CrossEncoderTrainer(model=model, args=args, train_dataset=dataset, loss=loss).train()
    model_dir = output_dir / "model"
    model.save_pretrained(str(model_dir))
    return model_dir

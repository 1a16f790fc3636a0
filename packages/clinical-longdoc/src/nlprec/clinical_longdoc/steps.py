"""Pipeline steps (see pipelines/longdoc-*.yaml).

Data steps load a task's splits (generated, the shared clinical data, or the user's own in any
format `nlprec.core.datasets_io` reads) and return them as `TaskSplits` (the test part under
``test``). Model steps take them as ``data: ${steps.<data step>}``, fine-tune one variant (``long``
or a short baseline) with the run's seed, keep the epoch with the best dev score, log
``<variant>.<metric>`` on ``ctx.split`` (dev in a search trial, test otherwise) with per-example
unit scores for `nlprec.core.study:compare`, and return `FineTuned`.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Literal

import torch
from nlprec.clinical_longdoc import data as datasets
from nlprec.clinical_longdoc.classify import DocumentClassifierModel
from nlprec.clinical_longdoc.qa import QAModel
from nlprec.clinical_longdoc.tagging import TokenTaggerModel
from nlprec.clinical_longdoc.training import TrainSettings
from nlprec.clinical_longdoc.variants import build_encoder, get_variant
from nlprec.core.distributed import DistributedContext
from nlprec.core.launch import run_distributed
from nlprec.core.stats import seed_statistics
from nlprec.core.step import StepContext, StepOutput, across_seeds
from pydantic import BaseModel, Field

logger = logging.getLogger(__name__)
GENERATED = "generated"


def _data_path(ref: str) -> Path:
    from nlprec.core.data import dataset_path

    return dataset_path(ref)


def _dump(obj, path: Path) -> str:
    path.write_text(json.dumps(obj))
    return str(path)


def _tokenizer(source: str):
    from nlprec.core.models import resolve
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resolve(source)))


def _log_seed_summary(
    ctx: StepContext, variant: str, per_seed: list[dict], keys: list[str]
) -> dict:
    """Mean of each metric over the step's own seeds (one, unless ``seeds`` is set in-step; the
    pipeline's ``seeds:`` give the spread across runs); NaN (an empty subset) is left out."""
    summary = {}
    for key in keys:
        values = [s[key] for s in per_seed if s.get(key, float("nan")) == s.get(key)]
        if values:
            stats = seed_statistics(values)  # sample std
            summary[key] = stats["mean"]
            if "std" in stats:
                summary[f"{key}_std"] = stats["std"]
    ctx.log_metrics({f"{variant}.{k}": v for k, v in summary.items()})
    return summary


# ------------------------------------------------------------------ data steps


class ClassificationDataConfig(BaseModel):
    model_config = {"extra": "forbid"}
    data: str = Field(
        GENERATED,
        description="'generated'; an MTSamples folder (split.json) or a data root holding "
        "clinical/mtsamples; or the user's JSONL text/label files or datasets folder",
    )
    n_train: int | None = Field(None, ge=4, description="cap on training documents (None: all)")
    n_dev: int | None = Field(None, ge=2)
    n_test: int | None = Field(None, ge=2)


def _document_splits(
    cfg: ClassificationDataConfig, seed: int, ctx: StepContext
) -> tuple[dict, str]:
    if cfg.data == GENERATED:
        return datasets.generated_splits(cfg.n_train or 64, cfg.n_test or 32, seed=seed), GENERATED
    root = _data_path(cfg.data)
    for folder in (root, root / datasets.MTSAMPLES_DIR):
        if (folder / "split.json").exists():
            ctx.log_input(name="mtsamples", source=folder / "split.json", context="train")
            return datasets.load_mtsamples(folder), "MTSamples split.json"
    ctx.log_input(name=root.name, source=root, context="train")
    return datasets.load_text_classification(root, seed)


class TaskSplits(StepOutput):
    """A data step's splits as json files, their sizes, and the training labels (class names, or
    NER tags); ``test`` is None in a search trial."""

    train: Path
    dev: Path
    test: Path | None = None
    rows: dict[str, int]
    labels: list[str] = []


@across_seeds
def load_documents(ctx: StepContext, cfg: ClassificationDataConfig) -> TaskSplits:
    """Generated notes, MTSamples (split.json protocol) or the user's text/label data; writes
    train/dev/test json (the test part under ``test``)."""
    splits, how = _document_splits(cfg, ctx.seed, ctx)
    caps = {"train": cfg.n_train, "dev": cfg.n_dev, "test": cfg.n_test}
    if cfg.data != GENERATED:
        splits = {name: docs.take(caps[name]) for name, docs in splits.items()}
    out = {
        name: _dump(
            {"texts": docs.texts, "labels": docs.labels, "ids": docs.ids},
            ctx.output_dir / f"{name}.json",
        )
        for name, docs in splits.items()
    }
    rows = {name: len(docs) for name, docs in splits.items()}
    ctx.log_params({**{f"rows_{name}": n for name, n in rows.items()}, "splits": how})
    return TaskSplits(**out, rows=rows, labels=sorted(set(splits["train"].labels)))


class QADataConfig(BaseModel):
    model_config = {"extra": "forbid"}
    data: str = Field(
        description="a SQuAD json file (split by article 70/10/20), a folder of "
        "train/dev/test json, or a datasets folder"
    )
    n_train: int | None = Field(None, ge=1)
    n_dev: int | None = Field(None, ge=1)
    n_test: int | None = Field(None, ge=1)


@across_seeds
def load_qa(ctx: StepContext, cfg: QADataConfig) -> TaskSplits:
    """Extractive QA splits (COVID-QA or the user's SQuAD data); writes train/dev/test json."""
    path = _data_path(cfg.data)
    splits, how = datasets.load_qa(path, seed=0)
    ctx.log_input(name=path.stem, source=path, context="train")
    caps = {"train": cfg.n_train, "dev": cfg.n_dev, "test": cfg.n_test}
    return _write_splits(ctx, splits, caps, how)


class NERDataConfig(BaseModel):
    model_config = {"extra": "forbid"}
    data: str = Field(
        description="an IOB2 folder (train/dev/test .tsv, devel.tsv accepted) or a datasets folder"
    )
    n_train: int | None = Field(None, ge=1)
    n_dev: int | None = Field(None, ge=1)
    n_test: int | None = Field(None, ge=1)


@across_seeds
def load_ner(ctx: StepContext, cfg: NERDataConfig) -> TaskSplits:
    """IOB2 sentences (NCBI-disease or the user's folder); writes train/dev/test json and the tags."""
    path = _data_path(cfg.data)
    splits, how = datasets.load_ner(path, seed=0)
    ctx.log_input(name=path.name, source=path, context="train")
    caps = {"train": cfg.n_train, "dev": cfg.n_dev, "test": cfg.n_test}
    return _write_splits(ctx, splits, caps, how, sorted({t for s in splits["train"] for t in s.tags}))


def _write_splits(
    ctx: StepContext, splits: dict, caps: dict, how: str, labels: list[str] | None = None
) -> TaskSplits:
    if how != "the folder's own splits":
        logger.warning("%s: %s", ctx.name, how)
    out, rows = {}, {}
    for name, items in splits.items():
        items = items[: caps[name]] if caps[name] else items
        out[name] = _dump([item.__dict__ for item in items], ctx.output_dir / f"{name}.json")
        rows[name] = len(items)
    ctx.log_params({**{f"rows_{name}": n for name, n in rows.items()}, "splits": how})
    return TaskSplits(**out, rows=rows, labels=labels or [])


# ------------------------------------------------------------------ model steps


class FineTuneConfig(BaseModel):
    model_config = {"extra": "forbid"}
    data: TaskSplits = Field(description="the upstream data step: ${steps.<data step>}")
    variant: str = Field(
        "long",
        description="long | long_full | long_local | long_longformer | long_bigbird | head | head_tail | chunk_mean | chunk_max",
    )
    source: str = Field(
        "minilm",
        description="encoder to longify / fine-tune: a name, a directory, or an upstream model "
        "(${steps.<continue_long_mlm step>.model_dir})",
    )
    max_length: int = Field(
        4096, ge=64, description="long variants: positions; short ones ignore it"
    )
    short_length: int = Field(
        512, ge=16, description="window of the short baselines (<= the source's 512)"
    )
    attention_window: int = Field(512, ge=2)
    block_size: int = Field(64, ge=8)
    epochs: int = Field(3, ge=0, description="0 with linear_probe: the frozen-encoder probe alone")
    lr: float = Field(5e-5, gt=0)
    head_lr: float = Field(1e-3, gt=0)
    max_tokens: int = Field(8192, ge=64)
    max_batch: int = Field(16, ge=1)
    seeds: list[int] | None = Field(
        None, description="None: the run's seed (the pipeline's `seeds:` repeat the step)"
    )
    gradient_checkpointing: bool = False
    time_budget_s: float | None = None
    pooling: Literal["cls", "mean"] = Field(
        "cls", description="classification: [CLS] or mean of token states"
    )
    linear_probe: bool = Field(
        False, description="classification: fit the head on frozen features first (LP-FT)"
    )
    save_model: bool = True
    register_as: str | None = Field(
        None, description="register the saved model under this name (@champion)"
    )
    metric_name: str | None = Field(
        None, description="prefix of the logged metrics (default: the variant)"
    )
    dropout: float = Field(0.1, ge=0, lt=1, description="classification / NER head dropout")
    negative_keep: float = Field(
        0.1, ge=0, le=1, description="QA: share of answer-less training windows kept"
    )
    # > 1: train under `torchrun --nproc-per-node N` with DDP (gloo on CPU, NCCL on GPUs);
    # rank 0 alone evaluates and writes (fine_tune_worker)
    nproc_per_node: int = Field(1, ge=1)
    threads: int = Field(1, ge=1, description="torch threads per process under torchrun")

    @property
    def prefix(self) -> str:
        return self.metric_name or self.variant


def _settings(
    cfg: FineTuneConfig,
    device: str,
    seed: int,
    dist_ctx: DistributedContext | None = None,
    time_left: float | None = None,
    work_dir: Path | None = None,
    log_metrics=None,
) -> TrainSettings:
    budgets = [b for b in (cfg.time_budget_s, time_left) if b is not None]
    return TrainSettings(
        epochs=cfg.epochs,
        lr=cfg.lr,
        head_lr=cfg.head_lr,
        max_tokens=cfg.max_tokens,
        max_batch=cfg.max_batch,
        gradient_checkpointing=cfg.gradient_checkpointing,
        device=device,
        seed=seed,
        time_budget_s=min(budgets) if budgets else None,
        progress=dist_ctx is None or dist_ctx.is_main,
        dist_ctx=dist_ctx,
        work_dir=None if work_dir is None else str(work_dir),
        log_metrics=log_metrics,
    )


def _encoder(cfg: FineTuneConfig):
    variant = get_variant(cfg.variant)
    encoder = build_encoder(
        variant,
        cfg.source,
        max_length=cfg.max_length,
        attention_window=cfg.attention_window,
        block_size=cfg.block_size,
    )
    length = cfg.max_length if variant.attention else min(cfg.short_length, encoder.max_length)
    return variant, encoder, length


def _cuda_peak_reset(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _cuda_peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


# Per task: the upstream splits as objects, and one seed's training (the model and its test scores).


def load_task_splits(task: str, data: TaskSplits) -> dict:
    """train/dev(/test) objects from the json files a data step wrote (a search trial's data has
    no test part)."""
    files = {"train": data.train, "dev": data.dev, "test": data.test}
    rows = {n: json.loads(Path(path).read_text()) for n, path in files.items() if path is not None}
    if task == "classify":
        return {n: datasets.DocumentSet(r["texts"], r["labels"], r["ids"]) for n, r in rows.items()}
    if task == "qa":
        return {n: [datasets.QAExample(**e) for e in r] for n, r in rows.items()}
    if task == "ner":
        return {n: [datasets.TaggedSentence(**e) for e in r] for n, r in rows.items()}
    raise ValueError(f"unknown task {task!r}; choose from {TASKS}")


def train_one_seed(
    task: str,
    cfg: FineTuneConfig,
    splits: dict,
    settings: TrainSettings,
    evaluate_on: str = "test",
):
    """Fine-tune ``cfg.variant`` for ``task`` with ``settings`` (its seed, device, DDP context),
    keeping the epoch with the best dev score.

    Returns the model and its scores on ``evaluate_on`` ("dev" in a search trial); under DDP only
    rank 0 scores ({} elsewhere).
    """
    tokenizer = _tokenizer(cfg.source)
    variant, encoder, length = _encoder(cfg)
    if task == "classify":
        model = DocumentClassifierModel(
            encoder,
            tokenizer,
            cfg.data.labels,
            variant.strategy,
            length,
            dropout=cfg.dropout,
            pooling=cfg.pooling,
        )
        history = model.fit(splits["train"], splits["dev"], settings, cfg.linear_probe)
    elif task == "qa":
        model = QAModel(encoder, tokenizer, max_length=length, stride=max(length // 4, 32))
        history = model.fit(splits["train"], splits["dev"], settings, cfg.negative_keep)
    else:
        model = TokenTaggerModel(
            encoder, tokenizer, cfg.data.labels, max_length=length, dropout=cfg.dropout
        )
        history = model.fit(splits["train"], splits["dev"], settings)
    main = settings.dist_ctx is None or settings.dist_ctx.is_main
    scores = model.evaluate(splits[evaluate_on], settings) if main else {}
    scores["best_epoch"] = history["best_epoch"]
    scores["losses"] = history["loss"]
    return model, scores


TASKS = ("classify", "qa", "ner")
SUMMARY_KEYS = {
    "classify": ["macro_f1", "micro_f1", "long_notes_macro_f1", "long_notes_micro_f1"],
    "qa": ["em", "f1", "lt512_f1", "512to4096_f1", "gt4096_f1", "lt512_em", "512to4096_em"]
    + ["gt4096_em"],
    "ner": ["f1", "precision", "recall"],
}


def _evaluation_split(ctx: StepContext) -> str:
    """Search trials score the dev split; every other run the test split."""
    return "dev" if ctx.split == "validation" else "test"


def _run_seeds(ctx: StepContext, cfg: FineTuneConfig, task: str) -> tuple[list[dict], object]:
    """Train one model per seed; returns per-seed scores (with seconds, peak memory) and the last model."""
    splits = load_task_splits(task, cfg.data)
    per_seed, model = [], None
    for seed in ctx.progress(cfg.seeds or [ctx.seed], desc=f"{cfg.variant} seeds"):
        torch.manual_seed(seed)
        _cuda_peak_reset(ctx.device)
        started = time.perf_counter()
        settings = _settings(cfg, ctx.device, seed, time_left=ctx.time_left(),
                             work_dir=ctx.output_dir, log_metrics=_curves(ctx, cfg, seed))  # fmt: skip
        model, scores = train_one_seed(task, cfg, splits, settings, _evaluation_split(ctx))
        scores["train_seconds"] = time.perf_counter() - started
        scores["peak_gib"] = _cuda_peak_gib(ctx.device)
        per_seed.append(scores)
        logger.info("%s seed %d: %s", cfg.variant, seed, scores)
    return per_seed, model


def _curves(ctx: StepContext, cfg: FineTuneConfig, seed: int):
    """ctx.log_metrics for the training curves, as ``<prefix>.seed<seed>.<loss|eval_f1|...>``."""

    def log(metrics: dict, step: int | None = None) -> None:
        ctx.log_metrics({f"{cfg.prefix}.seed{seed}.{k}": v for k, v in metrics.items()}, step=step)

    return log


def _run_seeds_torchrun(ctx: StepContext, cfg: FineTuneConfig, task: str) -> list[dict]:
    """The same seeds in ``cfg.nproc_per_node`` processes (:func:`fine_tune_worker`); rank 0
    writes the model (into this step's output folder)."""
    fine_tune = cfg.model_copy(update={"seeds": cfg.seeds or [ctx.seed]}).model_dump(mode="json")
    settings = {"task": task, "fine_tune": fine_tune, "evaluate_on": _evaluation_split(ctx)}
    result = run_distributed("nlprec.clinical_longdoc.steps:fine_tune_worker", settings, {},
                             ctx.output_dir / "torchrun", cfg.nproc_per_node, threads=cfg.threads)  # fmt: skip
    return result["per_seed"]


def fine_tune_worker(dist_ctx: DistributedContext, config: dict, inputs: dict, out: Path) -> dict:
    """One torchrun rank of a fine-tune step (``nlprec.core.launch``): every rank builds the same
    global batches and trains on its share (``max_tokens`` / ``max_batch`` bound the global batch);
    rank 0 scores each seed and, with ``save_model``, writes the last seed's model to ``out/model``.
    The data comes in the config (``fine_tune.data``); ``inputs`` is unused."""
    task, cfg = config["task"], FineTuneConfig.model_validate(config["fine_tune"])
    splits = load_task_splits(task, cfg.data)
    per_seed, model = [], None
    for seed in cfg.seeds:
        torch.manual_seed(seed)
        started = time.perf_counter()
        settings = _settings(cfg, dist_ctx.device, seed, dist_ctx, work_dir=out)
        model, scores = train_one_seed(task, cfg, splits, settings, config.get("evaluate_on", "test"))
        per_seed.append({**scores, "seed": seed, "train_seconds": time.perf_counter() - started})
    if cfg.save_model and model is not None and dist_ctx.is_main:
        model.save(out / "model")
    return {"per_seed": per_seed}


class FineTuned(StepOutput):
    """A fine-tuned variant: its result file (per-seed scores, summary), the metric prefix, and
    the saved model (``save_model``) and its registered URI (``register_as``)."""

    result: Path
    variant: str
    model_dir: Path | None = None
    model_uri: str | None = None


def _fine_tune(ctx: StepContext, cfg: FineTuneConfig, task: str) -> FineTuned:
    if cfg.nproc_per_node > 1:
        per_seed = _run_seeds_torchrun(ctx, cfg, task)
        model_dir = ctx.output_dir / "torchrun" / "model"
        model = None
    else:
        per_seed, model = _run_seeds(ctx, cfg, task)
        model_dir = None
    _log_unit_scores(ctx, cfg.prefix, per_seed)
    summary = _log_seed_summary(ctx, cfg.prefix, per_seed, SUMMARY_KEYS[task] + ["train_seconds"])
    return _write_result(ctx, cfg, per_seed, summary, model, model_dir)


def _log_unit_scores(ctx: StepContext, system: str, per_seed: list[dict]) -> None:
    """Per-example scores for the paired tests of the compare step (averaged over in-step seeds)."""
    for metric in per_seed[0].get("units", {}):
        runs = [s["units"][metric] for s in per_seed]
        if runs[0]:
            ctx.log_unit_scores(
                system, metric, {u: statistics.fmean(r[u] for r in runs) for u in runs[0]}
            )
    for scores in per_seed:
        scores.pop("units", None)


def _write_result(
    ctx: StepContext, cfg: FineTuneConfig, per_seed: list[dict], summary: dict, model, model_dir
) -> FineTuned:
    result = {
        "variant": cfg.prefix,
        "per_seed": per_seed,
        "summary": summary,
        "device": ctx.device,
        "nproc_per_node": cfg.nproc_per_node,
    }
    path = ctx.output_dir / "result.json"
    path.write_text(json.dumps(result, indent=2))
    ctx.log_dict(result, "result.json")
    if cfg.save_model and model is not None:
        model.save(ctx.output_dir / "model")
        model_dir = ctx.output_dir / "model"
    if not (cfg.save_model and model_dir is not None and Path(model_dir).exists()):
        return FineTuned(result=path, variant=cfg.prefix)
    uri = ctx.log_model(model_dir, name=cfg.register_as, flavor="dir") if cfg.register_as else None
    return FineTuned(result=path, variant=cfg.prefix, model_dir=model_dir, model_uri=uri)


def fine_tune_classifier(ctx: StepContext, cfg: FineTuneConfig) -> FineTuned:
    """Fine-tune one variant on the upstream documents; logs macro/micro-F1 (all, and notes > 512)."""
    return _fine_tune(ctx, cfg, "classify")


def fine_tune_qa(ctx: StepContext, cfg: FineTuneConfig) -> FineTuned:
    """Fine-tune extractive QA (sliding windows of the variant's length); logs EM/F1 by answer position."""
    return _fine_tune(ctx, cfg, "qa")


def fine_tune_tagger(ctx: StepContext, cfg: FineTuneConfig) -> FineTuned:
    """Fine-tune NER (first-subword labels); logs strict IOB2 entity F1."""
    return _fine_tune(ctx, cfg, "ner")


# ------------------------------------------------------------------ continued long MLM


class LongMLMConfig(BaseModel):
    model_config = {"extra": "forbid"}
    data: str = Field(
        description="a data root holding clinical/ (the corpus of mlm.build_clinical_corpus)"
    )
    source: str = "minilm"
    max_length: int = Field(4096, ge=64)
    attention: Literal["full", "local"] = "full"
    steps: int = Field(200, ge=1)
    batch_size: int = Field(2, ge=1)
    lr: float = Field(3e-5, gt=0)
    max_texts: int | None = Field(None, ge=1, description="cap on corpus texts (tiny runs)")


class LongEncoderOutput(StepOutput):
    """A longified encoder after continued MLM (a fine-tune step's ``source``)."""

    model_dir: Path


def continue_long_mlm(ctx: StepContext, cfg: LongMLMConfig) -> LongEncoderOutput:
    """Longify ``source`` and continue MLM pretraining at ``max_length`` on clinical text with no
    evaluation text in it (Li et al.'s recipe); a fine-tune step takes it as ``source: <this step>``."""
    from nlprec.clinical_longdoc.longify import longify
    from nlprec.clinical_longdoc.mlm import build_clinical_corpus, continue_mlm

    root = _data_path(cfg.data)
    texts = [t for source in build_clinical_corpus(root).values() for t in source][: cfg.max_texts]
    ctx.log_input(name="clinical-mlm-corpus", source=root / "clinical", context="pretraining")
    encoder = longify(cfg.source, max_length=cfg.max_length, attention=cfg.attention)
    tokenizer = _tokenizer(cfg.source)
    stats = continue_mlm(
        encoder, tokenizer, texts, cfg.max_length, cfg.steps, cfg.batch_size, cfg.lr,
        device=ctx.device, seed=ctx.seed, time_budget_s=ctx.time_left(),
    )  # fmt: skip
    out = ctx.output_dir / "encoder"
    encoder.save_pretrained(out)
    tokenizer.save_pretrained(out)
    keys = ("steps", "n_blocks", "first_loss", "last_loss", "seconds")
    ctx.log_metrics({f"{ctx.name}.{k}": float(stats[k]) for k in keys})
    return LongEncoderOutput(model_dir=out)

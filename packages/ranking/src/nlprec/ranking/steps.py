"""Pipeline steps: data -> first stages -> fusion -> fine-tuning -> reranking -> engine -> report.

Query sets: ``train`` (fine-tuning, hard negatives), ``validation`` (carved from the dataset's
train queries and held out of every training: fusion weights, passage aggregation, rerank depth
and alpha are chosen on it) and ``test`` (the dataset's evaluation split, returned by the data
step under its ``test`` key, so search trials never see it). Every retrieval step writes TREC
runs of each query set, logs ``<system>.<metric>`` and per-query scores on ``ctx.split``
(validation during search trials, test otherwise); the runner records each step's peak resident
memory. Upstream outputs arrive through ``${steps.<step>}`` references in the config
(docs/steps.md); a step whose input is missing raises ``StepSkipped``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Literal

from nlprec.core.data import dataset_path
from nlprec.core.distributed import DistributedContext
from nlprec.core.io import atomic_write_text
from nlprec.core.launch import run_distributed
from nlprec.core.step import StepContext, StepOutput, StepSkipped, across_seeds
from nlprec.ranking import data as beir
from nlprec.ranking.bm25 import BM25Config, BM25Retriever
from nlprec.ranking.data import Run, read_trec_run, write_trec_run
from nlprec.ranking.demo_data import generate_demo_corpus, write_beir_folder
from nlprec.ranking.dense import DenseConfig, DenseRetriever, PassageConfig
from nlprec.ranking.engine import EngineSettings, SearchEngine
from nlprec.ranking.evaluate import (
    compare_systems,
    comparison_figure,
    evaluate_run,
    ndcg10,
    per_query_scores,
)
from nlprec.ranking.faiss_index import FaissConfig
from nlprec.ranking.fusion import fuse, tune_fusion_weights
from nlprec.ranking.passages import Aggregation
from nlprec.ranking.rerank import (
    CrossEncoderReranker,
    RerankerConfig,
    aggregate_run,
    rerank_at_depth,
)
from nlprec.ranking.training import (
    BiEncoderTrainConfig,
    CrossEncoderTrainConfig,
    TrainingExample,
    fine_tune,
    mine_hard_negatives,
)
from pydantic import BaseModel, Field

SUMMARY_METRICS = ["ndcg@10", "mrr@10", "recall@100", "recall@1000", "map"]
AGGREGATIONS: list[Aggregation] = ["firstp", "maxp", "sump"]


# -- data --------------------------------------------------------------------------------------
class LoadBeirConfig(BaseModel):
    model_config = {"extra": "forbid"}
    path: str
    eval_split: str = "test"
    train_split: str = "train"
    validation_fraction: float = Field(
        0.2, ge=0, lt=1, description="train queries held out of training, for every selection"
    )
    split_seed: int = Field(0, description="seed of the validation carve (the same for every run seed)")
    max_eval_queries: int | None = Field(
        None, ge=1, description="subsample evaluation queries (CI)"
    )
    max_train_queries: int | None = Field(None, ge=1, description="subsample training queries")


def _describe(ctx: StepContext, folder: Path, cfg: LoadBeirConfig) -> dict:
    dataset = beir.load_beir(folder)
    if cfg.eval_split not in dataset.qrels:
        raise beir.DataError(
            f"{folder}: no qrels/{cfg.eval_split}.tsv (splits: {sorted(dataset.qrels)})"
        )
    test_q = sorted(dataset.split_queries(cfg.eval_split))
    missing = [q for q in dataset.qrels[cfg.eval_split] if q not in dataset.queries]
    train_q = (
        sorted(dataset.split_queries(cfg.train_split)) if cfg.train_split in dataset.qrels else []
    )
    rng = random.Random(cfg.split_seed)
    if cfg.max_eval_queries and len(test_q) > cfg.max_eval_queries:
        test_q = sorted(rng.sample(test_q, cfg.max_eval_queries))
    if cfg.max_train_queries and len(train_q) > cfg.max_train_queries:
        train_q = sorted(rng.sample(train_q, cfg.max_train_queries))
    shuffled = rng.sample(train_q, len(train_q))
    n_val = int(round(len(train_q) * cfg.validation_fraction))
    val_q, train_q = sorted(shuffled[:n_val]), sorted(shuffled[n_val:])
    notes = []
    if missing:
        notes.append(f"{len(missing)} judged query ids have no query text and are ignored")
    if not train_q:
        notes.append(f"no '{cfg.train_split}' split: fine-tuning skipped")
    if not val_q:
        notes.append("no validation queries: fusion uses equal weights, reranking its defaults")
    for note in notes:
        ctx.logger.warning(note)
    ctx.log_input(name=folder.name, source=folder, context=cfg.eval_split)
    ctx.log_params({"n_docs": len(dataset.corpus), "n_test_queries": len(test_q),
                    "n_train_queries": len(train_q), "n_validation_queries": len(val_q)})  # fmt: skip
    splits = ctx.output_dir / "splits.json"
    splits.write_text(json.dumps({"train": train_q, "validation": val_q}))
    test_splits = ctx.output_dir / "test_queries.json"
    test_splits.write_text(json.dumps(test_q))
    return {
        "data": str(folder),
        "train_split": cfg.train_split if (train_q or val_q) else None,
        "splits": str(splits),
        "n_docs": len(dataset.corpus),
        "notes": notes,
        "test": {"split": cfg.eval_split, "queries": str(test_splits)},
    }


@across_seeds
def load_beir(ctx: StepContext, cfg: LoadBeirConfig) -> dict:
    """Validate a BEIR folder and fix the query sets (the folder itself is read where needed)."""
    return _describe(ctx, dataset_path(cfg.path, must_contain=("queries.jsonl", "qrels")), cfg)


class DemoDataConfig(BaseModel):
    model_config = {"extra": "forbid"}
    n_docs: int = Field(300, ge=10)
    n_queries: int = Field(240, ge=6)
    validation_fraction: float = Field(0.2, ge=0, lt=1)


def generate_demo(ctx: StepContext, cfg: DemoDataConfig) -> dict:
    """The embedded default: a generated BEIR folder with known relevance (train and test splits)."""
    folder = write_beir_folder(
        generate_demo_corpus(cfg.n_docs, cfg.n_queries, ctx.seed), ctx.output_dir / "demo"
    )
    described = LoadBeirConfig(path=str(folder), validation_fraction=cfg.validation_fraction)
    return _describe(ctx, folder, described)


class Corpus:
    """What a step needs of the dataset: documents by id, and the queries and qrels of each query
    set (``test`` only where the data step's ``test`` output is visible)."""

    def __init__(self, described: dict) -> None:
        dataset = beir.load_beir(described["data"])
        splits = json.loads(Path(described["splits"]).read_text())
        self.documents = {d["id"]: d for d in dataset.corpus}
        self.corpus = dataset.corpus
        self.queries = dataset.queries
        self.query_ids = {"train": splits["train"], "validation": splits["validation"]}
        self.qrels = {
            name: {q: dataset.qrels[described["train_split"]][q] for q in ids}
            for name, ids in self.query_ids.items()
        }
        test = described.get("test")
        if test is not None:
            self.query_ids["test"] = json.loads(Path(test["queries"]).read_text())
            self.qrels["test"] = {q: dataset.qrels[test["split"]][q] for q in self.query_ids["test"]}

    def texts(self, split: str) -> list[str]:
        return [self.queries[q] for q in self.query_ids[split]]


def _data_input(ctx: StepContext) -> dict:
    for value in ctx.inputs.values():
        if "splits" in value:
            return value
    raise ValueError(f"step {ctx.name} needs the data step (load_beir or generate_demo) in `needs`")


def _eval_split(ctx: StepContext, corpus: Corpus) -> str:
    """The query set this run reports on: ``ctx.split`` (validation in search trials)."""
    split = "validation" if ctx.split == "validation" else "test"
    if split not in corpus.query_ids:
        raise ValueError(f"step {ctx.name}: no {split} queries (is the data step in `needs`?)")
    return split


def _write_runs(ctx: StepContext, system: str, runs: dict[str, Run]) -> dict[str, str]:
    """TREC files of each query set; the test run goes under ``test_run`` (hidden from trials)."""
    paths = {}
    for split, run in runs.items():
        if run:
            path = ctx.output_dir / "runs" / f"{system}.{split}.trec"
            write_trec_run(run, path, tag=system)
            paths[split] = str(path)
    out = {"runs": {k: v for k, v in paths.items() if k != "test"}}
    if "test" in paths:
        out["test_run"] = paths["test"]
    return out


def _log_system(ctx: StepContext, corpus: Corpus, system: str, runs: dict[str, Run]) -> dict[str, float]:
    """Metrics and per-query nDCG@10 of ``system`` on this run's split; validation nDCG@10 too."""
    split = _eval_split(ctx, corpus)
    qrels, run = corpus.qrels[split], runs[split]
    scores = evaluate_run(qrels, run, SUMMARY_METRICS)
    metrics = {f"{system}.{name}": value for name, value in scores.items()}
    if split == "test" and corpus.qrels["validation"] and runs.get("validation"):
        metrics[f"{system}.val_ndcg@10"] = ndcg10(corpus.qrels["validation"], runs["validation"])
    ctx.log_metrics(metrics)
    ctx.log_unit_scores(system, "ndcg@10", per_query_scores(qrels, run)["ndcg@10"])
    ctx.logger.info("%s (%s): %s", system, split, {k: round(v, 4) for k, v in scores.items()})
    return scores


def _hits_to_run(qids: list[str], hits: list[list[tuple[str, float]]]) -> Run:
    return {q: dict(h) for q, h in zip(qids, hits, strict=True)}


def _search_splits(corpus: Corpus, search, k: int, train_k: int) -> dict[str, Run]:
    """Runs of ``search(texts, k)`` for every query set (the train set at ``train_k``)."""
    return {
        split: _hits_to_run(qids, search(corpus.texts(split), train_k if split == "train" else k))
        for split, qids in corpus.query_ids.items()
        if qids
    }


def _load_runs(step_output: dict) -> dict[str, Run]:
    runs = {split: read_trec_run(path) for split, path in step_output["runs"].items()}
    if "test_run" in step_output:
        runs["test"] = read_trec_run(step_output["test_run"])
    return runs


# -- first stages ------------------------------------------------------------------------------
class BM25StepConfig(BM25Config):
    k: int = Field(1000, ge=1)
    train_k: int = Field(100, ge=1)


def bm25_retrieve(ctx: StepContext, cfg: BM25StepConfig) -> dict:
    corpus = Corpus(_data_input(ctx))
    retriever = BM25Retriever(BM25Config(**cfg.model_dump(exclude={"k", "train_k"}))).index(
        corpus.corpus
    )
    runs = _search_splits(corpus, retriever.search, cfg.k, cfg.train_k)
    _log_system(ctx, corpus, "bm25", runs)
    retriever.save(ctx.output_dir / "index")
    return {"system": "bm25", "index_dir": str(ctx.output_dir / "index"), **_write_runs(ctx, "bm25", runs)}


class DenseStepConfig(BaseModel):
    model_config = {"extra": "forbid"}
    system: str = "dense"
    model: str = "minilm"
    encoder: str | None = Field(
        None, description="a fine-tuned encoder folder (${steps.<finetune>.model_dir}); null: model"
    )
    faiss: FaissConfig = FaissConfig()
    batch_size: int = Field(64, ge=1)
    max_seq_length: int | None = None
    passages: PassageConfig | None = Field(
        None, description="index passages of long documents; the aggregation is chosen on validation"
    )
    aggregations: list[Aggregation] = Field(AGGREGATIONS, min_length=1)
    threads: int | None = None
    backend: Literal["torch", "onnx"] = "torch"
    int8: bool = False
    k: int = Field(1000, ge=1)
    train_k: int = Field(100, ge=1)


def _choose_aggregation(ctx, corpus: Corpus, retriever: DenseRetriever, cfg: DenseStepConfig) -> str | None:
    """With passages, FirstP / MaxP / SumP compared on the validation queries (first listed wins
    ties; without validation queries the configured one stays)."""
    passages = retriever.config.passages
    if passages is None or not corpus.query_ids["validation"]:
        return passages.aggregation if passages else None
    vectors = retriever.encode_queries(corpus.texts("validation"))
    trials = {}
    for how in cfg.aggregations:
        passages.aggregation = how
        run = _hits_to_run(corpus.query_ids["validation"], retriever.search_vectors(vectors, cfg.k))
        trials[how] = ndcg10(corpus.qrels["validation"], run)
    passages.aggregation = max(trials, key=lambda how: trials[how])
    ctx.log_metrics({f"{cfg.system}.val_ndcg@10_{how}": value for how, value in trials.items()})
    return passages.aggregation


def dense_retrieve(ctx: StepContext, cfg: DenseStepConfig) -> dict:
    model = cfg.encoder or cfg.model
    corpus = Corpus(_data_input(ctx))
    dense_cfg = DenseConfig(
        model=model, faiss=cfg.faiss, batch_size=cfg.batch_size, max_seq_length=cfg.max_seq_length,
        passages=cfg.passages, threads=cfg.threads, backend=cfg.backend, int8=cfg.int8,
        device=None if cfg.backend == "onnx" else ctx.device,
    )  # fmt: skip
    retriever = DenseRetriever(dense_cfg).build(corpus.corpus)
    if retriever.truncated:
        ctx.logger.warning("%s: %d indexed texts longer than the encoder's limit were truncated",
                           cfg.system, retriever.truncated)  # fmt: skip
    ctx.log_metrics({f"{cfg.system}.truncated_texts": retriever.truncated})
    aggregation = _choose_aggregation(ctx, corpus, retriever, cfg)
    ctx.log_params({"chosen_aggregation": aggregation or "none (one vector per document)"})
    runs = _search_splits(corpus, retriever.search, cfg.k, cfg.train_k)
    _log_system(ctx, corpus, cfg.system, runs)
    retriever.save(ctx.output_dir / "index")
    return {
        "system": cfg.system,
        "index_dir": str(ctx.output_dir / "index"),
        "model_dir": str(retriever.model_dir),
        "aggregation": aggregation,
        **_write_runs(ctx, cfg.system, runs),
    }


@across_seeds
def dense_pretrained(ctx: StepContext, cfg: DenseStepConfig) -> dict:
    """:func:`dense_retrieve` with an encoder no seed changes (pretrained): runs once, and every
    seed's steps read its index and runs (a fine-tuned encoder goes through ``dense_retrieve``)."""
    return dense_retrieve(ctx, cfg)


# -- fusion ------------------------------------------------------------------------------------
class FuseConfig(BaseModel):
    model_config = {"extra": "forbid"}
    system: str = "hybrid"
    systems: list[dict] = Field(min_length=2, description="first stages: ${steps.<step>} (?? for a fallback)")
    method: Literal["rrf", "linear", "auto"] = "auto"
    grid_step: float = Field(0.05, gt=0, le=0.5)
    k: int = Field(1000, ge=1)


def fuse_runs(ctx: StepContext, cfg: FuseConfig) -> dict:
    """Fuse first stages with weights (and method, for ``auto``) chosen on the validation queries."""
    sources = [out["system"] for out in cfg.systems]
    corpus = Corpus(_data_input(ctx))
    runs = [_load_runs(out) for out in cfg.systems]
    methods = ["rrf", "linear"] if cfg.method == "auto" else [cfg.method]
    if corpus.query_ids["validation"]:
        trials = {m: tune_fusion_weights([r["validation"] for r in runs], corpus.qrels["validation"], m, ndcg10,
                                         cfg.grid_step) for m in methods}  # fmt: skip
        method = max(trials, key=lambda m: trials[m][1])
        weights, tuned_on = trials[method][0], f"{len(corpus.query_ids['validation'])} validation queries"
    else:
        method, weights = methods[0], tuple([1.0 / len(runs)] * len(runs))
        tuned_on = "none (equal weights)"
    fused = {split: fuse([r[split] for r in runs], method, weights, cfg.k) for split in runs[0]}
    ctx.log_params({"fused_systems": sources, "chosen_method": method,
                    "chosen_weights": list(weights), "tuned_on": tuned_on})  # fmt: skip
    _log_system(ctx, corpus, cfg.system, fused)
    return {
        "system": cfg.system,
        "sources": sources,
        "method": method,
        "weights": list(weights),
        "tuned_on": tuned_on,
        **_write_runs(ctx, cfg.system, fused),
    }


# -- fine-tuning -------------------------------------------------------------------------------
class FinetuneBiencoderConfig(BaseModel):
    model_config = {"extra": "forbid"}
    enabled: bool = Field(
        True, description="false: skipped (the dense stages then fall back to the pretrained encoder)"
    )
    model: str = "minilm"
    negatives: dict = Field(description="the first stage whose train run gives hard negatives: ${steps.<step>}")
    n_negatives: int = Field(1, ge=1)
    skip_top: int = Field(0, ge=0)
    train: BiEncoderTrainConfig = BiEncoderTrainConfig()
    nproc_per_node: int = Field(
        1, ge=1, description="> 1: train under torchrun with DDP (train_worker)"
    )


def _train_under_torchrun(
    ctx: StepContext,
    model: str,
    examples: list[TrainingExample],
    which: Literal["biencoder", "cross_encoder"],
    train: BiEncoderTrainConfig | CrossEncoderTrainConfig,
    nproc_per_node: int,
) -> Path:
    """Train in ``nproc_per_node`` processes (:func:`train_worker`); rank 0 writes the model.

    The examples travel as a JSONL file; ``train.batch_size`` stays the global batch, so the
    processes take the steps one process would take.
    """
    examples_file = write_examples(examples, ctx.output_dir / "examples.jsonl")
    out = ctx.output_dir / "ddp"
    settings = {"model": model, "seed": ctx.seed, which: train.model_dump()}
    run_distributed("nlprec.ranking.steps:train_worker", settings,
                    {"examples": str(examples_file)}, out, nproc_per_node)  # fmt: skip
    return out / which / "model"


def train_worker(dist_ctx: DistributedContext, config: dict, inputs: dict, out: Path) -> dict:
    """One torchrun rank of fine-tuning (``nlprec.core.launch``): the bi-encoder (``config
    ["biencoder"]``) and/or the cross-encoder (``config["cross_encoder"]``) from ``config
    ["model"]`` on ``inputs["examples"]``. Every rank draws the same global batches and trains on
    its share; rank 0 writes ``out/biencoder/model`` and ``out/cross_encoder/model``."""
    examples = read_examples(inputs["examples"])
    log = print if dist_ctx.is_main else (lambda _: None)
    for which, config_cls in (("biencoder", BiEncoderTrainConfig), ("cross_encoder", CrossEncoderTrainConfig)):
        if which in config:
            fine_tune(config["model"], examples, config_cls(**config[which]), out / which,
                      dist_ctx.device, config.get("seed", 0), log, dist_ctx)  # fmt: skip
    return {"n_examples": len(examples)}


def write_examples(examples: list[TrainingExample], path: str | Path) -> Path:
    """One TrainingExample per line (what :func:`train_worker` reads)."""
    lines = "".join(e.model_dump_json() + "\n" for e in examples)
    return atomic_write_text(path, lines)


def read_examples(path: str | Path) -> list[TrainingExample]:
    examples = []
    with Path(path).open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    examples.append(TrainingExample.model_validate_json(line))
                except ValueError as err:
                    raise ValueError(f"{path}:{line_no}: not a training example ({err})") from err
    if not examples:
        raise ValueError(f"{path}: no training examples")
    return examples


def _train(
    ctx: StepContext,
    model: str,
    examples: list[TrainingExample],
    which: Literal["biencoder", "cross_encoder"],
    train: BiEncoderTrainConfig | CrossEncoderTrainConfig,
    nproc_per_node: int,
) -> Path:
    """Train here, or in ``nproc_per_node`` processes under torchrun; returns the model folder."""
    if nproc_per_node > 1:
        return _train_under_torchrun(ctx, model, examples, which, train, nproc_per_node)
    return fine_tune(model, examples, train, ctx.output_dir, ctx.device, ctx.seed, ctx.logger.info,
                     log_metrics=ctx.log_metrics, max_seconds=ctx.time_left())  # fmt: skip


def _training_examples(ctx, corpus: Corpus, first_stage: dict, n_negatives: int, skip_top: int,
                       sample_from: int | None = None) -> list[TrainingExample]:  # fmt: skip
    """Examples of the train query set (never validation or test), negatives from ``first_stage``."""
    queries = {q: corpus.queries[q] for q in corpus.query_ids["train"]}
    return mine_hard_negatives(queries, corpus.qrels["train"], _load_runs(first_stage)["train"],
                               corpus.documents, n_negatives, skip_top, ctx.seed, sample_from)  # fmt: skip


class TrainedModel(StepOutput):
    """A fine-tuned bi-encoder or cross-encoder (``n_examples`` None: used as given, not trained)."""

    model_dir: Path
    trained: bool = True
    n_examples: int | None = None


def finetune_biencoder(ctx: StepContext, cfg: FinetuneBiencoderConfig) -> TrainedModel:
    if not cfg.enabled:
        raise StepSkipped("bi-encoder fine-tuning disabled (enabled: false)")
    corpus = Corpus(_data_input(ctx))
    if not corpus.query_ids["train"]:
        raise StepSkipped("the dataset has no train split")
    examples = _training_examples(ctx, corpus, cfg.negatives, cfg.n_negatives, cfg.skip_top)
    ctx.log_params({"n_examples": len(examples), "nproc_per_node": cfg.nproc_per_node,
                    **cfg.train.model_dump()})  # fmt: skip
    model_dir = _train(ctx, cfg.model, examples, "biencoder", cfg.train, cfg.nproc_per_node)
    return TrainedModel(model_dir=model_dir, n_examples=len(examples))


class TrainRerankerConfig(BaseModel):
    model_config = {"extra": "forbid"}
    model: str = "minilm"
    pretrained: str | None = Field(
        None, description="a trained cross-encoder to use as is (no training)"
    )
    negatives: dict | None = Field(
        None, description="the first stage whose train run gives hard negatives: ${steps.<step>}"
    )
    n_negatives: int = Field(7, ge=1)
    sample_from: int | None = Field(
        30, ge=1, description="draw negatives from this many top candidates"
    )
    skip_top: int = Field(0, ge=0)
    train: CrossEncoderTrainConfig = CrossEncoderTrainConfig()
    nproc_per_node: int = Field(
        1, ge=1, description="> 1: train under torchrun with DDP (train_worker)"
    )


def train_reranker(ctx: StepContext, cfg: TrainRerankerConfig) -> TrainedModel:
    """Train the cross-encoder on the train queries (validation stays held out for the rerank step)."""
    if cfg.pretrained is not None:
        from nlprec.ranking.encoder import resolve_model_dir

        return TrainedModel(model_dir=resolve_model_dir(cfg.pretrained), trained=False)
    corpus = Corpus(_data_input(ctx))
    if not corpus.query_ids["train"]:
        raise StepSkipped("the dataset has no train split and no pretrained reranker was given")
    if cfg.negatives is None:
        raise ValueError(f"step {ctx.name}: set negatives: ${{steps.<first stage>}} or pretrained")
    examples = _training_examples(ctx, corpus, cfg.negatives, cfg.n_negatives, cfg.skip_top,
                                  cfg.sample_from)  # fmt: skip
    ctx.log_params({"n_examples": len(examples), "nproc_per_node": cfg.nproc_per_node,
                    **cfg.train.model_dump()})  # fmt: skip
    model_dir = _train(ctx, cfg.model, examples, "cross_encoder", cfg.train, cfg.nproc_per_node)
    return TrainedModel(model_dir=model_dir, n_examples=len(examples))


# -- reranking ---------------------------------------------------------------------------------
class RerankStepConfig(BaseModel):
    model_config = {"extra": "forbid"}
    system: str = "rerank"
    first_stage: dict = Field(description="the run to rerank: ${steps.<step>} (?? for a fallback)")
    reranker_dir: str = Field(description="the trained cross-encoder: ${steps.<train step>.model_dir}")
    depths: list[int] = Field([20, 50, 100], min_length=1)
    alphas: list[float] = Field([0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], min_length=1)
    aggregations: list[Aggregation] = Field(
        AGGREGATIONS, min_length=1, description="tried on validation when passages are configured"
    )
    reranker: RerankerConfig = RerankerConfig()
    k: int = Field(1000, ge=1)


def _choose_rerank(ctx, cfg: RerankStepConfig, corpus: Corpus, reranker, first: dict[str, Run]):
    """(depth, alpha, aggregation) with the best validation nDCG@10 over the grid."""
    aggregations = cfg.aggregations if cfg.reranker.passage_window else [cfg.reranker.aggregation]
    if not corpus.query_ids["validation"]:
        return min(cfg.depths), 1.0, aggregations[0], "none (defaults)"
    val_first = first["validation"]
    scored = reranker.passage_scores(corpus.queries, val_first, corpus.documents, max(cfg.depths), progress=True)
    qrels = corpus.qrels["validation"]
    grid = {}
    for how in aggregations:
        ce = aggregate_run(scored, how)
        for depth in cfg.depths:
            for alpha in cfg.alphas:
                grid[(depth, alpha, how)] = ndcg10(qrels, rerank_at_depth(ce, val_first, depth, alpha))
    depth, alpha, how = max(grid, key=lambda key: grid[key])
    ctx.log_metrics({f"{cfg.system}.val_ndcg@10": grid[(depth, alpha, how)],
                     f"{cfg.system}_pure.val_ndcg@10": grid.get((depth, 1.0, how), float("nan")),
                     f"{cfg.system}.val_first_stage_ndcg@10": ndcg10(qrels, val_first)})  # fmt: skip
    return depth, alpha, how, f"{len(qrels)} validation queries"


def rerank_step(ctx: StepContext, cfg: RerankStepConfig) -> dict:
    """Rerank the first stage; depth, interpolation weight and passage aggregation chosen on the
    validation queries (held out of both trainings)."""
    first_name = cfg.first_stage["system"]
    corpus = Corpus(_data_input(ctx))
    first = _load_runs(cfg.first_stage)
    reranker = CrossEncoderReranker(
        cfg.reranker.model_copy(update={"model": cfg.reranker_dir}), device=ctx.device
    )
    depth, alpha, how, tuned_on = _choose_rerank(ctx, cfg, corpus, reranker, first)
    split = _eval_split(ctx, corpus)
    scored = reranker.passage_scores(corpus.queries, first[split], corpus.documents, depth, progress=True)
    ce = aggregate_run(scored, how)
    final = {split: rerank_at_depth(ce, first[split], depth, alpha)}
    pure = {split: rerank_at_depth(ce, first[split], depth, 1.0)}
    ctx.log_params({"chosen_first_stage": first_name, "chosen_depth": depth, "chosen_alpha": alpha,
                    "chosen_aggregation": how, "tuned_on": tuned_on})  # fmt: skip
    _log_system(ctx, corpus, cfg.system, final)
    _log_system(ctx, corpus, f"{cfg.system}_pure", pure)
    _log_versus_first_stage(ctx, corpus, cfg.system, first_name, final[split], first[split], split)
    return {
        "system": cfg.system,
        "first_stage": first_name,
        "depth": depth,
        "alpha": alpha,
        "aggregation": how,
        "tuned_on": tuned_on,
        "model_dir": cfg.reranker_dir,
        "reranker": reranker.config.model_copy(update={"aggregation": how}).model_dump(),
        **_write_runs(ctx, cfg.system, final),
        "pure": _write_runs(ctx, f"{cfg.system}_pure", pure),
    }


def _log_versus_first_stage(ctx, corpus, system: str, first_name: str, run: Run, first: Run, split: str) -> None:
    """Does reranking improve on its own first stage? Paired test over the split's queries."""
    qrels = corpus.qrels[split]
    per_query = {system: per_query_scores(qrels, run)["ndcg@10"],
                 first_name: per_query_scores(qrels, first)["ndcg@10"]}  # fmt: skip
    row = compare_systems(per_query, first_name)[0]
    ctx.log_metrics({f"{system}.ndcg@10.delta_vs_first_stage": row["delta"],
                     f"{system}.ndcg@10.p_vs_first_stage": row["p_randomization"]})  # fmt: skip


# -- the online engine -------------------------------------------------------------------------
class PackageEngineConfig(BaseModel):
    model_config = {"extra": "forbid"}
    name: str = Field(description="registered model name, e.g. ranking-demo")
    bm25: dict = Field(description="${steps.<bm25 step>}")
    dense: dict = Field(description="${steps.<dense step>} (?? for a fallback)")
    fusion: dict | None = Field(None, description="its tuned weights: ${steps.<fusion step> ?? null}")
    rerank: dict | None = Field(None, description="its reranker and depth: ${steps.<rerank step> ?? null}")


def package_engine(ctx: StepContext, cfg: PackageEngineConfig) -> dict:
    """Assemble the SearchEngine folder from the steps' outputs and register it (@champion)."""
    corpus = Corpus(_data_input(ctx))
    dense = DenseRetriever.load(cfg.dense["index_dir"], model=cfg.dense["model_dir"])
    bm25 = BM25Retriever.load(cfg.bm25["index_dir"])
    settings = EngineSettings()
    fusion = cfg.fusion
    if fusion and fusion["sources"][0] == cfg.bm25["system"]:
        settings.fusion_method, settings.fusion_weights = fusion["method"], tuple(fusion["weights"])
    reranker = None
    rerank = cfg.rerank
    if rerank:
        reranker = CrossEncoderReranker(RerankerConfig(**rerank["reranker"]), device="cpu")
        settings.rerank_depth, settings.rerank_alpha = rerank["depth"], rerank["alpha"]
    engine = SearchEngine(corpus.corpus, bm25, dense, reranker, settings)
    engine_dir = engine.save(ctx.output_dir / "engine")
    uri = ctx.log_model(engine_dir, name=cfg.name, flavor="dir", alias="champion")
    return {"engine_dir": str(engine_dir), "uri": uri, "settings": settings.model_dump()}


# -- report ------------------------------------------------------------------------------------
class ReportConfig(BaseModel):
    model_config = {"extra": "forbid"}
    systems: list[str]
    baseline: str = "bm25"


def report(ctx: StepContext, cfg: ReportConfig) -> dict:
    """Test-set table, paired significance tests against the baseline, a plot and the TREC runs."""
    corpus = Corpus(_data_input(ctx))
    split = _eval_split(ctx, corpus)
    results, per_query = {}, {}
    for name in cfg.systems:
        if name not in ctx.inputs:  # skipped
            continue
        out = ctx.inputs[name]
        system = out["system"]
        run = _load_runs(out)[split]
        per_query[system] = per_query_scores(corpus.qrels[split], run)["ndcg@10"]
        results[system] = evaluate_run(corpus.qrels[split], run, SUMMARY_METRICS)
        if split == "test":
            ctx.log_artifact(out["test_run"], artifact_path="runs")
    comparisons = compare_systems(per_query, cfg.baseline) if cfg.baseline in per_query else []
    table = {"split": split, "results": results, "significance": comparisons, "per_query_ndcg@10": per_query}
    path = ctx.output_dir / "report.json"
    path.write_text(json.dumps(table, indent=1))
    ctx.log_dict({"results": results, "significance": comparisons}, "comparison.json")
    ctx.log_figure(comparison_figure(results), "comparison.png")
    return {"report": str(path), "systems": list(results)}

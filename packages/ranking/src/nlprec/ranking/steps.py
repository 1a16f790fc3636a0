"""Pipeline steps: data -> first stages -> fusion -> fine-tuning -> reranking -> engine -> report.

Every retrieval step writes TREC runs for the evaluation split (``eval``) and, when the dataset
has one, the training split (``train``: used to tune fusion weights and mine hard negatives, never
the evaluation split). A step whose input is missing returns ``{"skipped": reason}``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Literal

from nlprec.core.data import dataset_path
from nlprec.core.distributed import launch_torchrun
from nlprec.core.step import StepContext
from nlprec.ranking import data as beir
from nlprec.ranking import ddp
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
from nlprec.ranking.rerank import CrossEncoderReranker, RerankerConfig, rerank_at_depth
from nlprec.ranking.training import (
    BiEncoderTrainConfig,
    CrossEncoderTrainConfig,
    TrainingExample,
    mine_hard_negatives,
    train_biencoder,
    train_cross_encoder,
)
from pydantic import BaseModel, Field

SUMMARY_METRICS = ["ndcg@10", "mrr@10", "recall@100", "recall@1000", "map"]


# -- data --------------------------------------------------------------------------------------
class LoadBeirConfig(BaseModel):
    model_config = {"extra": "forbid"}
    path: str
    eval_split: str = "test"
    train_split: str = "train"
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
    eval_q = sorted(dataset.split_queries(cfg.eval_split))
    missing = [q for q in dataset.qrels[cfg.eval_split] if q not in dataset.queries]
    train_q = (
        sorted(dataset.split_queries(cfg.train_split)) if cfg.train_split in dataset.qrels else []
    )
    rng = random.Random(ctx.seed)
    if cfg.max_eval_queries and len(eval_q) > cfg.max_eval_queries:
        eval_q = sorted(rng.sample(eval_q, cfg.max_eval_queries))
    if cfg.max_train_queries and len(train_q) > cfg.max_train_queries:
        train_q = sorted(rng.sample(train_q, cfg.max_train_queries))
    notes = []
    if missing:
        notes.append(f"{len(missing)} judged query ids have no query text and are ignored")
    if not train_q:
        notes.append(
            f"no '{cfg.train_split}' split: fine-tuning skipped, fusion uses equal weights"
        )
    for note in notes:
        ctx.logger.warning(note)
    ctx.log_input(name=folder.name, source=folder, context=cfg.eval_split)
    ctx.log_params(
        {
            "n_docs": len(dataset.corpus),
            "n_eval_queries": len(eval_q),
            "n_train_queries": len(train_q),
        }
    )
    splits = ctx.output_dir / "splits.json"
    splits.write_text(json.dumps({"eval": eval_q, "train": train_q}))
    return {
        "data": str(folder),
        "eval_split": cfg.eval_split,
        "train_split": cfg.train_split if train_q else None,
        "splits": str(splits),
        "n_docs": len(dataset.corpus),
        "notes": notes,
    }


def load_beir(ctx: StepContext, cfg: LoadBeirConfig) -> dict:
    """Validate a BEIR folder and fix the query sets (the folder itself is read where needed)."""
    return _describe(ctx, dataset_path(cfg.path, must_contain=("queries.jsonl", "qrels")), cfg)


class DemoDataConfig(BaseModel):
    model_config = {"extra": "forbid"}
    n_docs: int = Field(300, ge=10)
    n_queries: int = Field(240, ge=6)


def generate_demo(ctx: StepContext, cfg: DemoDataConfig) -> dict:
    """The embedded default: a generated BEIR folder with known relevance (train and test splits)."""
    folder = write_beir_folder(
        generate_demo_corpus(cfg.n_docs, cfg.n_queries, ctx.seed), ctx.output_dir / "demo"
    )
    return _describe(ctx, folder, LoadBeirConfig(path=str(folder)))


class Corpus:
    """What a step needs of the dataset: documents by id, queries and qrels of the two query sets."""

    def __init__(self, described: dict) -> None:
        dataset = beir.load_beir(described["data"])
        splits = json.loads(Path(described["splits"]).read_text())
        self.documents = {d["id"]: d for d in dataset.corpus}
        self.corpus = dataset.corpus
        self.query_ids = {"eval": splits["eval"], "train": splits["train"]}
        self.queries = dataset.queries
        self.qrels = {
            "eval": {q: dataset.qrels[described["eval_split"]][q] for q in splits["eval"]},
            "train": {q: dataset.qrels[described["train_split"]][q] for q in splits["train"]},
        }

    def texts(self, split: str) -> list[str]:
        return [self.queries[q] for q in self.query_ids[split]]


def _data_input(ctx: StepContext) -> dict:
    for value in ctx.inputs.values():
        if "splits" in value:
            return value
    raise ValueError(f"step {ctx.name} needs the data step (load_beir or generate_demo) in `needs`")


def _write_runs(ctx: StepContext, system: str, runs: dict[str, Run]) -> dict[str, str]:
    paths = {}
    for split, run in runs.items():
        if run:
            path = ctx.output_dir / "runs" / f"{system}.{split}.trec"
            write_trec_run(run, path, tag=system)
            paths[split] = str(path)
    return paths


def _log_system(ctx: StepContext, corpus: Corpus, system: str, run: Run) -> dict[str, float]:
    scores = evaluate_run(corpus.qrels["eval"], run, SUMMARY_METRICS)
    ctx.log_metrics({f"{system}.{name}": value for name, value in scores.items()})
    ctx.logger.info("%s: %s", system, {k: round(v, 4) for k, v in scores.items()})
    return scores


def _hits_to_run(qids: list[str], hits: list[list[tuple[str, float]]]) -> Run:
    return {q: dict(h) for q, h in zip(qids, hits, strict=True)}


def _search_splits(corpus: Corpus, search, k: int, train_k: int) -> dict[str, Run]:
    """Runs of ``search(texts, k)`` for the evaluation queries and (at ``train_k``) the train queries."""
    runs = {"eval": _hits_to_run(corpus.query_ids["eval"], search(corpus.texts("eval"), k))}
    if corpus.query_ids["train"]:
        runs["train"] = _hits_to_run(
            corpus.query_ids["train"], search(corpus.texts("train"), train_k)
        )
    return runs


def _load_runs(step_output: dict) -> dict[str, Run]:
    return {split: read_trec_run(path) for split, path in step_output["runs"].items()}


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
    _log_system(ctx, corpus, "bm25", runs["eval"])
    retriever.save(ctx.output_dir / "index")
    return {
        "system": "bm25",
        "index_dir": str(ctx.output_dir / "index"),
        "runs": _write_runs(ctx, "bm25", runs),
    }


class DenseStepConfig(BaseModel):
    model_config = {"extra": "forbid"}
    system: str = "dense"
    model: str = "minilm"
    encoder_from: str | None = Field(
        None, description="upstream step whose model_dir is the encoder"
    )
    faiss: FaissConfig = FaissConfig()
    batch_size: int = Field(64, ge=1)
    max_seq_length: int | None = None
    passages: PassageConfig | None = None
    threads: int | None = None
    backend: Literal["torch", "onnx"] = "torch"
    int8: bool = False
    k: int = Field(1000, ge=1)
    train_k: int = Field(100, ge=1)


def dense_retrieve(ctx: StepContext, cfg: DenseStepConfig) -> dict:
    model = cfg.model
    if cfg.encoder_from is not None:
        upstream = ctx.inputs[cfg.encoder_from]
        if "skipped" in upstream:
            return {"skipped": f"no fine-tuned encoder ({cfg.encoder_from}: {upstream['skipped']})"}
        model = upstream["model_dir"]
    corpus = Corpus(_data_input(ctx))
    dense_cfg = DenseConfig(
        model=model, faiss=cfg.faiss, batch_size=cfg.batch_size, max_seq_length=cfg.max_seq_length,
        passages=cfg.passages, threads=cfg.threads, backend=cfg.backend, int8=cfg.int8,
        device=None if cfg.backend == "onnx" else ctx.device,
    )  # fmt: skip
    retriever = DenseRetriever(dense_cfg).build(corpus.corpus)
    if retriever.truncated:
        ctx.logger.warning(
            "%s: %d texts longer than the encoder's limit were truncated",
            cfg.system,
            retriever.truncated,
        )
    ctx.log_metrics({f"{cfg.system}.truncated_texts": retriever.truncated})
    runs = _search_splits(corpus, retriever.search, cfg.k, cfg.train_k)
    _log_system(ctx, corpus, cfg.system, runs["eval"])
    retriever.save(ctx.output_dir / "index")
    return {
        "system": cfg.system,
        "index_dir": str(ctx.output_dir / "index"),
        "model_dir": str(retriever.model_dir),
        "runs": _write_runs(ctx, cfg.system, runs),
    }


# -- fusion ------------------------------------------------------------------------------------
class FuseConfig(BaseModel):
    model_config = {"extra": "forbid"}
    system: str = "hybrid"
    systems: list[str] = Field(description="upstream steps; 'a|b' takes b when a was skipped")
    method: Literal["rrf", "linear", "auto"] = "auto"
    grid_step: float = Field(0.05, gt=0, le=0.5)
    k: int = Field(1000, ge=1)


def _pick(ctx: StepContext, choice: str) -> tuple[str, dict] | None:
    for name in choice.split("|"):
        if "skipped" not in ctx.inputs[name]:
            return name, ctx.inputs[name]
    return None


def fuse_runs(ctx: StepContext, cfg: FuseConfig) -> dict:
    """Fuse first stages with weights (and method, for ``auto``) tuned on the train split."""
    picked = [p for p in (_pick(ctx, c) for c in cfg.systems) if p is not None]
    if len(picked) < 2:
        return {"skipped": f"fewer than two first stages available among {cfg.systems}"}
    corpus = Corpus(_data_input(ctx))
    runs = [_load_runs(out) for _, out in picked]
    methods = ["rrf", "linear"] if cfg.method == "auto" else [cfg.method]
    if corpus.query_ids["train"]:
        trials = {m: tune_fusion_weights([r["train"] for r in runs], corpus.qrels["train"], m, ndcg10, cfg.grid_step)
                  for m in methods}  # fmt: skip
        method = max(trials, key=lambda m: trials[m][1])
        weights, train_ndcg = trials[method]
        tuned_on = "train"
        ctx.log_metrics({f"{cfg.system}.train_ndcg@10": train_ndcg})
    else:
        method, weights, tuned_on = (
            methods[0],
            tuple([1.0 / len(runs)] * len(runs)),
            "none (equal weights)",
        )
    fused = {split: fuse([r[split] for r in runs], method, weights, cfg.k) for split in runs[0]}
    ctx.log_params({"fused_systems": [name for name, _ in picked], "chosen_method": method,
                    "chosen_weights": list(weights), "tuned_on": tuned_on})  # fmt: skip
    _log_system(ctx, corpus, cfg.system, fused["eval"])
    return {
        "system": cfg.system,
        "sources": [name for name, _ in picked],
        "method": method,
        "weights": list(weights),
        "tuned_on": tuned_on,
        "runs": _write_runs(ctx, cfg.system, fused),
    }


# -- fine-tuning -------------------------------------------------------------------------------
class FinetuneBiencoderConfig(BaseModel):
    model_config = {"extra": "forbid"}
    model: str = "minilm"
    negatives_from: str = "bm25"
    n_negatives: int = Field(1, ge=1)
    skip_top: int = Field(0, ge=0)
    train: BiEncoderTrainConfig = BiEncoderTrainConfig()
    nproc_per_node: int = Field(
        1, ge=1, description="> 1: train under torchrun with DDP (nlprec.ranking.ddp)"
    )


def _train_under_torchrun(
    ctx: StepContext,
    model: str,
    examples: list[TrainingExample],
    which: Literal["biencoder", "cross_encoder"],
    train: BiEncoderTrainConfig | CrossEncoderTrainConfig,
    nproc_per_node: int,
) -> Path:
    """Train in ``nproc_per_node`` processes through ``nlprec.ranking.ddp``; rank 0 writes the model.

    The examples travel as a JSONL file; ``train.batch_size`` stays the global batch, so the
    processes take the steps one process would take.
    """
    examples_file = ddp.write_examples(examples, ctx.output_dir / "examples.jsonl")
    out = ctx.output_dir / "ddp"
    flag = "--biencoder" if which == "biencoder" else "--cross-encoder"
    launch_torchrun(
        ["-m", "nlprec.ranking.ddp", "--model", model, "--examples", str(examples_file),
         "--out", str(out), flag, train.model_dump_json(), "--seed", str(ctx.seed)],
        nproc_per_node,
    )  # fmt: skip
    return out / which / "model"


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
    trainer = train_biencoder if which == "biencoder" else train_cross_encoder
    return trainer(model, examples, train, ctx.output_dir, ctx.device, ctx.seed, ctx.logger.info)


def finetune_biencoder(ctx: StepContext, cfg: FinetuneBiencoderConfig) -> dict:
    data = _data_input(ctx)
    if data["train_split"] is None:
        return {"skipped": "the dataset has no train split"}
    corpus = Corpus(data)
    negatives_run = _load_runs(ctx.inputs[cfg.negatives_from])["train"]
    queries = {q: corpus.queries[q] for q in corpus.query_ids["train"]}
    examples = mine_hard_negatives(
        queries,
        corpus.qrels["train"],
        negatives_run,
        corpus.documents,
        cfg.n_negatives,
        cfg.skip_top,
        ctx.seed,
    )
    ctx.log_params({"n_examples": len(examples), "nproc_per_node": cfg.nproc_per_node,
                    **cfg.train.model_dump()})  # fmt: skip
    model_dir = _train(ctx, cfg.model, examples, "biencoder", cfg.train, cfg.nproc_per_node)
    return {"model_dir": str(model_dir), "n_examples": len(examples)}


class TrainRerankerConfig(BaseModel):
    model_config = {"extra": "forbid"}
    model: str = "minilm"
    pretrained: str | None = Field(
        None, description="a trained cross-encoder to use as is (no training)"
    )
    negatives_from: str = "hybrid"
    n_negatives: int = Field(7, ge=1)
    sample_from: int | None = Field(
        30, ge=1, description="draw negatives from this many top candidates"
    )
    skip_top: int = Field(0, ge=0)
    dev_fraction: float = Field(
        0.2, ge=0, lt=1, description="train queries held out to tune reranking"
    )
    train: CrossEncoderTrainConfig = CrossEncoderTrainConfig()
    nproc_per_node: int = Field(
        1, ge=1, description="> 1: train under torchrun with DDP (nlprec.ranking.ddp)"
    )


def train_reranker(ctx: StepContext, cfg: TrainRerankerConfig) -> dict:
    data = _data_input(ctx)
    corpus = Corpus(data)
    train_q = list(corpus.query_ids["train"])
    random.Random(ctx.seed).shuffle(train_q)
    n_dev = int(len(train_q) * cfg.dev_fraction)
    dev_q, fit_q = sorted(train_q[:n_dev]), sorted(train_q[n_dev:])
    if cfg.pretrained is not None:
        from nlprec.ranking.encoder import resolve_model_dir

        return {
            "model_dir": str(resolve_model_dir(cfg.pretrained)),
            "dev_qids": sorted(train_q),
            "trained": False,
        }
    if data["train_split"] is None:
        return {"skipped": "the dataset has no train split and no pretrained reranker was given"}
    upstream = _pick(ctx, cfg.negatives_from)
    if upstream is None:
        return {"skipped": f"no first stage to mine negatives from ({cfg.negatives_from})"}
    negatives_run = _load_runs(upstream[1])["train"]
    examples = mine_hard_negatives(
        {q: corpus.queries[q] for q in fit_q}, corpus.qrels["train"], negatives_run, corpus.documents,
        cfg.n_negatives, cfg.skip_top, ctx.seed, cfg.sample_from,
    )  # fmt: skip
    ctx.log_params({"n_examples": len(examples), "n_dev_queries": len(dev_q),
                    "nproc_per_node": cfg.nproc_per_node, **cfg.train.model_dump()})  # fmt: skip
    model_dir = _train(ctx, cfg.model, examples, "cross_encoder", cfg.train, cfg.nproc_per_node)
    return {
        "model_dir": str(model_dir),
        "dev_qids": dev_q,
        "trained": True,
        "n_examples": len(examples),
    }


# -- reranking ---------------------------------------------------------------------------------
class RerankStepConfig(BaseModel):
    model_config = {"extra": "forbid"}
    system: str = "rerank"
    first_stage: str = Field("hybrid", description="upstream step(s), 'a|b' as in fusion")
    reranker_from: str = "train_reranker"
    depths: list[int] = Field([20, 50, 100], min_length=1)
    alphas: list[float] = Field([0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], min_length=1)
    reranker: RerankerConfig = RerankerConfig()
    k: int = Field(1000, ge=1)


def rerank_step(ctx: StepContext, cfg: RerankStepConfig) -> dict:
    """Rerank the first stage; depth and interpolation weight tuned on held-out train queries."""
    model_info = ctx.inputs[cfg.reranker_from]
    picked = _pick(ctx, cfg.first_stage)
    if "skipped" in model_info or picked is None:
        return {"skipped": model_info.get("skipped", f"no first stage among {cfg.first_stage}")}
    corpus = Corpus(_data_input(ctx))
    first = _load_runs(picked[1])
    reranker = CrossEncoderReranker(
        cfg.reranker.model_copy(update={"model": model_info["model_dir"]}), device=ctx.device
    )
    max_depth = max(cfg.depths)
    depth, alpha, tuned_on = min(cfg.depths), 1.0, "none (defaults)"
    dev_q = [q for q in model_info["dev_qids"] if q in first.get("train", {})]
    if dev_q:
        dev_first = {q: first["train"][q] for q in dev_q}
        dev_scores = reranker.rerank_run(
            corpus.queries, dev_first, corpus.documents, max_depth, progress=True
        )
        dev_qrels = {q: corpus.qrels["train"][q] for q in dev_q}
        grid = {
            (d, a): ndcg10(dev_qrels, rerank_at_depth(dev_scores, dev_first, d, a))
            for d in cfg.depths
            for a in cfg.alphas
        }
        (depth, alpha), best = max(grid.items(), key=lambda item: item[1])
        tuned_on = f"{len(dev_q)} held-out train queries"
        ctx.log_metrics({f"{cfg.system}.dev_ndcg@10": best, f"{cfg.system}.dev_ndcg@10_pure": grid[(depth, 1.0)]
                         if 1.0 in cfg.alphas else best})  # fmt: skip
    eval_scores = reranker.rerank_run(
        corpus.queries, first["eval"], corpus.documents, depth, progress=True
    )
    final = rerank_at_depth(eval_scores, first["eval"], depth, alpha)
    pure = rerank_at_depth(eval_scores, first["eval"], depth, 1.0)
    ctx.log_params(
        {
            "chosen_first_stage": picked[0],
            "chosen_depth": depth,
            "chosen_alpha": alpha,
            "tuned_on": tuned_on,
        }
    )
    _log_system(ctx, corpus, cfg.system, final)
    _log_system(ctx, corpus, f"{cfg.system}_pure", pure)
    return {
        "system": cfg.system,
        "first_stage": picked[0],
        "depth": depth,
        "alpha": alpha,
        "tuned_on": tuned_on,
        "model_dir": model_info["model_dir"],
        "runs": _write_runs(ctx, cfg.system, {"eval": final})
        | {"eval_pure": _write_runs(ctx, f"{cfg.system}_pure", {"eval": pure})["eval"]},
    }


# -- the online engine -------------------------------------------------------------------------
class PackageEngineConfig(BaseModel):
    model_config = {"extra": "forbid"}
    name: str = Field(description="registered model name, e.g. ranking-demo")
    bm25_from: str = "bm25"
    dense_from: str = Field("dense", description="'a|b' as in fusion")
    fusion_from: str | None = "hybrid"
    rerank_from: str | None = "rerank"


def package_engine(ctx: StepContext, cfg: PackageEngineConfig) -> dict:
    """Assemble the SearchEngine folder from the steps' outputs and register it (@champion)."""
    picked_dense = _pick(ctx, cfg.dense_from)
    corpus = Corpus(_data_input(ctx))
    dense = DenseRetriever.load(picked_dense[1]["index_dir"], model=picked_dense[1]["model_dir"])
    bm25 = BM25Retriever.load(ctx.inputs[cfg.bm25_from]["index_dir"])
    settings = EngineSettings()
    fusion = ctx.inputs.get(cfg.fusion_from) if cfg.fusion_from else None
    if fusion and "skipped" not in fusion and fusion["sources"][0] == cfg.bm25_from:
        settings.fusion_method, settings.fusion_weights = fusion["method"], tuple(fusion["weights"])
    reranker = None
    rerank = ctx.inputs.get(cfg.rerank_from) if cfg.rerank_from else None
    if rerank and "skipped" not in rerank:
        reranker = CrossEncoderReranker(RerankerConfig(model=rerank["model_dir"]), device="cpu")
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
    """Per-query scores, paired significance tests against the baseline, a plot and the TREC runs."""
    corpus = Corpus(_data_input(ctx))
    results, per_query = {}, {}
    for name in cfg.systems:
        out = ctx.inputs[name]
        if "skipped" in out:
            continue
        system = out["system"]
        run = read_trec_run(out["runs"]["eval"])
        per_query[system] = per_query_scores(corpus.qrels["eval"], run)["ndcg@10"]
        results[system] = evaluate_run(corpus.qrels["eval"], run, SUMMARY_METRICS)
        ctx.log_artifact(out["runs"]["eval"], artifact_path="runs")
    comparisons = compare_systems(per_query, cfg.baseline) if cfg.baseline in per_query else []
    table = {"results": results, "significance": comparisons, "per_query_ndcg@10": per_query}
    path = ctx.output_dir / "report.json"
    path.write_text(json.dumps(table, indent=1))
    ctx.log_dict({"results": results, "significance": comparisons}, "comparison.json")
    ctx.log_figure(comparison_figure(results), "comparison.png")
    return {"report": str(path), "systems": list(results)}

"""``nlprec-ranking``: batch indexing and batch search.

    nlprec-ranking index  --input corpus.jsonl --output DIR [--model minilm] [--index auto]
                          [--backend torch|onnx] [--int8] [--engine local|ray]
    nlprec-ranking search --model models:/ranking-beir@champion|DIR --input queries.jsonl
                          --output run.trec [--k 1000] [--mode hybrid] [--rerank MODEL]
                          [--engine local|ray] [--concurrency N] [--num-gpus G]

(`--corpus`, `--queries`, `--out` and `search --index` are accepted as the older names.)

Encoding goes through ``nlprec.core.batch.run_batch`` in parts of ``--chunk-size`` documents, each
written when done: an interrupted ``index`` started again re-encodes only the unfinished parts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from nlprec.core.batch import add_batch_arguments, add_version_argument, batch_options, command_main

PROG = "nlprec-ranking"


class DocumentEncoder:
    """Batch predictor: documents in, unit vectors out (the model is loaded once per worker)."""

    def __init__(
        self,
        model: str = "minilm",
        batch_size: int = 64,
        max_seq_length: int | None = None,
        backend: str = "torch",
        int8: bool = False,
    ):
        from nlprec.ranking.encoder import load_encoder

        self.model = load_encoder(model, max_seq_length=max_seq_length, int8=int8, backend=backend)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        from nlprec.ranking.data import document_text
        from nlprec.ranking.encoder import encode_documents

        ids = [str(i) for i in batch.get("_id", batch.get("id"))]
        titles, texts = batch.get("title", [""] * len(ids)), batch["text"]
        docs = [{"title": t or "", "text": x or ""} for t, x in zip(titles, texts, strict=True)]
        vectors = encode_documents(self.model, [document_text(d) for d in docs], self.batch_size)
        return {"id": ids, "vector": vectors.tolist()}


class QuerySearcher:
    """Batch predictor: queries in, ranked ``{"doc_id", "score"}`` records out (Arrow needs one type a field)."""

    def __init__(self, index: str, k: int = 1000, mode: str = "hybrid", rerank: str | None = None):
        from nlprec.core.models import resolve
        from nlprec.ranking.engine import SearchEngine
        from nlprec.ranking.rerank import CrossEncoderReranker, RerankerConfig

        self.engine = SearchEngine.load(resolve(index))
        if rerank is not None:
            self.engine.reranker = CrossEncoderReranker(RerankerConfig(model=rerank))
        self.k, self.mode, self.rerank = k, mode, rerank is not None or False

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        qids = [str(q) for q in batch.get("_id", batch.get("id"))]
        results = self.engine.search(list(batch["text"]), self.k, self.mode, rerank=self.rerank)
        return {
            "qid": qids,
            "hits": [
                [{"doc_id": h.doc_id, "score": float(h.score)} for h in hits] for hits in results
            ],
        }


def index_command(args: argparse.Namespace) -> None:
    import numpy as np
    from nlprec.core.batch import run_batch
    from nlprec.ranking.data import DataError, read_corpus
    from nlprec.ranking.dense import DenseConfig, DenseRetriever
    from nlprec.ranking.engine import SearchEngine
    from nlprec.ranking.faiss_index import FaissConfig

    docs = read_corpus(args.corpus)  # validates ids and emptiness before any encoding
    out = Path(args.out)
    work = out.parent / f".{out.name}.partial"
    work.mkdir(parents=True, exist_ok=True)
    vectors_path = work / "vectors.jsonl"
    run_batch(
        DocumentEncoder,
        {
            "model": args.model,
            "batch_size": args.batch_size,
            "max_seq_length": args.max_seq_length,
            "backend": args.backend,
            "int8": args.int8,
        },  # fmt: skip
        args.corpus,
        vectors_path,
        engine=args.engine,
        batch_size=args.chunk_size,
        rows_per_part=args.chunk_size,
        concurrency=args.concurrency,
        num_gpus=args.num_gpus,
    )
    rows = [json.loads(line) for line in vectors_path.read_text().splitlines() if line]
    if [r["id"] for r in rows] != [d["id"] for d in docs]:
        raise DataError(f"encoded ids do not match {args.corpus}: delete {work} and index again")
    vectors = np.asarray([r["vector"] for r in rows], dtype=np.float32)  # (n_docs, dim)
    config = DenseConfig(
        model=args.model, faiss=FaissConfig(kind=args.index), max_seq_length=args.max_seq_length,
        backend=args.backend, int8=args.int8,
    )  # fmt: skip
    dense = DenseRetriever(config).build(docs, vectors=vectors)
    SearchEngine.build(docs, dense).save(out)
    shutil.rmtree(work, ignore_errors=True)
    print(f"indexed {len(docs)} documents into {out} ({dense.kind})")


def search_command(args: argparse.Namespace) -> None:
    from nlprec.core.batch import run_batch
    from nlprec.ranking.data import read_queries, write_trec_run

    queries = read_queries(args.queries)
    out = Path(args.out)
    hits_path = out.parent / f".{out.name}.hits.jsonl"
    kwargs = {"index": args.index, "k": args.k, "mode": args.mode, "rerank": args.rerank}
    run_batch(QuerySearcher, kwargs, args.queries, hits_path, **batch_options(args).model_dump())
    run = {}
    for line in hits_path.read_text().splitlines():
        row = json.loads(line)
        run[row["qid"]] = {hit["doc_id"]: float(hit["score"]) for hit in row["hits"]}
    write_trec_run(run, out, tag=f"nlprec-{args.mode}{'-rerank' if args.rerank else ''}")
    hits_path.unlink()
    print(f"searched {len(queries)} queries -> {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Batch indexing and search")
    add_version_argument(parser, "nlprec-ranking")
    commands = parser.add_subparsers(dest="command", required=True)
    index = commands.add_parser("index", help="encode a corpus and write a SearchEngine folder")
    index.add_argument(
        "--input", "--corpus", dest="corpus", required=True,
        help="BEIR corpus.jsonl(.gz) or JSONL with id/title/text",
    )  # fmt: skip
    index.add_argument("--output", "--out", dest="out", required=True, help="SearchEngine folder")
    index.add_argument("--model", default="minilm")
    index.add_argument(
        "--index", default="auto", choices=["auto", "flat", "hnsw", "ivf", "ivfpq", "ivfsq8"]
    )
    index.add_argument("--batch-size", type=int, default=64, help="texts per encoder forward pass")
    index.add_argument("--chunk-size", type=int, default=4096, help="documents per resumable part")
    index.add_argument("--max-seq-length", type=int, default=None)
    index.add_argument(
        "--backend", default="torch", choices=["torch", "onnx"], help="onnx: ONNX Runtime on CPU"
    )
    index.add_argument(
        "--int8", action="store_true", help="dynamic int8 quantisation of the encoder (CPU)"
    )
    index.add_argument("--engine", default="local", choices=["local", "ray"])
    index.add_argument("--concurrency", type=int, default=1, help="ray: encoder actors")
    index.add_argument("--num-gpus", type=float, default=0.0, help="ray: GPUs per actor")
    index.set_defaults(func=index_command)
    search = commands.add_parser("search", help="search a queries file and write a TREC run")
    search.add_argument(
        "--model", "--index", dest="index", required=True,
        help="models:/NAME@ALIAS or a SearchEngine folder (from `index` or a pipeline)",
    )  # fmt: skip
    search.add_argument("--input", "--queries", dest="queries", required=True, help="queries JSONL")
    search.add_argument("--output", "--out", dest="out", required=True, help="TREC run file")
    search.add_argument("--k", type=int, default=1000)
    search.add_argument("--mode", default="hybrid", choices=["bm25", "dense", "hybrid"])
    search.add_argument("--rerank", default=None, help="cross-encoder directory or models:/ URI")
    add_batch_arguments(search)
    search.set_defaults(func=search_command)
    return parser


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main(PROG, _run, argv)


if __name__ == "__main__":
    sys.exit(main())

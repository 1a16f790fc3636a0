"""Document write cost at 100k documents: the service's logged write vs. saving the engine per write.

A SearchEngine over --docs synthetic documents (random words) with a STUB encoder (hashed random
unit vectors, dim 64, FAISS flat: the encoder's cost is the same per written document on either
path, so it is left out) and the real BM25. Timed per one-document write, --writes times:
- apply: `SearchEngine.add_documents` (dense: FAISS add; BM25: the ranking package's add);
- log: the service's append + fsync of the write to documents.jsonl (what it does before the 201);
- save: `SearchEngine.save` (what the service did per write before the log; now compaction's job).

    nice python benchmarks/service_writes.py [--docs 100000] [--writes 5]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np


def stub_dense():
    from nlprec.ranking.dense import DenseConfig, DenseRetriever
    from nlprec.ranking.faiss_index import FaissConfig

    class StubDense(DenseRetriever):
        def _vectors(self, texts: list[str]) -> np.ndarray:
            rows = [np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(64) for t in texts]
            vectors = np.asarray(rows, dtype=np.float32)
            return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

        def encode_documents(self, texts, progress=True):
            return self._vectors(texts)

        def encode_queries(self, queries):
            return self._vectors(queries)

    return StubDense(DenseConfig(model="minilm", faiss=FaissConfig(kind="flat")))


def median_ms(values: list[float]) -> float:
    return float(np.median(values) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--writes", type=int, default=5)
    args = parser.parse_args()
    from nlprec.ranking.engine import SearchEngine
    from nlprec.service.state import EventLog

    words = [f"w{i}" for i in range(5000)]
    rng = random.Random(0)
    docs = [{"id": f"d{i}", "title": "", "text": " ".join(rng.choices(words, k=40))} for i in range(args.docs)]
    started = time.perf_counter()
    engine = SearchEngine.build(docs, stub_dense())
    built = time.perf_counter() - started
    apply, log, save = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        events = EventLog(Path(tmp) / "documents.jsonl")
        for n in range(args.writes):
            doc = {"id": f"new{n}", "title": "", "text": " ".join(rng.choices(words, k=40))}
            t0 = time.perf_counter()
            engine.add_documents([doc])
            t1 = time.perf_counter()
            events.append([{"op": "add", "documents": [doc]}])
            t2 = time.perf_counter()
            engine.save(Path(tmp) / "index")
            t3 = time.perf_counter()
            apply.append(t1 - t0), log.append(t2 - t1), save.append(t3 - t2)
    print(
        f"| {args.docs:,} docs (built in {built:.0f} s) | {median_ms(apply):.0f} ms | "
        f"{median_ms(log):.1f} ms | {median_ms(save):.0f} ms |"
    )


if __name__ == "__main__":
    main()

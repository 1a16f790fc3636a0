"""The SearchEngine as an MLflow pyfunc model: `predict` searches.

Logged as "models from code" by `nlprec.core.registry` (the engine folder is the artifact
`model_dir`), so `mlflow.pyfunc.load_model("models:/ranking-beir@champion")` and
`mlflow models serve --env-manager local` answer searches:

    input   DataFrame with a column `query` (one row per query)
    params  k (int, 10), mode ("bm25" | "dense" | "hybrid", "hybrid"), rerank (bool, False)
    output  one row per hit: query (row index of the input), rank (1-based), id, score, title
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "query")]),
    outputs=Schema(
        [
            ColSpec("long", "query"),
            ColSpec("long", "rank"),
            ColSpec("string", "id"),
            ColSpec("double", "score"),
            ColSpec("string", "title"),
        ]
    ),
    params=ParamSchema(
        [
            ParamSpec("k", "long", 10),
            ParamSpec("mode", "string", "hybrid"),
            ParamSpec("rerank", "boolean", False),
        ]
    ),
)


def input_example(engine_dir: Path) -> pd.DataFrame:
    """A query from the engine's first document title (any text works)."""
    with (Path(engine_dir) / "documents.jsonl").open() as handle:
        first = json.loads(handle.readline() or "{}")
    text = first.get("title") or first.get("text", "example query")
    return pd.DataFrame({"query": [" ".join(text.split()[:8]) or "example query"]})


class SearchEngineModel(PythonModel):
    """Loads the engine once; `predict` runs `SearchEngine.search` on the input queries."""

    def load_context(self, context):
        from nlprec.ranking.engine import SearchEngine

        self.engine = SearchEngine.load(context.artifacts["model_dir"], device="cpu")

    def predict(self, context, model_input, params=None):
        params = params or {}
        queries = [str(q) for q in pd.DataFrame(model_input)["query"].tolist()]
        hits = self.engine.search(
            queries,
            k=int(params.get("k", 10)),
            mode=str(params.get("mode", "hybrid")),
            rerank=bool(params.get("rerank", False)),
        )
        rows = [
            {
                "query": index,
                "rank": rank,
                "id": hit.doc_id,
                "score": float(hit.score),
                "title": self.engine.document(hit.doc_id).get("title", ""),
            }
            for index, found in enumerate(hits)
            for rank, hit in enumerate(found, 1)
        ]
        return pd.DataFrame(rows, columns=["query", "rank", "id", "score", "title"])


mlflow.models.set_model(SearchEngineModel())

"""The OnlineRecommender as an MLflow pyfunc model: `predict` recommends.

Logged as "models from code" by `nlprec.core.registry` (the recommender folder is the artifact
`model_dir`), so `mlflow.pyfunc.load_model("models:/sessionrec-listening@champion")` and
`mlflow models serve --env-manager local` answer recommendations:

    input   DataFrame with a column `user_id` (one row per user; an unknown user gets popularity)
    params  k (int, 10), exclude_seen (bool, False)
    output  one row per item: user_id, rank (1-based), item, score, repeat (in the user's history)
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
    inputs=Schema([ColSpec("string", "user_id")]),
    outputs=Schema(
        [
            ColSpec("string", "user_id"),
            ColSpec("long", "rank"),
            ColSpec("string", "item"),
            ColSpec("double", "score"),
            ColSpec("boolean", "repeat"),
        ]
    ),
    params=ParamSchema([ParamSpec("k", "long", 10), ParamSpec("exclude_seen", "boolean", False)]),
)


def input_example(model_dir: Path) -> pd.DataFrame:
    """The first user the recommender knows."""
    with (Path(model_dir) / "users.jsonl").open() as handle:
        first = json.loads(handle.readline() or "{}")
    return pd.DataFrame({"user_id": [str(first.get("user", "unknown-user"))]})


class RecommenderModel(PythonModel):
    """Loads the recommender once; `predict` runs `OnlineRecommender.recommend` per user."""

    def load_context(self, context):
        from nlprec.sessionrec.online import OnlineRecommender

        self.recommender = OnlineRecommender.load(context.artifacts["model_dir"])

    def predict(self, context, model_input, params=None):
        params = params or {}
        k, exclude_seen = int(params.get("k", 10)), bool(params.get("exclude_seen", False))
        rows = []
        for user in pd.DataFrame(model_input)["user_id"].tolist():
            found = self.recommender.recommend(user_id=str(user), k=k, exclude_seen=exclude_seen)
            rows += [
                {"user_id": str(user), "rank": rank, "item": item, "score": float(score), "repeat": bool(repeat)}
                for rank, (item, score, repeat) in enumerate(
                    zip(found.items, found.scores, found.repeat, strict=True), 1
                )
            ]
        return pd.DataFrame(rows, columns=["user_id", "rank", "item", "score", "repeat"])


mlflow.models.set_model(RecommenderModel())

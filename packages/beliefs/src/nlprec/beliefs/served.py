"""The breakpoint model as an MLflow pyfunc belief tracker: `predict` scores propositions.

Logged as "models from code" by `nlprec.core.registry` (the folder `BreakpointModel.save` wrote is
the artifact `model_dir`), so `mlflow.pyfunc.load_model("models:/beliefs-babi@champion")` and
`mlflow models serve --env-manager local` answer belief tables (the format of predict.py):

    input   DataFrame with columns `story` (text; sentences end with . ! or ?), `propositions`
            (a list of strings) and optionally `story_id`
    output  one row per (story, breakpoint, proposition): story_id, breakpoint (0-based sentence),
            sentence, proposition, label (true / false / unknown), p_true, p_false, p_unknown
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import Array, ColSpec, DataType, Schema

COLUMNS = [
    "story_id",
    "breakpoint",
    "sentence",
    "proposition",
    "label",
    "p_true",
    "p_false",
    "p_unknown",
]
SIGNATURE = ModelSignature(
    inputs=Schema(
        [
            ColSpec("string", "story_id", required=False),
            ColSpec("string", "story"),
            ColSpec(Array(DataType.string), "propositions"),
        ]
    ),
    outputs=Schema(
        [
            ColSpec("string", "story_id"),
            ColSpec("long", "breakpoint"),
            ColSpec("string", "sentence"),
            ColSpec("string", "proposition"),
            ColSpec("string", "label"),
            ColSpec("double", "p_true"),
            ColSpec("double", "p_false"),
            ColSpec("double", "p_unknown"),
        ]
    ),
)


def input_example(model_dir: Path) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "story_id": ["s1"],
            "story": ["Mary went to the kitchen. Mary picked up the apple."],
            "propositions": [["Mary is in the kitchen", "Mary has the apple"]],
        }
    )


class BeliefTracker(PythonModel):
    """Loads the model once (`predict.BeliefPredictor`); `predict` returns one row per belief."""

    def load_context(self, context):
        from nlprec.beliefs.predict import BeliefPredictor

        self.predictor = BeliefPredictor(context.artifacts["model_dir"], device="cpu")

    def predict(self, context, model_input, params=None):
        frame = pd.DataFrame(model_input)
        if "story_id" not in frame:
            frame["story_id"] = [f"row {i}" for i in range(len(frame))]
        batch = {
            "story_id": frame["story_id"].astype(str).tolist(),
            "story": frame["story"].astype(str).tolist(),
            "propositions": [list(p) for p in frame["propositions"]],
        }
        result = self.predictor(batch)
        rows = [
            {"story_id": story_id, **belief}
            for story_id, table in zip(result["story_id"], result["beliefs"], strict=True)
            for belief in table
        ]
        return pd.DataFrame(rows, columns=COLUMNS)


mlflow.models.set_model(BeliefTracker())

"""The distilled student as an MLflow pyfunc model: `predict` generates text.

Logged as "models from code" by `nlprec.core.registry` (the student folder written by
`save_student`, with its tokenizer, is the artifact `model_dir`), so
`mlflow.pyfunc.load_model("models:/mohawk-student@champion")` and `mlflow models serve
--env-manager local` continue prompts with the student's recurrent state:

    input   DataFrame with a column `prompt` (one row per prompt)
    params  max_new_tokens (int, 50), temperature (float, 0.8; 0 is greedy), top_k (int, 40;
            0 keeps every token), seed (int, 0)
    output  one row per prompt: prompt, generated_text (the continuation, without the prompt)
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "prompt")]),
    outputs=Schema([ColSpec("string", "prompt"), ColSpec("string", "generated_text")]),
    params=ParamSchema(
        [
            ParamSpec("max_new_tokens", "long", 50),
            ParamSpec("temperature", "double", 0.8),
            ParamSpec("top_k", "long", 40),
            ParamSpec("seed", "long", 0),
        ]
    ),
)


def input_example(model_dir: Path) -> pd.DataFrame:
    """A prompt any byte-level tokenizer encodes."""
    return pd.DataFrame({"prompt": ["The "]})


class StudentGenerator(PythonModel):
    """Loads the student and its tokenizer once; `predict` samples a continuation per prompt."""

    def load_context(self, context):
        from nlprec.mohawk.student import load_student
        from transformers import PreTrainedTokenizerFast

        model_dir = context.artifacts["model_dir"]
        self.model = load_student(model_dir, "cpu")
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)

    def predict(self, context, model_input, params=None):
        import torch
        from nlprec.mohawk.student import generate

        params = params or {}
        max_new_tokens = int(params.get("max_new_tokens", 50))
        temperature = float(params.get("temperature", 0.8))
        top_k = int(params.get("top_k", 40)) or None
        generator = torch.Generator().manual_seed(int(params.get("seed", 0)))
        prompts = [str(p) for p in pd.DataFrame(model_input)["prompt"].tolist()]
        texts = []
        for prompt in prompts:
            ids = self.tokenizer(prompt, return_tensors="pt").input_ids
            if ids.numel() == 0:
                raise ValueError(f"prompt {prompt!r} is empty after tokenisation")
            tokens = generate(self.model, ids, max_new_tokens, temperature, top_k, generator)
            texts.append(self.tokenizer.decode(tokens[0, ids.size(1) :]))
        return pd.DataFrame({"prompt": prompts, "generated_text": texts})


mlflow.models.set_model(StudentGenerator())

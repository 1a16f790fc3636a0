"""The registered student is a pyfunc model that generates: signature, input example, and the same
tokens as `generate` on the saved student; a first version is champion, later ones challengers."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from nlprec.core.registry import detect_flavor
from nlprec.mohawk.data import train_tokenizer
from nlprec.mohawk.student import StudentConfig, StudentLM, generate, load_student, save_student
from transformers import PreTrainedTokenizerFast


@pytest.fixture()
def student_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    tokenizer = train_tokenizer("def f(x):\n    return x + 1\n" * 50, 280)
    config = StudentConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_layers=2,
        num_heads=4, head_dim=8, state_size=8,
    )  # fmt: skip
    return save_student(StudentLM(config).eval(), tmp_path / "student", tokenizer)


def test_a_saved_student_is_detected_as_a_generating_pyfunc(student_dir):
    assert detect_flavor(student_dir) == ("student_lm", None)


def test_registered_student_generates_what_the_saved_student_generates(
    register_directory, student_dir
):
    uri = register_directory(student_dir, "mohawk-served")
    assert uri == "models:/mohawk-served@champion"  # a fresh name: the first version serves
    model = mlflow.pyfunc.load_model(uri)
    assert model.metadata.signature.inputs.input_names() == ["prompt"]
    assert {p.name for p in model.metadata.signature.params} >= {"max_new_tokens", "temperature"}
    assert model.metadata.saved_input_example_info is not None

    out = model.predict(
        pd.DataFrame({"prompt": ["def f", "return"]}),
        params={"max_new_tokens": 6, "temperature": 0.0},
    )
    assert list(out.columns) == ["prompt", "generated_text"] and out.prompt.tolist() == [
        "def f",
        "return",
    ]

    tokenizer = PreTrainedTokenizerFast.from_pretrained(student_dir)
    ids = tokenizer("def f", return_tensors="pt").input_ids
    greedy = generate(load_student(student_dir), ids, 6, temperature=0.0)
    assert out.generated_text[0] == tokenizer.decode(greedy[0, ids.size(1) :])
    assert out.generated_text[0] != ""

    second = register_directory(student_dir, "mohawk-served")
    assert (
        second == "models:/mohawk-served@challenger"
    )  # a new version never takes the champion's place
    aliases = mlflow.MlflowClient().get_registered_model("mohawk-served").aliases
    assert {a: str(v) for a, v in aliases.items()} == {"champion": "1", "challenger": "2"}

"""The registered breakpoint model is a pyfunc belief tracker: signature, input example, and the
same belief table as `nlprec-beliefs predict` (BeliefPredictor) on the saved model."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from nlprec.beliefs.model import BreakpointConfig, BreakpointModel
from nlprec.beliefs.predict import BeliefPredictor
from nlprec.core.registry import detect_flavor

STORY = "Mary went to the kitchen. John took the apple. Mary left."
PROPOSITIONS = ["Mary is in the kitchen", "John has the apple"]


@pytest.fixture()
def model_dir(tiny_encoder, tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return BreakpointModel(BreakpointConfig(encoder=tiny_encoder, proj_dim=16)).save(
        tmp_path / "model"
    )


def test_a_saved_breakpoint_model_is_detected_as_a_belief_tracker(model_dir):
    assert detect_flavor(model_dir) == ("belief_tracker", None)


def test_registered_tracker_returns_the_belief_table(register_directory, model_dir):
    uri = register_directory(model_dir, "beliefs-served")
    model = mlflow.pyfunc.load_model(uri)
    assert model.metadata.signature.inputs.input_names() == ["story_id", "story", "propositions"]
    assert model.metadata.saved_input_example_info is not None

    frame = pd.DataFrame({"story_id": ["s1"], "story": [STORY], "propositions": [PROPOSITIONS]})
    table = model.predict(frame)
    assert list(table.columns) == [
        "story_id", "breakpoint", "sentence", "proposition", "label", "p_true", "p_false", "p_unknown",
    ]  # fmt: skip
    assert len(table) == 3 * 2  # every (breakpoint, proposition) pair
    assert table.breakpoint.tolist() == [0, 0, 1, 1, 2, 2]

    expected = BeliefPredictor(str(model_dir), device="cpu")(
        {"story_id": ["s1"], "story": [STORY], "propositions": [PROPOSITIONS]}
    )["beliefs"][0]
    assert table.p_true.tolist() == pytest.approx([row["p_true"] for row in expected], abs=1e-6)
    assert table.label.tolist() == [row["label"] for row in expected]
    sums = table.p_true + table.p_false + table.p_unknown
    assert sums.tolist() == pytest.approx([1.0] * len(table), abs=1e-5)

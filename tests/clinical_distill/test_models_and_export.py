"""Checkpoint checks (corrupt input gives a clear error) and export to HF and ONNX."""

import json

import pytest
from nlprec.clinical_distill.export import export_hf, export_onnx, onnx_max_difference
from nlprec.clinical_distill.models import CheckpointError, check_checkpoint, load_masked_lm
from transformers import AutoModel


@pytest.fixture()
def saved(tmp_path, teacher, tokenizer):
    return export_hf(teacher, tokenizer, tmp_path / "model")


def test_saved_model_loads_with_automodel_and_as_masked_lm(saved):
    assert AutoModel.from_pretrained(saved).config.num_hidden_layers == 4
    assert load_masked_lm(str(saved)).config.hidden_size == 32


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        check_checkpoint(tmp_path / "nope")


def test_truncated_weights(saved):
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_masked_lm(str(saved))


def test_garbled_weights_header(saved):
    (saved / "model.safetensors").write_bytes(
        b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + b"\0" * 64
    )
    with pytest.raises(CheckpointError, match="corrupt"):
        load_masked_lm(str(saved))


def test_bad_config(saved):
    (saved / "config.json").write_text("{ broken")
    with pytest.raises(CheckpointError, match="config.json"):
        load_masked_lm(str(saved))


def test_missing_weights(saved):
    (saved / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        check_checkpoint(saved)


def test_onnx_export_agrees_with_pytorch(saved, tmp_path):
    onnx_path = export_onnx(saved, tmp_path / "encoder.onnx")
    texts = ["The patient denies chest pain.", "Type 2 diabetes on metformin, stable."]
    assert onnx_max_difference(saved, onnx_path, texts) < 1e-4
    assert json.loads((saved / "config.json").read_text())["model_type"] == "bert"

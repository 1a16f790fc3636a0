"""Export a student as a standard Hugging Face model directory and as ONNX (encoder outputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel

from .models import check_checkpoint, load_tokenizer

ONNX_OPSET = 17


def export_hf(model: PreTrainedModel, tokenizer, out_dir: str | Path) -> Path:
    """save_pretrained (safetensors) with the tokenizer: loadable with AutoModel / AutoModelForMaskedLM."""
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


class _EncoderForExport(nn.Module):
    """Positional (input_ids, attention_mask) -> last_hidden_state (B, L, d): what ONNX tracing needs."""

    def __init__(self, encoder: PreTrainedModel):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask):
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def export_onnx(model_dir: str | Path, onnx_path: str | Path) -> Path:
    """ONNX graph of the encoder with dynamic batch and sequence axes (TorchScript exporter)."""
    check_checkpoint(model_dir)
    encoder = AutoModel.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="eager"
    ).eval()
    tokenizer = load_tokenizer(str(model_dir))
    sample = tokenizer(["a sample clinical sentence"], return_tensors="pt")
    onnx_path = Path(onnx_path)
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(
        _EncoderForExport(encoder),
        (sample["input_ids"], sample["attention_mask"]),
        str(onnx_path),
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state"],
        dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes},
        opset_version=ONNX_OPSET,
        dynamo=False,
    )
    return onnx_path


def onnx_max_difference(model_dir: str | Path, onnx_path: str | Path, texts: list[str]) -> float:
    """Largest absolute difference between ONNX Runtime and PyTorch hidden states on `texts`."""
    import onnxruntime  # noqa: PLC0415

    tokenizer = load_tokenizer(str(model_dir))
    batch = tokenizer(texts, padding=True, return_tensors="np")
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(
        None,
        {
            "input_ids": batch["input_ids"].astype(np.int64),
            "attention_mask": batch["attention_mask"].astype(np.int64),
        },
    )
    encoder = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        torch_out = encoder(
            input_ids=torch.from_numpy(batch["input_ids"]).long(),
            attention_mask=torch.from_numpy(batch["attention_mask"]).long(),
        ).last_hidden_state
    valid = batch["attention_mask"].astype(bool)
    return float(np.abs(onnx_out[valid] - torch_out.numpy()[valid]).max())

"""Loading encoders with clear errors, and the small facts about them the package needs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer, PreTrainedModel

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
LAYER_KEY = re.compile(
    r"\.layer\.(\d+)\."
)  # BERT/RoBERTa/ELECTRA `encoder.layer.N.`, DistilBERT `transformer.layer.N.`


class CheckpointError(ValueError):
    """A model directory that cannot be used: missing, incomplete or corrupt."""


def resolve_model_path(name_or_path: str) -> str:
    """A local directory for `name_or_path`: an existing path as is, else nlprec.core's resolver.

    The core resolver knows the bundled MiniLM (`minilm`) and registered MLflow models; it is
    imported lazily so the model code also runs where nlprec.core's dependencies are absent.
    """
    if Path(name_or_path).exists():
        return str(name_or_path)
    from nlprec.core.models import resolve  # noqa: PLC0415 (optional dependency at call time)

    return str(resolve(name_or_path))


def check_checkpoint(path: str | Path) -> Path:
    """Fail early, naming the problem, when `path` is not a loadable Hugging Face model directory."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"model directory {path} does not exist")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path} has no config.json: not a Hugging Face model directory")
    try:
        json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(
            f"{config_file} is not valid JSON (corrupt checkpoint): {err}"
        ) from err
    weights = [path / name for name in WEIGHT_FILES if (path / name).is_file()]
    if not weights:
        raise CheckpointError(
            f"{path} has no weights file (expected one of {', '.join(WEIGHT_FILES)})"
        )
    if weights[0].name == "model.safetensors":
        _check_safetensors(weights[0])
    return path


def _check_safetensors(file: Path) -> None:
    """Check the safetensors header parses and the file holds every byte the header declares."""
    size = file.stat().st_size
    with file.open("rb") as handle:
        prefix = handle.read(8)
        header_len = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if not 0 < header_len <= size - 8:
            raise CheckpointError(f"{file} is corrupt: bad safetensors header length")
        try:
            header = json.loads(handle.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(
                f"{file} is corrupt: unreadable safetensors header ({err})"
            ) from err
    tensors = [v for k, v in header.items() if k != "__metadata__"]
    data_end = max((t["data_offsets"][1] for t in tensors), default=0)
    if size < 8 + header_len + data_end:
        raise CheckpointError(f"{file} is truncated: header declares more data than the file holds")


def load_masked_lm(name_or_path: str, attention_outputs: bool = False) -> PreTrainedModel:
    """An encoder with an MLM head in float32; a missing head is initialised fresh (MiniLM has none).

    `attention_outputs` selects the eager attention implementation, the one that can return
    attention probabilities (needed by the attention-transfer loss).
    """
    path = check_checkpoint(resolve_model_path(name_or_path))
    kwargs = {"attn_implementation": "eager"} if attention_outputs else {}
    try:
        return AutoModelForMaskedLM.from_pretrained(str(path), dtype=torch.float32, **kwargs)
    except Exception as err:
        raise CheckpointError(f"could not load {path} as a masked language model: {err}") from err


def load_tokenizer(name_or_path: str):
    path = resolve_model_path(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as err:
        raise CheckpointError(f"could not load a tokenizer from {path}: {err}") from err


def load_config(name_or_path: str):
    return AutoConfig.from_pretrained(str(check_checkpoint(resolve_model_path(name_or_path))))


def count_parameters(model: nn.Module) -> int:
    """Unique parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def encoder_parameters(model: PreTrainedModel) -> int:
    """Parameters of the encoder alone (no task or MLM head): the size users compare."""
    return count_parameters(model.base_model)


def num_layers(config) -> int:
    return int(config.num_hidden_layers)

"""Save / load a fine-tuned model: ``encoder/`` (stock transformers dir + tokenizer),
``head.safetensors`` (the task layer) and ``model.json`` (task kind and settings)."""

from __future__ import annotations

import json
from pathlib import Path

from nlprec.clinical_longdoc.encoder import LongEncoder
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer

HEAD_FILE = "head.safetensors"
META_FILE = "model.json"


def save_task_model(
    directory: str | Path, encoder: LongEncoder, tokenizer, head: nn.Module, meta: dict
) -> Path:
    directory = Path(directory)
    encoder.model.save_pretrained(directory / "encoder", safe_serialization=True)
    tokenizer.save_pretrained(directory / "encoder")
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(directory / HEAD_FILE))
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))
    return directory


def load_task_model(directory: str | Path, task: str) -> tuple[LongEncoder, object, dict, dict]:
    """(encoder, tokenizer, head state dict, meta); refuses a directory saved for another task."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.exists():
        raise FileNotFoundError(
            f"{directory} is not a saved clinical-longdoc model (no {META_FILE})"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("task") != task:
        raise ValueError(f"{directory} holds a {meta.get('task')!r} model, not a {task!r} model")
    encoder = LongEncoder(AutoModel.from_pretrained(str(directory / "encoder")).base_model)
    tokenizer = AutoTokenizer.from_pretrained(str(directory / "encoder"))
    return encoder, tokenizer, load_file(str(directory / HEAD_FILE)), meta

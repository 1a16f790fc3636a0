"""Loading the bi-encoder and encoding texts into unit-length vectors.

The encoder is ``SentenceTransformer``; this module adds model resolution through nlprec.core,
a content fingerprint (so an index can refuse vectors from another model) and thread settings.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

FINGERPRINT_BYTES = (
    4 << 20
)  # hash the first 4 MiB of the weights: enough to tell models apart, fast


def resolve_model_dir(name_or_path: str) -> Path:
    """A local directory for a model reference (name, path or models:/ URI), offline."""
    candidate = Path(name_or_path)
    if candidate.is_dir():
        return candidate
    from nlprec.core.models import resolve

    return Path(resolve(name_or_path))


def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 over the size and first bytes of every weight file: changes when the weights do."""
    digest = hashlib.sha256()
    weights = sorted(Path(model_dir).glob("*.safetensors")) + sorted(Path(model_dir).glob("*.bin"))
    for path in weights:
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(FINGERPRINT_BYTES))
    return digest.hexdigest()[:16]


def set_threads(threads: int | None) -> None:
    """Explicit CPU threads for torch and FAISS (None leaves the libraries' defaults)."""
    if threads is None:
        return
    import faiss
    import torch

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def quantize_int8(model):
    """Dynamic int8 quantisation of every Linear layer (CPU inference only): weights int8,
    activations quantised per batch. Faster on CPU at a small cost in accuracy (benchmarked)."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(model.to("cpu"), {torch.nn.Linear}, dtype=torch.qint8)


def load_encoder(
    name_or_path: str,
    device: str | None = None,
    max_seq_length: int | None = None,
    int8: bool = False,
):
    import torch
    from sentence_transformers import SentenceTransformer

    # float32 weights even from an fp16 checkpoint: training and exact scores need them
    model_kwargs = {"dtype": torch.float32}
    model = SentenceTransformer(
        str(resolve_model_dir(name_or_path)), device=device, model_kwargs=model_kwargs
    )
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return quantize_int8(model) if int8 else model


def embedding_dim(model) -> int:
    getter = (
        getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    )
    return int(getter())


def encode(model, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """(n, dim) float32 unit vectors, so inner product = cosine similarity."""
    if not texts:
        return np.zeros((0, embedding_dim(model)), dtype=np.float32)
    vectors = model.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=progress,
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)


def count_truncated(model, texts: list[str]) -> int:
    """How many texts are longer than the encoder's max_seq_length (their tail is not seen)."""
    limit = model.max_seq_length
    lengths = [len(ids) for ids in model.tokenizer(texts, add_special_tokens=True)["input_ids"]]
    return sum(length > limit for length in lengths)

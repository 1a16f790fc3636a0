"""Loading the bi-encoder and encoding texts into unit-length vectors.

The encoder is ``SentenceTransformer``; this module adds model resolution through nlprec.core,
a content fingerprint (so an index can refuse vectors from another model).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from nlprec.core.hashing import hash_files

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
    """Fingerprint of the size and first bytes of every weight file: changes when the weights do."""
    weights = sorted(Path(model_dir).glob("*.safetensors")) + sorted(Path(model_dir).glob("*.bin"))
    return hash_files([(p.name, p) for p in weights], length=16, head_bytes=FINGERPRINT_BYTES)


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
    backend: str = "torch",
    threads: int | None = None,
    onnx_gelu: str = "exact",
):
    """A SentenceTransformer (``backend="torch"``, int8 = torch dynamic quantisation) or an
    ``OnnxEncoder`` (``backend="onnx"``, int8 = ONNX Runtime per-channel dynamic quantisation;
    ``onnx_gelu="tanh"`` fuses the tanh approximation of GELU)."""
    model_dir = resolve_model_dir(name_or_path)
    if backend == "onnx":
        if device not in (None, "cpu"):
            raise ValueError(f"the onnx backend runs on CPU only, not on device {device!r}")
        from nlprec.ranking.onnx_encoder import OnnxEncoder

        return OnnxEncoder(model_dir, max_seq_length, int8=int8, threads=threads, gelu=onnx_gelu)
    if backend != "torch":
        raise ValueError(f"unknown encoder backend {backend!r}: expected 'torch' or 'onnx'")
    import torch
    from sentence_transformers import SentenceTransformer

    # float32 weights even from an fp16 checkpoint: training and exact scores need them
    model_kwargs = {"dtype": torch.float32}
    model = SentenceTransformer(str(model_dir), device=device, model_kwargs=model_kwargs)
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return quantize_int8(model) if int8 else model


def embedding_dim(model) -> int:
    getter = (
        getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    )
    return int(getter())


def encode_queries(model, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """(n, dim) float32 unit vectors of queries (``encode_query``: the model's query prompt)."""
    return _encode(model.encode_query, model, texts, batch_size, progress)


def encode_documents(
    model, texts: list[str], batch_size: int = 64, progress: bool = False
) -> np.ndarray:
    """(n, dim) float32 unit vectors of documents (``encode_document``: the document prompt)."""
    return _encode(model.encode_document, model, texts, batch_size, progress)


def _encode(method, model, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
    if not texts:
        return np.zeros((0, embedding_dim(model)), dtype=np.float32)
    vectors = method(texts, batch_size=batch_size, show_progress_bar=progress,
                     normalize_embeddings=True, convert_to_numpy=True)  # fmt: skip
    return np.ascontiguousarray(vectors, dtype=np.float32)


def count_truncated(model, texts: list[str]) -> int:
    """How many texts are longer than the encoder's ``max_seq_length`` (their tail is unseen)."""
    limit = model.max_seq_length
    lengths = model.tokenizer(texts, truncation=False, add_special_tokens=True)["input_ids"]
    return sum(len(ids) > limit for ids in lengths)

"""Exact inner-product top-k in PyTorch: the reference for FAISS Flat, and the GPU search path."""

from __future__ import annotations

import numpy as np
import torch

QUERY_CHUNK = 1024  # queries scored at once: bounds the (chunk, n_docs) score matrix


def exact_search(
    queries: np.ndarray, documents: np.ndarray, k: int, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k documents by inner product: (scores, indices), each (n_queries, min(k, n_docs)), best first."""
    docs = torch.as_tensor(documents, dtype=torch.float32, device=device)  # (n_docs, dim)
    k = min(k, len(docs))
    all_scores, all_ids = [], []
    for start in range(0, len(queries), QUERY_CHUNK):
        q = torch.as_tensor(
            queries[start : start + QUERY_CHUNK], dtype=torch.float32, device=device
        )
        scores = q @ docs.T  # (chunk, n_docs)
        top = torch.topk(scores, k, dim=1)
        all_scores.append(top.values.cpu().numpy())
        all_ids.append(top.indices.cpu().numpy())
    return np.concatenate(all_scores), np.concatenate(all_ids)

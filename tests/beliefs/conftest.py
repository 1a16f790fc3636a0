"""Fixtures for the beliefs tests: a tiny random BERT with MiniLM's tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest


def save_tiny_bert(directory: Path, dropout: float = 0.1) -> str:
    """A 2-layer, 32-wide random BERT saved with MiniLM's tokenizer (fast to build and run)."""
    import torch
    from nlprec.core.models import resolve
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve("minilm"))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-encoder"))


@pytest.fixture(scope="session")
def no_dropout_encoder(tmp_path_factory) -> str:
    """The tiny BERT without dropout: dropout masks differ between processes and runs."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-encoder-no-dropout"), dropout=0.0)

"""Tiny random BERT masked-LMs sharing the bundled MiniLM tokenizer, for fast unit tests."""

from __future__ import annotations

import pytest
import torch
from nlprec.clinical_distill.models import load_tokenizer
from nlprec.core.threads import quiet_libraries
from transformers import BertConfig, BertForMaskedLM

quiet_libraries()
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer("minilm")


def tiny_bert(
    vocab_size: int, hidden: int = 32, layers: int = 4, heads: int = 4, eager: bool = True
) -> BertForMaskedLM:
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    return BertForMaskedLM._from_config(config, attn_implementation="eager" if eager else "sdpa")


@pytest.fixture(scope="session")
def make_bert():
    return tiny_bert


@pytest.fixture()
def teacher(tokenizer):
    return tiny_bert(len(tokenizer))

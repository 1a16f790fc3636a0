"""Tiny random encoders (with the bundled MiniLM tokenizer) for fast unit tests."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel, RobertaConfig, RobertaModel

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


@pytest.fixture(scope="session")
def minilm_dir():
    from nlprec.core.models import resolve

    return resolve("minilm")


@pytest.fixture(scope="session")
def tokenizer(minilm_dir):
    return AutoTokenizer.from_pretrained(str(minilm_dir))


@pytest.fixture()
def tiny_bert(tokenizer) -> BertModel:
    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=tokenizer.vocab_size, **TINY)).eval()


@pytest.fixture()
def tiny_roberta() -> RobertaModel:
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=120, pad_token_id=1, **{**TINY, "max_position_embeddings": 66}
    )
    return RobertaModel(config).eval()

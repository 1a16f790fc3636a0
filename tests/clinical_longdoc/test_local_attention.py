"""The long QA model: tiled positions must not alias, and answer labels must hold in 4,096-token windows.

Session 3's long QA model (full attention over tiled positions) stayed at F1 0.05 where a 512-token
sliding window of the same encoder reached 0.22.  Tiled positions repeat every ``n_short`` tokens:
under full attention a token sees every copy of each position, and heads that attend by position
spread their mass over the copies.  The ``local`` variant (banded SDPA, window <= n_short) sees
each position once; these tests fail on a long QA model that attends across a tile period.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from nlprec.clinical_longdoc.data import QAExample
from nlprec.clinical_longdoc.encoder import LongEncoder, local_attention_mask
from nlprec.clinical_longdoc.longify import longify
from nlprec.clinical_longdoc.qa import QAModel, answer_token_position
from nlprec.clinical_longdoc.variants import build_encoder, get_variant
from transformers import BertConfig, BertModel

PIPELINE = Path(__file__).resolve().parents[2] / "pipelines" / "longdoc-covidqa.yaml"


def _one_layer_bert(max_positions: int = 64, vocab: int = 1000) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=1,  # one layer: a token's output depends only on the keys it attends to
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertModel(config).eval()


def _output_change(encoder: LongEncoder, position: int, changed: int, global_mask=None) -> float:
    """How much the output at ``position`` moves when the token at ``changed`` is replaced."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 900, (1, encoder.max_length), generator=generator)
    other = ids.clone()
    other[0, changed] = ids[0, changed] + 1
    mask = torch.ones_like(ids)
    no_global = torch.zeros_like(ids) if global_mask is None else global_mask
    with torch.no_grad():
        a, b = encoder(ids, mask, no_global), encoder(other, mask, no_global)
    return (a[0, position] - b[0, position]).abs().max().item()


def _pipeline_long_variant() -> str:
    steps = yaml.safe_load(PIPELINE.read_text())["steps"]
    return next(s for s in steps if s["name"] == "long")["with"]["variant"]


def test_full_attention_reads_the_tiled_alias_and_local_does_not():
    """Token 100 and token 164 share a position embedding (period 64): full attention reads it."""
    source = _one_layer_bert()
    full = LongEncoder(longify(source, max_length=256, attention="full")).eval()
    local = LongEncoder(
        longify(source, max_length=256, attention="local", attention_window=64)
    ).eval()
    assert _output_change(full, 100, 164) > 1e-6  # the defect: the alias is in view
    assert _output_change(local, 100, 164) == 0.0
    assert _output_change(local, 100, 131) > 1e-6  # inside the band (|i - j| < 32)
    assert _output_change(local, 100, 132) == 0.0  # just outside it


def test_local_global_tokens_see_and_are_seen_everywhere():
    local = LongEncoder(
        longify(_one_layer_bert(), max_length=256, attention="local", attention_window=64)
    ).eval()
    global_mask = torch.zeros(1, 256, dtype=torch.long)
    global_mask[0, :5] = 1  # e.g. [CLS] and the question
    assert _output_change(local, 200, 3, global_mask) > 1e-6  # far token reads a global one
    assert _output_change(local, 2, 250, global_mask) > 1e-6  # a global token reads everything


def test_local_mask_keeps_padding_rows_alive_and_hides_padding_keys():
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    allowed = local_attention_mask(mask, torch.zeros_like(mask), window=4)[0, 0]
    assert allowed.dtype == torch.bool
    assert allowed[:3, 3:].sum() == 0  # no token attends to padding
    assert allowed.any(dim=1).all()  # every row attends somewhere (no NaN under SDPA)
    assert allowed[0].tolist() == [True, True, False, False, False]  # |i - j| < 2
    additive = local_attention_mask(mask, torch.zeros_like(mask), 4, "eager", torch.float32)
    assert additive[0, 0, 0, 2] == torch.finfo(torch.float32).min and additive[0, 0, 0, 1] == 0


def test_local_window_wider_than_the_tile_is_refused():
    with pytest.raises(ValueError, match="tiled positions twice"):
        longify(_one_layer_bert(), max_length=256, attention="local", attention_window=128)


def test_local_variant_survives_save_and_load(tmp_path):
    model = longify(_one_layer_bert(), max_length=256, attention="local", attention_window=64)
    model.save_pretrained(tmp_path)
    loaded = LongEncoder(type(model).from_pretrained(tmp_path)).eval()
    assert loaded.kind == "local"
    assert _output_change(loaded, 100, 164) == 0.0


def test_pipeline_long_qa_model_reads_no_alias():
    """The long model of pipelines/longdoc-covidqa.yaml, built as the pipeline builds it."""
    variant = get_variant(_pipeline_long_variant())
    encoder = build_encoder(variant, _one_layer_bert(), max_length=256, attention_window=64)
    assert _output_change(encoder.eval(), 100, 164) == 0.0


def _long_context_example(tokenizer, answer_at_token: int) -> QAExample:
    """A context of ~5,000-7,000 tokens with a unique answer sentence starting near ``answer_at_token``."""
    words = [f"w{i % 97}" for i in range(2500)]
    context = " ".join(words)
    cut = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
    char = cut["offset_mapping"][answer_at_token][0]
    answer = "interferon beta-1b given subcutaneously"
    context = context[:char] + answer + " " + context[char:]
    question = "Which treatment was given?"
    return QAExample(question, context, answer, char, "doc", f"q{answer_at_token}")


@pytest.mark.parametrize("answer_at_token", [40, 1500, 4090, 4500])
def test_answer_tokens_are_labelled_right_in_4096_token_windows(tokenizer, answer_at_token):
    """Start/end token labels decode (through the tokenizer's offsets) to the gold answer, in every
    4,096-token window that holds it, wherever the answer sits (< 512, 512-4,096, > 4,096)."""
    example = _long_context_example(tokenizer, answer_at_token)
    assert answer_token_position(tokenizer, example) == answer_at_token
    source = _one_layer_bert(max_positions=4096, vocab=tokenizer.vocab_size)
    model = QAModel(LongEncoder(source), tokenizer, max_length=4096, stride=1024)
    windows = model.windows([example], with_answers=True)
    assert len(windows) >= 2 and max(len(w.input_ids) for w in windows) == 4096
    holding = [w for w in windows if w.start > 0]
    assert holding, "the answer must be labelled in some window"
    for window in holding:
        first, last = window.offsets[window.start], window.offsets[window.end]
        assert example.context[first[0] : last[1]] == example.answer_text
        assert window.token_type_ids[window.start] == 1  # a context token, not the question

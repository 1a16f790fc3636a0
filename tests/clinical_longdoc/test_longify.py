"""longify: every long variant computes the short encoder's function on inputs inside its window."""

from __future__ import annotations

import pytest
import torch
from nlprec.clinical_longdoc.encoder import LongEncoder
from nlprec.clinical_longdoc.longify import longify, tile_position_embeddings
from transformers import BigBirdModel, LongformerModel

TOLERANCE = 1e-4
KINDS = ("full", "local", "longformer", "bigbird")


def _batch(
    vocab: int, pad_id: int, length: int = 24, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (2, length), generator=generator)  # (2, L)
    mask = torch.ones_like(ids)
    ids[1, length - 7 :] = pad_id  # the second row is padded
    mask[1, length - 7 :] = 0
    return ids, mask


def _max_difference(short, long_encoder, ids, mask, global_mask=None) -> float:
    with torch.no_grad():
        expected = short(input_ids=ids, attention_mask=mask).last_hidden_state
        got = long_encoder(ids, mask, global_mask)
    return (got - expected)[mask.bool()].abs().max().item()


@pytest.mark.parametrize("kind", KINDS)
def test_bert_long_variants_match_short_encoder(tiny_bert, kind):
    long_model = longify(
        tiny_bert,
        max_length=256,
        attention=kind,
        attention_window=64,
        block_size=16,
        num_random_blocks=2,
    )
    encoder = LongEncoder(long_model).eval()
    ids, mask = _batch(tiny_bert.config.vocab_size, 0)
    assert encoder.max_length == 256
    assert _max_difference(tiny_bert, encoder, ids, mask) < TOLERANCE


@pytest.mark.parametrize("kind", KINDS)
def test_roberta_long_variants_match_short_encoder(tiny_roberta, kind):
    """RoBERTa positions start after the padding index; the offset must survive the conversion."""
    long_model = longify(
        tiny_roberta,
        max_length=128,
        attention=kind,
        attention_window=64,
        block_size=16,
        num_random_blocks=2,
    )
    ids, mask = _batch(tiny_roberta.config.vocab_size, tiny_roberta.config.pad_token_id)
    assert _max_difference(tiny_roberta, LongEncoder(long_model).eval(), ids, mask) < TOLERANCE


def test_longformer_global_attention_keeps_equivalence(tiny_bert):
    """Global projections start as copies of the local ones: global [CLS] changes nothing yet."""
    encoder = LongEncoder(
        longify(tiny_bert, max_length=256, attention="longformer", attention_window=64)
    ).eval()
    ids, mask = _batch(tiny_bert.config.vocab_size, 0)
    global_mask = torch.zeros_like(ids)
    global_mask[:, :3] = 1
    assert _max_difference(tiny_bert, encoder, ids, mask, global_mask) < TOLERANCE


def test_longformer_local_window_is_not_full_attention(tiny_bert):
    """Past the window the long model must differ from dense attention (the test can fail)."""
    full = LongEncoder(longify(tiny_bert, max_length=256, attention="full")).eval()
    local = LongEncoder(
        longify(tiny_bert, max_length=256, attention="longformer", attention_window=16)
    ).eval()
    ids = torch.randint(5, 1000, (1, 200))
    mask = torch.ones_like(ids)
    no_global = torch.zeros_like(ids)
    with torch.no_grad():
        assert (full(ids, mask) - local(ids, mask, no_global)).abs().max() > 1e-3


def test_stock_classes_and_copied_weights(tiny_bert):
    longformer = longify(tiny_bert, max_length=128, attention="longformer", attention_window=32)
    bigbird = longify(tiny_bert, max_length=128, attention="bigbird", block_size=16)
    assert isinstance(longformer, LongformerModel) and isinstance(bigbird, BigBirdModel)
    layer = longformer.encoder.layer[0].attention.self
    assert torch.equal(layer.query_global.weight, layer.query.weight)
    assert torch.equal(
        layer.value_global.bias, tiny_bert.encoder.layer[0].attention.self.value.bias
    )
    # Longformer positions start at pad_token_id + 1 = 1 for a BERT vocabulary
    assert torch.equal(
        longformer.embeddings.position_embeddings.weight[1:65],
        tiny_bert.embeddings.position_embeddings.weight,
    )


def test_tile_position_embeddings_repeats_the_table():
    source = torch.arange(2 + 4, dtype=torch.float32).unsqueeze(1)  # 2 padding rows, 4 positions
    tiled = tile_position_embeddings(source, source_offset=2, target_offset=2, max_length=10)
    assert tiled.squeeze(1).tolist() == [0, 1, 2, 3, 4, 5, 2, 3, 4, 5, 2, 3]
    shifted = tile_position_embeddings(source, source_offset=2, target_offset=0, max_length=5)
    assert shifted.squeeze(1).tolist() == [2, 3, 4, 5, 2]


def test_bigbird_stays_block_sparse_after_a_short_input(tiny_bert):
    """A stock BigBirdModel switches to full attention for good after a short input; the wrapper pins it."""
    encoder = LongEncoder(
        longify(tiny_bert, max_length=512, attention="bigbird", block_size=16, num_random_blocks=2)
    ).eval()
    short_ids = torch.randint(5, 1000, (1, 20))
    with torch.no_grad():
        encoder(short_ids, torch.ones_like(short_ids))
    assert encoder.model.attention_type == "block_sparse"


def test_bad_arguments_are_named(tiny_bert):
    with pytest.raises(ValueError, match="attention must be one of"):
        longify(tiny_bert, max_length=128, attention="sparse")
    with pytest.raises(ValueError, match="shorter than the source"):
        longify(tiny_bert, max_length=32)
    with pytest.raises(ValueError, match="attention_window"):
        longify(tiny_bert, max_length=128, attention="longformer", attention_window=48)
    with pytest.raises(TypeError, match="BERT or RoBERTa"):
        longify(longify(tiny_bert, max_length=128, attention="bigbird", block_size=16))
    encoder = LongEncoder(longify(tiny_bert, max_length=128))
    too_long = torch.ones(1, 129, dtype=torch.long)
    with pytest.raises(ValueError, match="exceeds the encoder's 128"):
        encoder(too_long, too_long)


@pytest.mark.slow
def test_minilm_long_variants_match_minilm(minilm_dir, tokenizer):
    """The bundled MiniLM, longified to 4,096 positions, matches itself to 1e-4 on real text."""
    from transformers import AutoModel

    source = AutoModel.from_pretrained(str(minilm_dir)).eval()
    batch = tokenizer(
        [
            "Patient presents with chest pain radiating to the left arm; troponin negative.",
            "No acute distress.",
        ],
        padding=True,
        return_tensors="pt",
    )
    for kind in KINDS:
        encoder = LongEncoder(longify(source, max_length=4096, attention=kind)).eval()
        assert (
            _max_difference(source, encoder, batch["input_ids"], batch["attention_mask"])
            < TOLERANCE
        ), kind


def test_sdpa_full_attention_matches_eager_reference(tiny_bert):
    """The fused SDPA path (the default) against the eager L x L reference, past the source's length."""
    sdpa = LongEncoder(longify(tiny_bert, max_length=256, attention="full")).eval()
    eager = LongEncoder(
        longify(tiny_bert, max_length=256, attention="full", attn_implementation="eager")
    ).eval()
    ids, mask = _batch(tiny_bert.config.vocab_size, 0, length=200)
    with torch.no_grad():
        difference = (sdpa(ids, mask) - eager(ids, mask))[mask.bool()].abs().max().item()
    assert difference < TOLERANCE


def test_saved_long_model_loads_by_path_and_hub_names_fail_clearly(
    tiny_bert, minilm_dir, tmp_path, monkeypatch
):
    """Published checkpoints go through the same loader as local conversions; offline, a clear error."""
    from nlprec.clinical_longdoc.longify import longify_to_dir
    from nlprec.core.models import ModelNotFound

    directory = longify_to_dir(
        tmp_path / "long",
        tiny_bert,
        tokenizer_dir=minilm_dir,
        max_length=128,
        attention="longformer",
        attention_window=64,
    )
    loaded = LongEncoder.from_pretrained(str(directory)).eval()
    assert loaded.kind == "longformer" and loaded.max_length == 128
    ids, mask = _batch(tiny_bert.config.vocab_size, 0)
    assert _max_difference(tiny_bert, loaded, ids, mask) < TOLERANCE
    monkeypatch.delenv("NLPREC_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound, match="Clinical-Longformer"):
        LongEncoder.from_pretrained("yikuan8/Clinical-Longformer")


def test_an_already_long_source_is_used_as_it_is(tiny_bert):
    """A published Clinical-Longformer checkpoint is a LongformerModel: long variants take it as is."""
    from nlprec.clinical_longdoc.variants import build_encoder, get_variant

    published_like = longify(tiny_bert, max_length=128, attention="longformer", attention_window=64)
    encoder = build_encoder(get_variant("long"), published_like)
    assert encoder.kind == "longformer" and encoder.max_length == 128
    with pytest.raises(ValueError, match="needs a short BERT/RoBERTa source"):
        build_encoder(get_variant("head"), published_like)


def test_full_attention_over_tiled_positions_warns(tiny_bert, caplog):
    """Full attention aliases tiled positions, so longify says so; the banded variant does not."""
    short = tiny_bert.config.max_position_embeddings
    with caplog.at_level("WARNING", logger="nlprec.clinical_longdoc.longify"):
        longify(tiny_bert, max_length=2 * short, attention="local", attention_window=short // 2)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    with caplog.at_level("WARNING", logger="nlprec.clinical_longdoc.longify"):
        longify(tiny_bert, max_length=2 * short, attention="full")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "attention='local'" in warnings[0]

"""Fine-tuning: negatives mining, duplicate-free batches, the InfoNCE loss, tiny training runs."""

import math

import pytest
import torch
from nlprec.ranking.training import (
    BiEncoderTrainConfig,
    CrossEncoderTrainConfig,
    TrainingExample,
    info_nce_loss,
    mine_hard_negatives,
    no_duplicate_batches,
    train_biencoder,
    train_cross_encoder,
)

DOCS = {f"d{i}": {"id": f"d{i}", "title": "", "text": f"text {i}"} for i in range(6)}


def test_mining_skips_relevant_documents():
    qrels = {"q": {"d1": 1, "d2": 1}}
    run = {"q": {"d1": 0.9, "d3": 0.8, "d2": 0.7, "d4": 0.6, "d5": 0.5}}
    examples = mine_hard_negatives({"q": "query"}, qrels, run, DOCS, n_negatives=2)
    assert [e.positive for e in examples] == ["text 1", "text 2"]
    assert all(e.negatives == ["text 3", "text 4"] for e in examples)
    skipped = mine_hard_negatives({"q": "query"}, qrels, run, DOCS, n_negatives=2, skip_top=1)
    assert skipped[0].negatives == ["text 4", "text 5"]
    assert (
        mine_hard_negatives({"q": "query"}, qrels, run, DOCS, n_negatives=4) == []
    )  # too few candidates


def test_batches_hold_no_duplicate_text():
    examples = [
        TrainingExample(query=f"q{i % 5}", positive=f"p{i}", negatives=[f"n{i % 3}"])
        for i in range(30)
    ]
    batches = no_duplicate_batches(examples, batch_size=3, seed=0)
    assert batches
    for batch in batches:
        texts = [
            t
            for i in batch
            for t in (examples[i].query, examples[i].positive, *examples[i].negatives)
        ]
        assert len(texts) == len(set(texts))
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))


def test_info_nce_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])  # positives then negatives
    expected = -math.log(math.exp(2.0) / (2 * math.exp(2.0) + 2 * math.exp(0.0)))
    assert info_nce_loss(q, d, scale=2.0).item() == pytest.approx(expected, rel=1e-5)


def _examples():
    return [
        TrainingExample(
            query=f"castle number {i}",
            positive=f"The castle {i} in Oslo",
            negatives=[f"A mill {i} in Lyon"],
        )
        for i in range(8)
    ]


def test_tiny_biencoder_and_cross_encoder_runs(tmp_path):
    from nlprec.ranking.encoder import load_encoder
    from nlprec.ranking.rerank import CrossEncoderReranker, RerankerConfig

    cfg = BiEncoderTrainConfig(batch_size=4, max_steps=1, max_seq_length=32)
    model_dir = train_biencoder("minilm", _examples(), cfg, tmp_path / "be", log=lambda _: None)
    assert load_encoder(str(model_dir)).encode(["x"]).shape == (1, 384)
    ce_cfg = CrossEncoderTrainConfig(batch_size=4, max_steps=1, max_length=32)
    ce_dir = train_cross_encoder("minilm", _examples(), ce_cfg, tmp_path / "ce", log=lambda _: None)
    scores = CrossEncoderReranker(RerankerConfig(model=str(ce_dir), max_length=32)).score(
        "castle", ["a", "b c"]
    )
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)
    with pytest.raises(ValueError, match="no training examples"):
        train_cross_encoder("minilm", [], ce_cfg, tmp_path / "none")

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


def test_mining_keeps_normalised_teacher_scores():
    qrels = {"q": {"d1": 1, "d9": 1}}
    run = {"q": {"d1": 3.0, "d3": 2.0, "d4": 1.0}}
    docs = DOCS | {"d9": {"id": "d9", "title": "", "text": "text 9"}}
    examples = mine_hard_negatives({"q": "query"}, qrels, run, docs, 2, with_teacher_scores=True)
    # d1 is the run's top (1.0); d9 was not retrieved (0.0); negatives d3, d4 -> 0.5, 0.0
    assert [e.teacher_scores for e in examples] == [[1.0, 0.5, 0.0], [0.0, 0.5, 0.0]]
    assert mine_hard_negatives({"q": "query"}, qrels, run, docs, 2)[0].teacher_scores is None


def test_listwise_targets_by_hand():
    from nlprec.ranking.training import listwise_targets

    assert listwise_targets(3, None, 0.5, 0.1).tolist() == [[1.0, 0.0, 0.0]]
    teacher = torch.tensor([[1.0, 0.0, 0.0]])
    soft = math.exp(10.0) / (math.exp(10.0) + 2.0)  # softmax(t / 0.1) of the top document
    expected = [0.5 + 0.5 * soft, 0.5 * (1 - soft) / 2, 0.5 * (1 - soft) / 2]
    got = listwise_targets(3, teacher, 0.5, 0.1)[0].tolist()
    assert got == pytest.approx(expected, rel=1e-6)
    assert sum(got) == pytest.approx(1.0)


def test_head_learning_rate_gets_its_own_group():
    from nlprec.ranking.training import _optimizer
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, num_labels=1)  # fmt: skip
    model = BertForSequenceClassification(config)
    optimizer, _ = _optimizer(model, 2e-5, 0.0, 10, head_lr=1e-3)
    lrs = [g["lr"] for g in optimizer.param_groups]
    assert lrs == [2e-5, 1e-3]
    head_ids = {id(p) for p in optimizer.param_groups[1]["params"]}
    expected = {
        id(p) for n, p in model.named_parameters() if n.startswith(("classifier", "bert.pooler"))
    }
    assert head_ids == expected and len(head_ids) == 4
    assert len(_optimizer(model, 2e-5, 0.0, 10)[0].param_groups) == 1


def test_distillation_needs_listwise_and_teacher_scores(tmp_path):
    cfg = CrossEncoderTrainConfig(batch_size=4, max_steps=1, max_length=32, distill_weight=0.5)
    with pytest.raises(ValueError, match="teacher_scores"):
        train_cross_encoder("minilm", _examples(), cfg, tmp_path / "a")
    bce = cfg.model_copy(update={"loss": "bce"})
    with pytest.raises(ValueError, match="listwise"):
        train_cross_encoder("minilm", _examples(), bce, tmp_path / "b")

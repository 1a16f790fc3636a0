"""Fine-tuning: negatives mining, duplicate-free batches, the InfoNCE loss, tiny training runs."""

import math

import pytest
import torch
from nlprec.ranking.training import (
    BiEncoderTrainConfig,
    CrossEncoderTrainConfig,
    TrainingExample,
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


def test_listwise_loss_is_softmax_cross_entropy_over_each_list():
    """The library loss behind ``listwise``: -log softmax(s(q, d+) | s(q, d+), s(q, d-_1..n))."""
    from nlprec.ranking.rerank import load_cross_encoder
    from nlprec.ranking.training import cross_encoder_loss

    model = load_cross_encoder("minilm", 32)
    model.eval()
    chosen = _examples()[:3]
    loss_fn, to_inputs = cross_encoder_loss(model, CrossEncoderTrainConfig(loss="listwise"))
    inputs, labels = to_inputs(chosen)
    with torch.no_grad():
        got = loss_fn(inputs, labels).item()
        logits = torch.tensor(
            [model.predict([(e.query, d) for d in [e.positive, *e.negatives]], activation_fn=torch.nn.Identity())
             for e in chosen]
        )  # fmt: skip
    expected = torch.nn.functional.cross_entropy(logits, torch.zeros(3, dtype=torch.long)).item()
    assert got == pytest.approx(expected, rel=1e-4)


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


def test_head_learning_rate_gets_its_own_group():
    from nlprec.ranking.rerank import load_cross_encoder
    from nlprec.ranking.training import optimizer_and_schedule as _optimizer

    model = load_cross_encoder("minilm", 32)
    optimizer, _ = _optimizer(model, 2e-5, 0.0, 10, head_lr=1e-3)
    lrs = [g["lr"] for g in optimizer.param_groups]
    assert lrs == [2e-5, 1e-3]
    head_ids = {id(p) for p in optimizer.param_groups[1]["params"]}
    expected = {
        id(p) for n, p in model.named_parameters() if n.endswith(("classifier.weight", "classifier.bias", "pooler.dense.weight", "pooler.dense.bias"))
    }
    assert head_ids == expected and len(head_ids) == 4
    assert len(_optimizer(model, 2e-5, 0.0, 10)[0].param_groups) == 1


@pytest.mark.parametrize("loss", ["bce", "listnet", "lambda"])
def test_other_cross_encoder_losses_train(tmp_path, loss):
    cfg = CrossEncoderTrainConfig(batch_size=4, max_steps=1, max_length=32, loss=loss)
    assert (train_cross_encoder("minilm", _examples(), cfg, tmp_path, log=lambda _: None) / "config.json").exists()


def test_biencoder_training_gives_queries_and_documents_their_prompts(tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    seen = []
    original = SentenceTransformer.preprocess

    def spy(self, texts, prompt=None, **kwargs):
        seen.append((texts[0], prompt))
        return original(self, texts, prompt=prompt, **kwargs)

    monkeypatch.setattr(SentenceTransformer, "preprocess", spy)
    from nlprec.ranking import encoder

    load = encoder.load_encoder

    def load_with_prompts(*args, **kwargs):
        model = load(*args, **kwargs)
        model.prompts = {"query": "query: ", "document": "passage: "}
        return model

    monkeypatch.setattr(encoder, "load_encoder", load_with_prompts)
    cfg = BiEncoderTrainConfig(batch_size=4, max_steps=1, max_seq_length=32)
    train_biencoder("minilm", _examples(), cfg, tmp_path, log=lambda _: None)
    prompts = {text.split()[0]: prompt for text, prompt in seen}
    assert prompts == {"castle": "query: ", "The": "passage: ", "A": "passage: "}


def test_micro_batches_give_the_whole_batch_gradient():
    from nlprec.ranking.rerank import load_cross_encoder
    from nlprec.ranking.training import _accumulate, cross_encoder_loss

    model = load_cross_encoder("minilm", 32)
    model.eval()  # no dropout: the two passes must see the same network
    loss_fn, to_inputs = cross_encoder_loss(model, CrossEncoderTrainConfig(loss="listwise"))

    def batch_loss(chosen):
        return loss_fn(*to_inputs(chosen))

    grads = []
    for micro in (None, 2):
        model.zero_grad()
        loss = _accumulate(batch_loss, _examples()[:6], micro)
        grads.append((loss.item(), model.model.classifier.weight.grad.clone()))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-6)

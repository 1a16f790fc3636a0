"""Fine-tuning on sentence-transformers' trainers: negatives mining, duplicate-free batches, the
library losses on our data format, prompts, the head learning rate, memory-bounded micro-batches,
the time budget and metric forwarding, tiny training runs."""

import math

import pytest
import torch
from nlprec.ranking.training import (
    BiEncoderTrainConfig,
    CrossEncoderTrainConfig,
    TimeBudget,
    TrainingExample,
    TrainingSetup,
    biencoder_trainer,
    cross_encoder_trainer,
    fine_tune,
    mine_hard_negatives,
)
from safetensors.torch import load_file

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


def test_batches_hold_no_duplicate_text(tmp_path):
    from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

    examples = [
        TrainingExample(query=f"q{i % 5}", positive=f"p{i}", negatives=[f"n{i % 3}"])
        for i in range(30)
    ]
    cfg = BiEncoderTrainConfig(batch_size=3, max_seq_length=32)
    sampler = (
        biencoder_trainer("minilm", examples, cfg, TrainingSetup(tmp_path))
        .get_train_dataloader()
        .batch_sampler
    )
    assert isinstance(sampler, NoDuplicatesBatchSampler)
    batches = list(sampler)
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


def test_listwise_loss_is_softmax_cross_entropy_over_each_list(tmp_path):
    """The trainer's loss on a batch of our data (``listwise``):
    -log softmax(s(q, d+) | s(q, d+), s(q, d-_1..n)), averaged over the lists."""
    cfg = CrossEncoderTrainConfig(batch_size=3, max_length=32, loss="listwise")
    trainer = cross_encoder_trainer("minilm", _examples()[:3], cfg, TrainingSetup(tmp_path))
    model = trainer.model
    model.eval()
    batch = next(iter(trainer.get_train_dataloader()))
    queries, docs = batch["query"], batch["docs"]
    with torch.no_grad():
        got = trainer.compute_loss(model, dict(batch)).item()
        logits = torch.stack([
            torch.as_tensor(model.predict([(q, d) for d in ds], activation_fn=torch.nn.Identity()))
            for q, ds in zip(queries, docs, strict=True)
        ])  # fmt: skip
    assert all(ds[0].startswith("The castle") for ds in docs)  # the positive comes first
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

    logged = []
    cfg = BiEncoderTrainConfig(batch_size=4, max_steps=1, max_seq_length=32)
    model_dir = fine_tune("minilm", _examples(), cfg, tmp_path / "be", log=lambda _: None,
                                log_metrics=lambda metrics, step: logged.append((step, metrics)))  # fmt: skip
    assert load_encoder(str(model_dir)).encode(["x"]).shape == (1, 384)
    step, first = logged[0]
    assert (
        step == 1 and math.isfinite(first["biencoder.loss"]) and "biencoder.learning_rate" in first
    )
    ce_cfg = CrossEncoderTrainConfig(batch_size=4, max_steps=1, max_length=32)
    ce_dir = fine_tune("minilm", _examples(), ce_cfg, tmp_path / "ce", log=lambda _: None)
    scores = CrossEncoderReranker(RerankerConfig(model=str(ce_dir), max_length=32)).score(
        "castle", ["a", "b c"]
    )
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)
    with pytest.raises(ValueError, match="no training examples"):
        fine_tune("minilm", [], ce_cfg, tmp_path / "none")


def test_head_learning_rate_gets_its_own_group(tmp_path):
    from sentence_transformers.cross_encoder import CrossEncoderTrainer

    cfg = CrossEncoderTrainConfig(batch_size=4, max_length=32, lr=2e-5, head_lr=1e-3)
    trainer = cross_encoder_trainer("minilm", _examples(), cfg, TrainingSetup(tmp_path))
    optimizer = trainer.create_optimizer()
    lrs = [g["lr"] for g in optimizer.param_groups]
    assert lrs == [2e-5, 1e-3]
    head_ids = {id(p) for p in optimizer.param_groups[1]["params"]}
    expected = {
        id(p)
        for n, p in trainer.model.named_parameters()
        if n.endswith(
            ("classifier.weight", "classifier.bias", "pooler.dense.weight", "pooler.dense.bias")
        )
    }
    assert head_ids == expected and len(head_ids) == 4
    plain = cross_encoder_trainer(
        "minilm", _examples(), cfg.model_copy(update={"head_lr": None}), TrainingSetup(tmp_path)
    )
    assert type(plain) is CrossEncoderTrainer


@pytest.mark.parametrize("loss", ["bce", "listnet", "lambda"])
def test_other_cross_encoder_losses_train(tmp_path, loss):
    cfg = CrossEncoderTrainConfig(batch_size=4, max_steps=1, max_length=32, loss=loss)
    assert (
        fine_tune("minilm", _examples(), cfg, tmp_path, log=lambda _: None) / "config.json"
    ).exists()


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
    fine_tune("minilm", _examples(), cfg, tmp_path, log=lambda _: None)
    pairs = {
        (text.split()[0], prompt) for text, prompt in seen
    }  # (also the model card's, unprompted)
    assert {("castle", "query: "), ("The", "passage: "), ("A", "passage: ")} <= pairs
    assert not pairs & {("castle", "passage: "), ("The", "query: "), ("A", "query: ")}


def _weights_after_one_step(model_dir, cfg, out):
    return load_file(
        fine_tune(str(model_dir), _examples()[:4], cfg, out, log=lambda _: None) / "model.safetensors"
    )


def _assert_same_weights(one, two):
    assert one.keys() == two.keys()
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, rtol=1e-4, atol=1e-5, msg=name)


def test_cross_encoder_micro_batches_take_the_whole_batch_step(tmp_path, tiny_encoder):
    """Memory bounded by ``micro_batch_size`` lists per forward + backward (gradient accumulation):
    the same optimisation step as the whole batch at once."""
    cfg = CrossEncoderTrainConfig(
        batch_size=4, max_steps=1, max_length=32, lr=1e-3, warmup_ratio=0.0
    )
    whole = _weights_after_one_step(tiny_encoder, cfg, tmp_path / "whole")
    micro_cfg = cfg.model_copy(update={"micro_batch_size": 2})
    _assert_same_weights(
        whole,
        _weights_after_one_step(tiny_encoder, micro_cfg, tmp_path / "micro"),
    )


def test_cached_mnrl_gives_the_mnrl_gradient_in_mini_batches(tmp_path, tiny_encoder):
    """``cached_mnrl`` (GradCache, 2 texts per forward pass) gives the gradient ``mnrl`` gives on
    the same batch of the trainer."""
    from nlprec.ranking.training import biencoder_loss

    cfg = BiEncoderTrainConfig(batch_size=4, max_seq_length=32)
    trainer = biencoder_trainer(str(tiny_encoder), _examples()[:4], cfg, TrainingSetup(tmp_path))
    batch = next(iter(trainer.get_train_dataloader()))
    grads = []
    for loss in ("mnrl", "cached_mnrl"):
        trainer.model.zero_grad()
        trainer.loss = biencoder_loss(
            trainer.model, cfg.model_copy(update={"loss": loss, "mini_batch_size": 2})
        )
        trainer.compute_loss(trainer.model, dict(batch)).backward()
        grads.append(
            {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        )
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_time_budget_stops_training(tmp_path):
    cfg = BiEncoderTrainConfig(batch_size=2, max_steps=3, max_seq_length=32)
    trainer = biencoder_trainer(
        "minilm", _examples(), cfg, TrainingSetup(tmp_path, callbacks=[TimeBudget(0.0)])
    )
    trainer.train()
    assert trainer.state.global_step == 1


def test_a_batch_that_does_not_split_into_micro_batches_is_refused(tmp_path):
    cfg = CrossEncoderTrainConfig(batch_size=16, micro_batch_size=3, max_length=32)
    with pytest.raises(ValueError, match="batch_size 16 does not split"):
        cross_encoder_trainer("minilm", _examples(), cfg, TrainingSetup(tmp_path))

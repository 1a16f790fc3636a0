"""MLM chunking, batching with replay, deterministic evaluation, and the continual-learning report."""

import random

import pytest
from nlprec.clinical_distill.continual import ContinualConfig, continual_learning
from nlprec.clinical_distill.generated import clinical_notes, general_text
from nlprec.clinical_distill.mlm import (
    MLMConfig,
    evaluate_mlm,
    mixed_batches,
    tokenize_chunks,
    train_mlm,
)


def test_chunks_are_framed_and_bounded(tokenizer):
    chunks = tokenize_chunks(tokenizer, clinical_notes(20), max_len=32)
    assert chunks and all(len(c) <= 32 for c in chunks)
    assert all(c[0] == tokenizer.cls_token_id and c[-1] == tokenizer.sep_token_id for c in chunks)


def test_replay_share_of_each_batch():
    batches = mixed_batches(list(range(100)), list(range(1000, 1050)), 8, 0.25, random.Random(0))
    for _ in range(20):
        batch = next(batches)
        assert len(batch) == 8 and sum(x >= 1000 for x in batch) == 2


def test_evaluation_is_deterministic_and_training_helps(teacher, tokenizer):
    texts = clinical_notes(12)
    first = evaluate_mlm(teacher, tokenizer, texts, max_len=24)
    assert first == evaluate_mlm(teacher, tokenizer, texts, max_len=24)
    cfg = MLMConfig(steps=12, batch_size=4, max_len=24, lr=5e-3, warmup_ratio=0.0)
    train_mlm(teacher, tokenizer, texts, cfg, show_progress=False)
    assert evaluate_mlm(teacher, tokenizer, texts, max_len=24)["loss"] < first["loss"]


def test_continual_learning_reports_forgetting_and_gain(teacher, tokenizer):
    cfg = ContinualConfig(
        mlm=MLMConfig(steps=3, batch_size=4, max_len=32),
        replay_ratios=[0.0, 0.5],
        head_warmup_steps=2,
    )
    scores, models = continual_learning(
        teacher,
        tokenizer,
        clinical_notes(20),
        general_text(20),
        clinical_notes(8, seed=1),
        general_text(8, seed=1),
        cfg,
    )
    assert set(scores) == {"start", "replay_0.0", "replay_0.5"} and set(models) == {0.0, 0.5}
    for key in ("replay_0.0", "replay_0.5"):
        assert scores[key]["forgetting"] == pytest.approx(
            scores["start"]["general_acc"] - scores[key]["general_acc"]
        )
        assert scores[key]["gain"] == pytest.approx(
            scores[key]["clinical_acc"] - scores["start"]["clinical_acc"]
        )

"""Linear probe (LP-FT head initialisation, frozen baseline) and mean pooling."""

from __future__ import annotations

import pytest
import torch
from nlprec.clinical_longdoc.classify import DocumentClassifierModel
from nlprec.clinical_longdoc.data import generate_notes
from nlprec.clinical_longdoc.encoder import LongEncoder
from nlprec.clinical_longdoc.heads import DocumentClassifier
from nlprec.clinical_longdoc.probe import fit_linear_probe
from nlprec.clinical_longdoc.training import TrainSettings

FAST = TrainSettings(epochs=1, lr=1e-3, max_tokens=2048, progress=False)


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well-separated classes in 5 dimensions, on an offset and scale far from standard."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centres = torch.tensor([[4.0, 0, 0, 0, 0], [0, 4.0, 0, 0, 0], [0, 0, 4.0, 0, 0]])
    x = centres[y] + torch.randn(n, 5, generator=generator)
    return 100.0 + 50.0 * x, y


def test_probe_separates_classes_and_reads_raw_features():
    x, y = _blobs(90, seed=0)
    dev_x, dev_y = _blobs(30, seed=1)
    weight, bias, chosen = fit_linear_probe(x, y, 3, dev_x, dev_y, l2_grid=(1e-3, 1e-1))
    assert weight.shape == (3, 5) and bias.shape == (3,)
    # the standardisation is folded into the weights: raw features in, correct classes out
    assert ((dev_x @ weight.T + bias).argmax(-1) == dev_y).float().mean() > 0.95
    assert chosen["l2"] in (1e-3, 1e-1) and chosen["dev_macro_f1"] > 0.95


def test_probe_without_dev_uses_the_middle_penalty_and_rejects_bad_shapes():
    x, y = _blobs(30, seed=0)
    _, _, chosen = fit_linear_probe(x, y, 3, l2_grid=(1e-4, 1e-3, 1e-2))
    assert chosen["l2"] == 1e-3
    with pytest.raises(ValueError, match="one target each"):
        fit_linear_probe(x, y[:-1], 3)


def test_mean_pooling_ignores_padding(tiny_bert):
    head = DocumentClassifier(LongEncoder(tiny_bert), 2, pooling="mean")
    head.eval()
    ids = torch.tensor([[101, 2000, 2001, 102]])
    alone = head.features(ids, torch.ones_like(ids))
    padded_ids = torch.tensor([[101, 2000, 2001, 102, 0, 0]])
    padded = head.features(padded_ids, torch.tensor([[1, 1, 1, 1, 0, 0]]))
    assert torch.allclose(alone, padded, atol=1e-5)
    with pytest.raises(ValueError, match="pooling must be one of"):
        DocumentClassifier(LongEncoder(tiny_bert), 2, pooling="max")


def test_frozen_probe_and_lp_ft(tiny_bert, tokenizer, tmp_path):
    notes = generate_notes(8, seed=0, filler_sentences=(2, 4))
    labels = sorted(set(notes.labels))
    frozen = DocumentClassifierModel(
        LongEncoder(tiny_bert), tokenizer, labels, "chunk_mean", max_length=64, pooling="mean"
    )
    encoder_before = {k: v.clone() for k, v in frozen.network.encoder.state_dict().items()}
    settings = TrainSettings(epochs=0, max_tokens=2048, progress=False)
    history = frozen.fit(notes, notes.take(4), settings, linear_probe=True)
    assert history["best_epoch"] == -1 and history["probe"]["l2"] > 0
    assert all(  # epochs=0: the encoder is untouched, only the head was fitted
        torch.equal(encoder_before[k], v) for k, v in frozen.network.encoder.state_dict().items()
    )
    assert frozen.network.classifier.weight.abs().sum() > 0
    frozen.save(tmp_path / "frozen")
    reloaded = DocumentClassifierModel.load(tmp_path / "frozen")
    assert reloaded.network.pooling == "mean"
    assert torch.allclose(
        frozen.predict_proba(notes.texts[:2], FAST),
        reloaded.predict_proba(notes.texts[:2], FAST),
        atol=1e-5,
    )
    tuned = DocumentClassifierModel(
        LongEncoder(tiny_bert), tokenizer, labels, "head", max_length=64, pooling="mean"
    )
    history = tuned.fit(notes, notes.take(4), FAST, linear_probe=True)
    assert "start_dev" in history and history["best_epoch"] in (-1, 0)
    assert len(history["dev"]) == 1

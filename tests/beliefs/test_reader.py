"""The proposition-conditioned reader: agreement with a loop reference, prefix causality, and the
classic learnability check (one small batch is fitted to 100 %, every label included)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nlprec.beliefs.generator import GeneratorConfig, generate_stories
from nlprec.beliefs.losses import belief_cross_entropy
from nlprec.beliefs.model import BreakpointConfig, BreakpointModel
from nlprec.beliefs.reader import BreakpointReader, reference_read
from nlprec.beliefs.records import LABELS, Story
from nlprec.beliefs.training import predict_breakpoint

OVERFIT_STEPS = 150


def test_reader_matches_its_loop_reference():
    torch.manual_seed(0)
    reader = BreakpointReader(hidden=12, dim=8, heads=2)
    with torch.no_grad():  # non-zero "nothing relevant" slot so that it is exercised
        reader.null_key.normal_()
        reader.null_value.normal_()
    hidden = torch.randn(2, 4, 12)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    states = F.normalize(torch.randn(2, 4, 8), dim=-1)
    props = F.normalize(torch.randn(2, 3, 8), dim=-1)
    with torch.no_grad():
        fast = reader(hidden, mask, states, props)
        slow = reference_read(reader, hidden, mask, states, props)
    torch.testing.assert_close(fast[0], slow[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fast[1, :2], slow[1, :2], atol=1e-5, rtol=1e-4)  # real breakpoints


@torch.no_grad()
def test_with_prefix_attention_beliefs_ignore_later_sentences(tiny_encoder):
    torch.manual_seed(0)
    model = BreakpointModel(
        BreakpointConfig(encoder=tiny_encoder, proj_dim=16, reader="attention")
    ).eval()
    sentences = ["Mary went to the park.", "John went to the office.", "Mary went home."]
    props = ["Mary is in the park", "John is in the office"]
    full = Story("full", sentences, props, [])
    cut = Story("cut", sentences[:2], props, [])
    whole = predict_breakpoint(model, [full], "cpu")[0][0]  # [3, 2, 3]
    prefix = predict_breakpoint(model, [cut], "cpu")[0][0]  # [2, 2, 3]
    np.testing.assert_allclose(whole[:2], prefix, atol=1e-5)


@pytest.mark.parametrize("reader", ["none", "attention"])
def test_one_small_batch_is_fitted_on_every_label(tiny_encoder, reader):
    """The classic bug check: a model that cannot overfit four stories has a wiring bug."""
    torch.manual_seed(0)
    stories = generate_stories(
        GeneratorConfig(n_stories=4, min_sentences=3, max_sentences=4, n_persons=2, n_locations=3)
    )
    model = BreakpointModel(BreakpointConfig(encoder=tiny_encoder, proj_dim=32, reader=reader))
    batch = model.collate(stories)
    assert {int(v) for v in batch.labels.unique() if v >= 0} == set(range(len(LABELS)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only contend on a shared machine
    try:
        for _ in range(OVERFIT_STEPS):
            loss = belief_cross_entropy(model(batch), batch.labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    with torch.no_grad():
        predicted = model(batch).argmax(-1)
    real = batch.labels >= 0
    assert bool((predicted[real] == batch.labels[real]).all())

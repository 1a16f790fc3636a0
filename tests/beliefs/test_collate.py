"""Collation invariants: where each breakpoint sits in the token sequence, and which label and
proposition string each scored pair refers to (checks for off-by-one and shuffled mappings)."""

from __future__ import annotations

import torch
from nlprec.beliefs.model import BREAKPOINT_TOKEN, BreakpointConfig, BreakpointModel
from nlprec.beliefs.records import Story


def _stories() -> list[Story]:
    # different lengths, so the shorter story is padded; propositions shared in another order
    return [
        Story(
            "long",
            [
                "Mary moved to the bathroom.",
                "John went to the hallway.",
                "Mary went to the garden.",
            ],
            ["Mary is in the garden", "John is in the hallway", "Mary is in the bathroom"],
            [[1, 2, 0], [1, 0, 0], [0, 0, 1]],
        ),
        Story(
            "short",
            ["Daniel travelled to the office."],
            ["Mary is in the bathroom", "Daniel is in the office"],
            [[2, 0]],
        ),
    ]


def test_each_breakpoint_follows_the_last_token_of_its_sentence(tiny_encoder):
    model = BreakpointModel(BreakpointConfig(encoder=tiny_encoder, proj_dim=16))
    stories = _stories()
    batch = model.collate(stories)
    for b, story in enumerate(stories):
        tokens = model.tokenizer.convert_ids_to_tokens(batch.input_ids[b])
        start = 1  # after [CLS]
        for t, sentence in enumerate(story.sentences):
            expected = model.tokenizer.tokenize(sentence)
            position = int(batch.breakpoint_positions[b, t])
            assert tokens[position] == BREAKPOINT_TOKEN
            assert tokens[start:position] == expected  # exactly sentence t precedes [BRK]_t
            start = position + 1
        assert int(batch.breakpoint_mask[b].sum()) == len(story.sentences)


def test_proposition_index_and_labels_keep_each_storys_order(tiny_encoder):
    model = BreakpointModel(BreakpointConfig(encoder=tiny_encoder, proj_dim=16))
    stories = _stories()
    batch = model.collate(stories)
    for b, story in enumerate(stories):
        for p, prop in enumerate(story.propositions):
            ids = batch.prop_input_ids[batch.prop_index[b, p]]
            ids = ids[batch.prop_attention[batch.prop_index[b, p]].bool()]
            assert model.tokenizer.decode(ids, skip_special_tokens=True) == prop.lower()
        T, P = len(story.sentences), len(story.propositions)
        assert torch.equal(batch.labels[b, :T, :P], torch.tensor(story.labels))
        assert (batch.labels[b, T:] == -100).all() and (batch.labels[b, :, P:] == -100).all()

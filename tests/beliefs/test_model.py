import numpy as np
import pytest
import torch
from nlprec.beliefs.generator import GeneratorConfig, generate_stories
from nlprec.beliefs.losses import constraint_loss, implication_truth
from nlprec.beliefs.metrics import evaluate
from nlprec.beliefs.model import (
    BreakpointConfig,
    BreakpointModel,
    attention_mask_4d,
    reference_prefix_states,
)
from nlprec.beliefs.qa import one_hot
from nlprec.beliefs.records import Constraint, Story, StoryError
from nlprec.beliefs.training import TrainConfig, predict_breakpoint, train_breakpoint


@pytest.fixture(scope="module")
def stories():
    return generate_stories(
        GeneratorConfig(n_stories=6, max_sentences=6, n_persons=2, n_locations=3, n_objects=1)
    )


def make_model(encoder, **overrides):
    torch.manual_seed(0)
    return BreakpointModel(BreakpointConfig(encoder=encoder, proj_dim=16, **overrides)).eval()


@torch.no_grad()
def test_prefix_attention_equals_encoding_each_prefix_alone(tiny_encoder, stories):
    model = make_model(tiny_encoder, attention="prefix")
    states = model.breakpoint_states(model.collate(stories))  # [B, T, d], padded batch
    for b, story in enumerate(stories):
        reference = reference_prefix_states(model, story)
        torch.testing.assert_close(
            states[b, : story.n_breakpoints], reference, atol=1e-5, rtol=1e-4
        )


@torch.no_grad()
def test_bidirectional_attention_lets_early_breakpoints_see_later_text(tiny_encoder, stories):
    model = make_model(tiny_encoder, attention="bidirectional")
    story = max(stories, key=lambda s: s.n_breakpoints)
    states = model.breakpoint_states(model.collate([story]))[0]
    reference = reference_prefix_states(model, story)
    assert torch.allclose(states[-1], reference[-1], atol=1e-5)  # the full story is the last prefix
    assert not torch.allclose(states[0], reference[0], atol=1e-3)


def test_prefix_mask_gives_the_gradients_of_encoding_each_prefix_alone(tiny_encoder, stories):
    """Training sees the same function as the reference: encoder gradients agree too."""
    model = make_model(tiny_encoder, attention="prefix")
    story = max(stories, key=lambda s: s.n_breakpoints)
    weights = torch.randn(16, generator=torch.Generator().manual_seed(1))

    def encoder_grads(states: torch.Tensor) -> dict[str, torch.Tensor]:
        model.zero_grad()
        (states @ weights).sum().backward()
        return {
            n: p.grad.clone() for n, p in model.encoder.named_parameters() if p.grad is not None
        }

    one_pass = encoder_grads(model.breakpoint_states(model.collate([story]))[0])
    reference = encoder_grads(reference_prefix_states(model, story))
    assert one_pass.keys() == reference.keys()
    for name, grad in reference.items():
        torch.testing.assert_close(one_pass[name], grad, atol=1e-5, rtol=1e-3, msg=name)


def test_frozen_encoder_fraction_trains_the_heads_only(tiny_encoder, stories):
    model = make_model(tiny_encoder, reader="attention")
    encoder_before = [p.detach().clone() for p in model.encoder.parameters()]
    heads_before = [p.detach().clone() for p in model.reader.parameters()]
    cfg = TrainConfig(epochs=1, batch_size=3, frozen_encoder_fraction=1.0)
    train_breakpoint(model, stories, cfg, "cpu")
    assert all(torch.equal(a, b) for a, b in zip(encoder_before, model.encoder.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(heads_before, model.reader.parameters()))


def test_a_time_budget_with_a_frozen_encoder_trains(tiny_encoder, stories):
    """The bAbI recipe: heads alone for a share of a time budget (max_seconds), then everything."""
    model = make_model(tiny_encoder, reader="attention")
    cfg = TrainConfig(epochs=1, batch_size=3, frozen_encoder_fraction=0.15, max_seconds=30)
    stats = train_breakpoint(model, stories, cfg, "cpu")
    assert stats["train_steps"] >= 1


def test_mask_matches_a_loop_reference():
    groups = torch.tensor([[0, 1, 1, 2, 2, 3, 1 << 30]])
    mask = attention_mask_4d(groups, "prefix", torch.float32)[0, 0] == 0
    for q in range(7):
        for k in range(7):
            expected = k == 0 or (groups[0, k] <= groups[0, q] and groups[0, k] != 1 << 30)
            assert bool(mask[q, k]) == bool(expected)


@pytest.mark.parametrize("scorer", ["dot", "bilinear", "mlp"])
def test_scorers_give_three_way_logits_per_breakpoint_and_proposition(
    tiny_encoder, stories, scorer
):
    model = make_model(tiny_encoder, scorer=scorer)
    batch = model.collate(stories)
    logits = model(batch)
    T = max(s.n_breakpoints for s in stories)
    P = max(len(s.propositions) for s in stories)
    assert logits.shape == (len(stories), T, P, 3)
    unique = {p for s in stories for p in s.propositions}
    assert batch.prop_input_ids.shape[0] == len(unique)  # each unique string encoded once


def test_bad_input_is_an_error_naming_the_story(tiny_encoder, stories):
    model = make_model(tiny_encoder, max_length=16, max_prop_length=6)
    with pytest.raises(StoryError, match=repr(stories[0].story_id) + ".*exceed max_length"):
        model.collate(
            [Story(stories[0].story_id, stories[0].sentences * 5, ["Mary is in the park"], [])]
        )
    long_prop = Story(
        "long-prop", ["Mary went to the park."], ["Mary is in the very very long park name"], []
    )
    with pytest.raises(StoryError, match="'long-prop': proposition .* longer than max_prop_length"):
        make_model(tiny_encoder, max_prop_length=6).collate([long_prop])
    with pytest.raises(StoryError, match="'empty': empty story"):
        model.collate([Story("empty", [], [], [])])


@pytest.mark.parametrize("reader", ["none", "attention"])
def test_save_and_load_reproduce_predictions(tiny_encoder, stories, tmp_path, reader):
    model = make_model(tiny_encoder, scorer="bilinear", reader=reader)
    before, _ = predict_breakpoint(model, stories, "cpu")
    loaded = BreakpointModel.load(model.save(tmp_path / "m"))
    after, _ = predict_breakpoint(loaded, stories, "cpu")
    for a, b in zip(before, after):
        np.testing.assert_allclose(a, b, atol=1e-5)


def constraint_truth_loop(probs, constraints):
    """Reference: the product t-norm implication, one (breakpoint, constraint) at a time."""
    B, T, _, _ = probs.shape
    out = torch.zeros(B, T, constraints.shape[1])
    for b in range(B):
        for t in range(T):
            for c, (a1, a2, cons, label) in enumerate(constraints[b].tolist()):
                antecedent = probs[b, t, a1, 0] * (probs[b, t, a2, 0] if a2 >= 0 else 1.0)
                out[b, t, c] = 1 - antecedent * (1 - probs[b, t, cons, label])
    return out


def test_constraint_truth_matches_loop_reference():
    torch.manual_seed(0)
    probs = torch.randn(2, 3, 5, 3).softmax(-1)
    constraints = torch.tensor([[[0, -1, 1, 1], [0, 2, 3, 0]], [[4, -1, 0, 2], [1, 3, 2, 1]]])
    torch.testing.assert_close(
        implication_truth(probs, constraints), constraint_truth_loop(probs, constraints)
    )


def test_constraint_loss_is_zero_when_satisfied_and_positive_when_violated():
    constraints = torch.tensor([[[0, -1, 1, 1]]])  # prop 0 true -> prop 1 false
    ones = torch.ones(1, 1, dtype=torch.bool)
    satisfied = torch.log(torch.tensor([[[[1.0, 1e-9, 1e-9], [1e-9, 1.0, 1e-9]]]]))
    violated = torch.log(torch.tensor([[[[1.0, 1e-9, 1e-9], [1.0, 1e-9, 1e-9]]]]))
    assert constraint_loss(satisfied, constraints, ones, ones) < 1e-6
    assert constraint_loss(violated, constraints, ones, ones) > 5


def test_metrics_on_gold_beliefs_are_perfect(stories):
    metrics = evaluate(stories, [one_hot(s.labels) for s in stories])
    assert metrics["prop_acc"] == 1.0 and metrics["macro_f1"] == 1.0
    assert metrics["all_correct"] == 1.0 and metrics["qa_acc"] == 1.0
    assert metrics["constraint_violation"] == 0.0


def test_violation_rate_counts_broken_implications():
    story = Story("s", ["x"], ["a", "b"], [[0, 1]], [Constraint((0,), 1, 1)])
    both_true = np.array([[[1.0, 0, 0], [1.0, 0, 0]]])
    assert evaluate([story], [both_true])["constraint_violation"] == 1.0


def test_training_lowers_the_loss_on_generated_worlds(tiny_encoder):
    stories = generate_stories(
        GeneratorConfig(n_stories=16, max_sentences=4, n_persons=2, n_locations=3, n_objects=1)
    )
    model = make_model(tiny_encoder, constraint_weight=0.1)
    before = evaluate(stories, predict_breakpoint(model, stories, "cpu")[0])["prop_acc"]
    stats = train_breakpoint(
        model, stories, TrainConfig(epochs=5, batch_size=8, lr=1e-3, head_lr=3e-3), "cpu"
    )
    after = evaluate(stories, predict_breakpoint(model, stories, "cpu")[0])["prop_acc"]
    assert stats["train_pairs_per_s"] > 0
    assert after > before + 0.1

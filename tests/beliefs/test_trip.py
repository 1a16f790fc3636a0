"""TRIP: loader (labels, split, bad input), the three tiers, and the pipeline on a tiny slice."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from nlprec.beliefs.records import FALSE, IGNORE, TRUE, UNKNOWN, StoryError
from nlprec.beliefs.trip import (
    example_groups,
    load_trip,
    pair_stories,
    read_pairs,
    split_pairs,
    with_pair_partners,
)
from nlprec.beliefs.trip_tiers import (
    belief_tiers,
    conflict_evidence,
    conflict_matrix,
    reference_tiers,
)

ROOT = Path(__file__).resolve().parents[2]


def _states(n: int, **by_sentence: dict) -> dict:
    return {str(t): dict(by_sentence.get(f"s{t}", {})) for t in range(n)}


def make_pair(example_id: str = "7-C0", story_label: int = 0) -> dict:
    """A hand-made example: the implausible story breaks the vase, then puts flowers in it."""
    good = ["Ann picked up the vase.", "Ann filled the vase with water.", "Ann put flowers in it."]
    bad = [
        "Ann picked up the vase.",
        "Ann smashed the vase on the floor.",
        "Ann put flowers in it.",
    ]
    stories = {f"story{story_label}": "\n".join(good), f"story{1 - story_label}": "\n".join(bad)}
    pre = {
        "vase": _states(3, s0={"location": 2}, s2={"pieces": 1, "contain": 1}),
        "Ann": _states(3),
    }
    eff = {
        "vase": _states(3, s0={"location": 2}, s1={"pieces": 2, "functional": 1}),
        "Ann": _states(3, s1={"h_location": 2}),
    }
    return {
        "example_id": example_id,
        "story_label": story_label,
        "story_pred": story_label,
        "conflict_label": [1, 2],
        "conflict_pred": [1, 2],
        "preconditions_label": pre,
        "preconditions_pred": copy.deepcopy(pre),
        "effects_label": eff,
        "effects_pred": copy.deepcopy(eff),
        **stories,
    }


def _onehot(story) -> np.ndarray:
    labels = np.asarray(story.labels)
    probs = np.zeros((*labels.shape, 3))
    for (t, p), label in np.ndenumerate(labels):
        probs[t, p, label if label >= 0 else UNKNOWN] = 1.0
    return probs


def test_labels_follow_trip_classes():
    plausible, implausible = pair_stories(make_pair())
    assert implausible.meta["trip_conflict"] == [1, 2] and plausible.meta["trip_conflict"] is None
    index = {text: i for i, text in enumerate(implausible.propositions)}
    assert implausible.labels[1][index["the vase is in pieces"]] == TRUE
    assert implausible.labels[1][index["the vase is functional"]] == FALSE
    assert implausible.labels[2][index["the vase was in pieces"]] == FALSE
    assert implausible.labels[2][index["the vase was occupied"]] == FALSE
    assert implausible.labels[0][index["the vase is picked up"]] == TRUE
    assert implausible.labels[0][index["the vase is put down"]] == UNKNOWN
    assert implausible.labels[1][index["Ann moves somewhere new"]] == TRUE
    assert "Ann is hot" not in index and "the vase is dressed" not in index  # human/object split
    # the plausible story shares sentences 0 and 2 (same labels) and differs at 1 (not scored)
    assert plausible.labels[0] == implausible.labels[0]
    assert plausible.labels[2] == implausible.labels[2]
    assert set(plausible.labels[1]) == {IGNORE}


def test_gold_states_give_every_tier_and_reference_tiers_agree():
    pairs = [make_pair("7-C0", 0), make_pair("8-C0", 1)]
    stories = [s for p in pairs for s in pair_stories(p)]
    assert belief_tiers(stories, [_onehot(s) for s in stories]) == {
        "trip_plausibility": 1.0,
        "trip_consistency": 1.0,
        "trip_verifiability": 1.0,
        "trip_verifiability_evidence": 1.0,
    }
    assert reference_tiers(pairs)["trip_verifiability"] == 1.0
    matrix = conflict_matrix(stories[1], _onehot(stories[1]))
    assert np.unravel_index(matrix.argmax(), matrix.shape) == (1, 2)


def test_conflict_evidence_is_the_clash_behind_the_score():
    implausible = pair_stories(make_pair())[1]
    probs = _onehot(implausible)
    evidence = conflict_evidence(implausible, probs, 1, 2)
    assert evidence[1]["eff"] == {("vase", "pieces"): 2}
    assert evidence[2]["pre"] == {("vase", "pieces"): 1}
    # one extra wrong nontrivial state fails the strict tier but not the evidence one
    index = implausible.propositions.index("the vase is wet")
    probs[1, index] = [1.0, 0.0, 0.0]
    stories = pair_stories(make_pair())
    tiers = belief_tiers(stories, [_onehot(stories[0]), probs])
    assert tiers["trip_verifiability"] == 0.0 and tiers["trip_verifiability_evidence"] == 1.0


def test_tiers_are_nested_and_fail_where_they_should():
    record = make_pair()
    wrong_pair = dict(record, conflict_pred=[0, 2])
    wrong_story = dict(record, story_pred=1)
    wrong_state = copy.deepcopy(record)
    wrong_state["effects_pred"]["vase"]["1"]["pieces"] = 1
    trivial_only = copy.deepcopy(record)
    trivial_only["effects_pred"]["vase"]["1"] = {"functional": 2}
    trivial_only["effects_pred"]["Ann"]["1"] = {}
    trivial_only["preconditions_pred"]["vase"]["2"] = {}
    assert reference_tiers([wrong_story])["trip_plausibility"] == 0.0
    assert reference_tiers([wrong_pair]) == {
        "trip_plausibility": 1.0,
        "trip_consistency": 0.0,
        "trip_verifiability": 0.0,
    }
    assert reference_tiers([wrong_state])["trip_consistency"] == 1.0
    assert reference_tiers([wrong_state])["trip_verifiability"] == 0.0
    assert reference_tiers([trivial_only])["trip_verifiability"] == 0.0  # no nontrivial state


def test_constant_predictions_tie_and_never_verify():
    stories = pair_stories(make_pair(story_label=1))
    flat = [np.full((s.n_breakpoints, len(s.propositions), 3), 1 / 3) for s in stories]
    tiers = belief_tiers(stories, flat)
    assert tiers["trip_plausibility"] == 0.0  # a tie calls story 0 plausible
    assert tiers["trip_verifiability"] == 0.0
    assert belief_tiers(stories[:1], flat[:1]) == {}  # half a pair is not scored


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r["effects_label"]["vase"]["1"].update(colour=2), "unknown attribute"),
        (lambda r: r["effects_label"]["vase"]["1"].update(pieces=5), "unknown class 5"),
        (lambda r: r.update(story0=""), "story without sentences"),
        (lambda r: r.update(story_label=2), "story_label 2"),
        (lambda r: r.pop("conflict_label"), "missing keys"),
    ],
)
def test_bad_input_names_the_record(edit, message):
    record = make_pair("99-C3")
    edit(record)
    with pytest.raises(StoryError, match=message) as error:
        pair_stories(record)
    if "missing keys" not in message:
        assert "99-C3" in str(error.value)


def test_split_keeps_groups_apart_and_partners_together(tmp_path):
    pairs = [make_pair(f"{n}-C{k}", story_label=k % 2) for n in range(12) for k in range(2)]
    for n, record in enumerate(pairs):  # distinct texts per story group
        for key in ("story0", "story1"):
            record[key] = record[key].replace("Ann", f"Ann{n // 2}")
    file = tmp_path / "results_cloze_implausible_explanations_consistency_dev.jsonl"
    file.write_text(json.dumps(pairs))
    read = read_pairs(tmp_path)
    assert len(read) == 24 and len(set(example_groups(read))) == 12
    plausible_file = tmp_path / "results_cloze_plausible_explanations_consistency_dev.jsonl"
    plausible_file.write_text("[]")
    with pytest.raises(StoryError, match="implausible"):
        read_pairs(plausible_file)
    train, test = split_pairs(read, "train", 0.5, 0), split_pairs(read, "test", 0.5, 0)
    assert len(train) + len(test) == 24 and train and test
    groups = lambda ps: {p["example_id"].split("-")[0] for p in ps}  # noqa: E731
    assert not groups(train) & groups(test)
    stories = load_trip(tmp_path, "test", 0.5, 0)
    assert len(stories) == 2 * len(test)
    assert with_pair_partners([0, 3], stories) == [0, 1, 2, 3]
    thinned = load_trip(tmp_path, "train", 0.5, 0, unknown_keep=0.1)
    kept = sum(label == UNKNOWN for s in thinned for row in s.labels for label in row)
    total = sum(
        label == UNKNOWN
        for s in load_trip(tmp_path, "train", 0.5, 0)
        for row in s.labels
        for label in row
    )
    assert 0 < kept < 0.3 * total


def test_reference_tiers_on_real_dev_match_the_files_flags(shared_data):
    pairs = read_pairs(shared_data / "beliefs" / "trip")
    tiers = reference_tiers(pairs)
    flags = np.mean([p["valid_explanation"] for p in pairs])
    assert tiers["trip_verifiability"] == pytest.approx(flags)
    assert tiers["trip_plausibility"] == pytest.approx(
        np.mean([p["story_pred"] == p["story_label"] for p in pairs])
    )


@pytest.mark.slow
def test_trip_pipeline_on_a_tiny_slice(nlprec_env, shared_data, tiny_encoder, tmp_path):
    from nlprec.core import cli

    summary_path = tmp_path / "summary.json"
    sets = {
        "params.data": str(shared_data / "beliefs" / "trip"),
        "params.encoder": tiny_encoder,
        "params.train_limit": 6,
        "params.eval_limit": 4,
        "params.epochs": 1,
        "params.flat_pairs": 32,
        "params.trip_detector": "learned",
    }
    args = [x for k, v in sets.items() for x in ("--set", f"{k}={v}")]
    code = cli.main(
        [
            "run",
            str(ROOT / "pipelines" / "beliefs-trip.yaml"),
            *args,
            "--summary",
            str(summary_path),
        ]
    )
    assert code in (0, None)
    metrics = json.loads(summary_path.read_text())["metrics"]
    for model in ("breakpoint", "flat", "hypothesis_only", "majority"):
        tiers = [
            metrics[f"{model}.trip_{t}"] for t in ("plausibility", "consistency", "verifiability")
        ]
        assert all(0.0 <= v <= 1.0 for v in tiers)
        assert tiers[0] >= tiers[1] >= tiers[2]
    assert metrics["majority.trip_verifiability"] == 0.0
    assert 0.0 <= metrics["breakpoint.cloze.trip_consistency"] <= 1.0  # the named variant
    for prefix in ("learned", "learned_pair"):  # params.trip_detector: learned
        tiers = [metrics[f"breakpoint.{prefix}.trip_{t}"] for t in ("plausibility", "consistency")]
        assert 1.0 >= tiers[0] >= tiers[1] >= 0.0
    # the promote rule reads validation consistency; a train_limit run is a smoke run: every seed's
    # tracker is registered as a challenger, none becomes champion
    assert 0.0 <= metrics["breakpoint.val_trip_consistency"] <= 1.0
    assert metrics["promote.beliefs-trip.promoted"] == 0.0
    aliases = mlflow.MlflowClient().get_registered_model("beliefs-trip").aliases
    assert set(aliases) == {"challenger"}


# ---------------------------------------------------------------------------------------- learned
def test_pair_features_describe_the_clash_through_the_differing_sentence():
    from nlprec.beliefs.trip_detector import FEATURES, feature_cube, label_probs, pair_features

    good, bad = pair_stories(make_pair())  # story 0 plausible; sentence 1 differs
    probs = label_probs(bad)
    np.testing.assert_allclose(probs, _onehot(bad))
    pairs, rows = pair_features(bad, probs, [1])
    assert pairs == [(0, 1), (1, 2)] and rows.shape == (2, len(FEATURES))
    at = dict(zip(FEATURES, rows[1]))  # (1, 2): the vase in pieces after 1, not before 2
    assert at["clash_true_false"] == at["clash_pieces"] == at["rule"] == 1.0
    assert at["clash_false_true"] == at["clash_open"] == 0.0
    assert (at["i_differs"], at["j_differs"], at["j_last"], at["distance"]) == (1, 0, 1, 0.5)
    assert dict(zip(FEATURES, rows[0]))["clash"] == 0.0
    cube = feature_cube(good, label_probs(good), [1])
    assert cube[1, 2, FEATURES.index("clash")] == 0.0  # the plausible story's sentence 1: no labels
    with pytest.raises(ValueError, match="belief table of shape"):
        pair_features(bad, probs[:, :3], [1])


def planted_pair(example_id: str, conflict_first: bool) -> dict:
    """Two equally strong clashes in the implausible story, through its differing sentence 1: the
    annotated conflict is always the "in pieces" one, the decoy an "open" one; which of (0, 1) and
    (1, 2) holds which alternates, so only the attribute tells them apart (the rule ties)."""
    real, decoy = ((0, 1), (1, 2)) if conflict_first else ((1, 2), (0, 1))
    eff, pre = _states(3), _states(3)
    eff[str(real[0])]["pieces"], pre[str(real[1])]["pieces"] = 2, 1
    eff[str(decoy[0])]["open"], pre[str(decoy[1])]["open"] = 2, 1
    good = [f"Tom saw box {example_id}.", "Tom left the box alone.", "Tom looked at the box."]
    bad = [good[0], "Tom dropped the box.", good[2]]
    return {
        "example_id": example_id,
        "story_label": 0,
        "conflict_label": list(real),
        "preconditions_label": {"box": pre},
        "effects_label": {"box": eff},
        "story0": "\n".join(good),
        "story1": "\n".join(bad),
    }


def test_learned_detector_finds_the_planted_conflict_where_the_rule_ties():
    from nlprec.beliefs.trip_detector import LearnedConflictDetector, label_probs
    from nlprec.beliefs.trip_tiers import rule_scorer

    def stories_of(ids, first):
        return [s for n in ids for s in pair_stories(planted_pair(f"{n}-C0", first(n)))]

    train = stories_of(range(8), lambda n: n % 2 == 0)
    test = stories_of(range(100, 102), lambda n: n % 2 == 1)  # (1, 2) first: the rule's miss
    tables = [label_probs(s, 0.1) for s in test]
    detector = LearnedConflictDetector(c=1.0).fit(train, [label_probs(s, 0.1) for s in train])
    assert detector.n_conflicts == 8
    learned = belief_tiers(test, tables, scorer=detector.matrix)
    rule = belief_tiers(test, tables, scorer=rule_scorer)
    assert learned["trip_plausibility"] == rule["trip_plausibility"] == 1.0
    assert learned["trip_consistency"] == 1.0
    assert rule["trip_consistency"] == 0.5  # ties go to (0, 1): right only when it is the conflict
    hybrid = belief_tiers(test, tables, scorer=rule_scorer, pair_scorer=detector.matrix)
    assert hybrid["trip_consistency"] == 1.0
    weights = detector.weights()
    assert weights["clash_pieces"] > 0 > weights["clash_open"]


def test_learned_detector_rejects_training_without_conflicts():
    from nlprec.beliefs.trip_detector import LearnedConflictDetector, label_probs

    plausible = [s for s in pair_stories(make_pair()) if s.meta["trip_plausible"]]
    with pytest.raises(ValueError, match="nothing to train on"):
        LearnedConflictDetector().fit(plausible, [label_probs(s) for s in plausible])
    with pytest.raises(ValueError, match="negatives"):
        LearnedConflictDetector(negatives="some").fit(plausible, [])


# ---------------------------------------------------------------------------------------- hooks
def test_generic_metrics_know_nothing_of_trip_and_the_hooks_add_the_tiers():
    from nlprec.beliefs.metrics import evaluate
    from nlprec.beliefs.sources import TASK_HOOKS
    from nlprec.beliefs.tasks import hooks_for

    pairs = [make_pair("7-C0", 0), make_pair("8-C0", 1)]
    stories = [s for p in pairs for s in pair_stories(p)]
    tables = [_onehot(s) for s in stories]
    tables[2] = np.full_like(tables[2], 1 / 3)  # example 8: story 0 undecided
    assert not any("trip" in key for key in evaluate(stories, tables))
    hooks = hooks_for(TASK_HOOKS["trip"])
    metrics = evaluate(stories, tables, hooks)
    assert {k: v for k, v in metrics.items() if k.startswith("trip_")} == belief_tiers(
        stories, tables, restrict=False
    )
    cloze = belief_tiers(stories, tables, restrict=True)
    assert {
        k.removeprefix("cloze."): v for k, v in metrics.items() if k.startswith("cloze.")
    } == cloze
    units = hooks.unit_scores(stories, tables)
    assert set(units["trip_consistency"]) == {"7-C0", "8-C0"}
    for metric, scores in units.items():
        assert np.mean(list(scores.values())) == pytest.approx(metrics[metric])
    assert hooks.eval_subset([1], stories) == [0, 1]  # the pair partner joins


def test_hooks_reject_bad_paths_and_options():
    from nlprec.beliefs.tasks import TaskHooks, hooks_for

    assert type(hooks_for(None)) is TaskHooks
    with pytest.raises(ValueError, match="cannot be imported"):
        hooks_for("nlprec.beliefs.no_such_module:Hooks")
    with pytest.raises(ValueError, match="not a TaskHooks"):
        hooks_for("nlprec.beliefs.records:Story")
    with pytest.raises(ValueError, match="detector"):
        hooks_for("nlprec.beliefs.trip_task:TripHooks", detector="oracle")


def test_validation_carve_keeps_groups_whole():
    from nlprec.beliefs.sources import carve_validation

    pairs = [make_pair(f"{n}-C{k}", k % 2) for n in range(10) for k in range(2)]
    stories = [s for p in pairs for s in pair_stories(p)]
    for story in stories:
        story.meta["group"] = story.meta["trip_pair"].split("-")[0]
    train, validation = carve_validation(stories, 0.3, seed=0)
    held = {s.meta["group"] for s in validation}
    assert len(held) == 3 and not held & {s.meta["group"] for s in train}
    assert len(train) + len(validation) == len(stories)
    assert carve_validation(stories, 0.0, seed=0) == (stories, [])

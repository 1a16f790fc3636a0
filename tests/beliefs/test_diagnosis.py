"""The bAbI task-2 audit: object questions split into held / dropped, direct vs composed reading."""

import numpy as np
import torch
from nlprec.beliefs.babi import build_story
from nlprec.beliefs.diagnosis import (
    accuracy_by_kind,
    dropped_object_audit,
    not_held_accuracy_by_gap,
    object_question_audit,
    proposition_kind,
)
from nlprec.beliefs.model import BreakpointConfig, BreakpointModel
from nlprec.beliefs.qa import one_hot
from nlprec.beliefs.records import FALSE, TRUE, UNKNOWN
from nlprec.beliefs.training import TrainConfig, train_breakpoint

STORY = [
    ("s", "Mary went to the kitchen."),
    ("s", "Mary got the football there."),
    ("s", "John went to the garden."),
    ("s", "John took the apple there."),
    ("s", "John dropped the apple."),
    ("s", "Mary went to the office."),
    ("q", "Where is the football?", "office"),
    ("q", "Where is the apple?", "garden"),
]


def task2_story():
    return build_story("qa2/test/0", STORY, {"task": 2})


def test_proposition_kinds_follow_the_world_templates():
    assert proposition_kind("the apple is in the garden") == "object_in"
    assert proposition_kind("Mary has the apple") == "person_has"
    assert proposition_kind("Mary is in the garden") == "person_in"
    assert proposition_kind("Bob is Ann's father") == "other"


def test_gold_beliefs_answer_held_and_dropped_objects_both_ways():
    story = task2_story()
    audit = object_question_audit([story], [one_hot(story.labels)])
    assert audit["held"] == {
        "questions": 1,
        "direct_right": 1,
        "composed_right": 1,
        "object_in_gold_predicted_true": 1,
        "holder_believed": 1,
        "holder_location_believed": 1,
    }
    assert audit["dropped"]["questions"] == audit["dropped"]["direct_right"] == 1
    assert audit["dropped"]["composed_right"] == 1  # no believed holder: the direct belief
    gaps = not_held_accuracy_by_gap([story], [one_hot(story.labels)])
    assert gaps == {"1": {"questions": 1, "direct_right": 1, "none_believed": 0}}  # dropped, then 1
    by_kind = accuracy_by_kind([story], [one_hot(story.labels)])
    assert {k: v["acc"] for k, v in by_kind.items()} == {
        "person_in": 1.0,
        "person_has": 1.0,
        "object_in": 1.0,
    }


def test_composed_reading_recovers_a_held_object_the_direct_belief_misplaces():
    story = task2_story()
    probs = one_hot(story.labels)
    t = story.questions[0].breakpoint
    index = {p: i for i, p in enumerate(story.propositions)}
    probs[t, index["the football is in the office"]] = np.eye(3)[UNKNOWN]
    probs[t, index["the football is in the kitchen"]] = np.eye(3)[TRUE]  # stale location
    audit = object_question_audit([story], [probs])["held"]
    assert audit["direct_right"] == 0 and audit["composed_right"] == 1
    assert audit["holder_believed"] == 1 and audit["object_in_gold_predicted_true"] == 0
    apple = [index[f"the apple is in the {loc}"] for loc in ("kitchen", "garden", "office")]
    probs[t, apple] = np.eye(3)[FALSE]  # the dropped apple believed nowhere
    assert not_held_accuracy_by_gap([story], [probs])["1"]["none_believed"] == 1
    probs[t, index["Mary has the football"]] = np.eye(3)[FALSE]
    assert object_question_audit([story], [probs])["held"]["holder_believed"] == 0


def test_each_batch_is_collated_once_however_many_epochs(tiny_encoder, monkeypatch):
    torch.manual_seed(0)
    model = BreakpointModel(BreakpointConfig(encoder=tiny_encoder, proj_dim=16))
    stories = [task2_story() for _ in range(4)]
    calls = []
    original = model.collate
    monkeypatch.setattr(model, "collate", lambda batch: calls.append(len(batch)) or original(batch))
    stats = train_breakpoint(model, stories, TrainConfig(epochs=3, batch_size=2), "cpu")
    assert stats["train_steps"] == 6
    assert calls == [2, 2]


def test_dropped_object_audit_tells_forgetting_from_carrying_along():
    moved = STORY[:5] + [("s", "John went to the bedroom."), ("q", "Where is the apple?", "garden")]
    stayed, left = task2_story(), build_story("qa2/test/1", moved, {"task": 2})
    gold = [one_hot(stayed.labels), one_hot(left.labels)]
    audit = dropped_object_audit([stayed, left], gold)
    assert audit == {
        "dropper moved": {
            "questions": 1,
            "right": 1,
            "right_at_drop": 1,
            "answered_dropper_location": 0,
        },
        "dropper stayed": {
            "questions": 1,
            "right": 1,
            "right_at_drop": 1,
            "answered_dropper_location": 0,
        },
    }
    probs = gold[1]
    t = left.questions[0].breakpoint
    index = {p: i for i, p in enumerate(left.propositions)}
    probs[t, index["the apple is in the garden"]] = np.eye(3)[FALSE]
    probs[t, index["the apple is in the bedroom"]] = np.eye(3)[TRUE]  # carried along with John
    row = dropped_object_audit([left], [probs])["dropper moved"]
    assert row == {"questions": 1, "right": 0, "right_at_drop": 1, "answered_dropper_location": 1}

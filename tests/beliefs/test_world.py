import pytest
from nlprec.beliefs.records import FALSE, TRUE, UNKNOWN
from nlprec.beliefs.world import UnsupportedSentence, replay


def labels_at(sentences, breakpoint):
    _, props, labels, _ = replay(sentences)
    return dict(zip(props, labels[breakpoint]))


def test_moves_set_one_location_true_and_the_rest_false():
    state = labels_at(["Mary went to the kitchen.", "John moved to the garden."], 0)
    assert state["Mary is in the kitchen"] == TRUE
    assert state["Mary is in the garden"] == FALSE
    assert state["John is in the garden"] == UNKNOWN  # not said yet at breakpoint 0
    assert state["John is in the kitchen"] == UNKNOWN


def test_carried_objects_follow_their_holder_and_dropped_ones_stay():
    story = [
        "Mary went to the kitchen.",
        "Mary got the football there.",
        "Mary went to the garden.",
        "Mary dropped the football.",
        "Mary went to the office.",
    ]
    assert labels_at(story, 1)["the football is in the kitchen"] == TRUE
    assert labels_at(story, 2)["the football is in the garden"] == TRUE
    assert labels_at(story, 2)["Mary has the football"] == TRUE
    last = labels_at(story, 4)
    assert last["the football is in the garden"] == TRUE
    assert last["the football is in the office"] == FALSE
    assert last["Mary has the football"] == FALSE


def test_object_taken_by_someone_of_unknown_whereabouts_has_unknown_location():
    state = labels_at(["John went to the hallway.", "Mary took the apple there."], 1)
    assert state["Mary has the apple"] == TRUE
    assert state["John has the apple"] == FALSE
    assert state["the apple is in the hallway"] == UNKNOWN


def test_pronouns_conjunctions_and_giving():
    story = [
        "Mary and Daniel went to the bathroom.",
        "Then they journeyed to the hallway.",
        "Daniel picked up the milk there.",
        "Daniel passed the milk to Mary.",
        "After that he went back to the office.",  # "he": the previous sentence's subject
    ]
    state = labels_at(story, 4)
    assert state["Daniel is in the office"] == TRUE
    assert state["Mary is in the hallway"] == TRUE
    assert state["Mary has the milk"] == TRUE and state["Daniel has the milk"] == FALSE
    assert state["the milk is in the hallway"] == TRUE


def test_negation_and_indefinite_knowledge_are_three_valued():
    story = [
        "Fred is in the school.",
        "Fred is either in the park or the office.",
        "Fred is no longer in the park.",
    ]
    assert labels_at(story, 1)["Fred is in the school"] == FALSE
    assert labels_at(story, 1)["Fred is in the park"] == UNKNOWN
    state = labels_at(story, 2)
    assert state["Fred is in the park"] == FALSE
    assert state["Fred is in the office"] == UNKNOWN


def test_constraints_hold_in_every_replayed_state():
    story = [
        "Mary went to the kitchen.",
        "Mary got the football there.",
        "John went to the garden.",
    ]
    _, _, labels, constraints = replay(story)
    assert constraints
    for row in labels:
        for c in constraints:
            if all(row[a] == TRUE for a in c.antecedents):
                assert row[c.consequent] == c.consequent_label


def test_unsupported_sentences_and_dangling_pronouns_are_errors():
    with pytest.raises(UnsupportedSentence, match="no world-model rule"):
        replay(["The kitchen is north of the garden."])
    with pytest.raises(UnsupportedSentence, match="pronoun"):
        replay(["Then she went to the kitchen."])

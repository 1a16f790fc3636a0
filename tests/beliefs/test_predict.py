import pytest
from nlprec.beliefs.predict import split_sentences, story_from_row
from nlprec.beliefs.records import StoryError


def test_story_text_is_split_into_sentences():
    assert split_sentences("s", "Mary left. John came! Why?") == [
        "Mary left.",
        "John came!",
        "Why?",
    ]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"story_id": "x", "story": "Mary went home", "propositions": ["p"]},
            "'x': no sentence boundaries",
        ),
        ({"story_id": "y", "story": "  ", "propositions": ["p"]}, "'y': empty story"),
        ({"story_id": "z", "sentences": [], "propositions": ["p"]}, "'z': empty story"),
        ({"story_id": "w", "sentences": ["Mary left."]}, "'w': no propositions"),
    ],
)
def test_bad_rows_are_errors_naming_the_story(row, message):
    with pytest.raises(StoryError, match=message):
        story_from_row(row, 0)


def test_evenly_spaced_subsets_cover_the_whole_eval_set():
    from nlprec.beliefs.steps import evenly_spaced

    assert evenly_spaced(10, None) == list(range(10))
    assert evenly_spaced(3, 5) == [0, 1, 2]
    picked = evenly_spaced(400, 40)
    assert len(picked) == len(set(picked)) == 40 and picked[0] == 0 and picked[-1] >= 390

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

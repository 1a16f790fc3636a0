"""The story record every data source produces and every model consumes.

A story is a list of sentences; a breakpoint follows each sentence. For each breakpoint the record
holds a three-way label (true / false / unknown) for every proposition of the story, so the label
matrix has shape [n_breakpoints, n_propositions]. Constraints are logical implications between the
story's propositions that hold at every breakpoint; questions are read from the beliefs at the
breakpoint just before them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

LABELS: tuple[str, ...] = ("true", "false", "unknown")
LABEL_ID: dict[str, int] = {name: i for i, name in enumerate(LABELS)}
TRUE, FALSE, UNKNOWN = 0, 1, 2
IGNORE = -100  # label id of a (breakpoint, proposition) pair that is not scored


class StoryError(ValueError):
    """Bad input in a story record; the message names the record."""


@dataclass(frozen=True)
class Constraint:
    """antecedents (all true) imply that proposition ``consequent`` has label ``consequent_label``."""

    antecedents: tuple[int, ...]
    consequent: int
    consequent_label: int


@dataclass
class Question:
    """A question asked after ``breakpoint`` (0-based index of the last sentence before it)."""

    text: str
    answer: str
    breakpoint: int


@dataclass
class Story:
    story_id: str
    sentences: list[str]
    propositions: list[str]
    labels: list[list[int]]  # [n_breakpoints][n_propositions], ids into LABELS or IGNORE
    constraints: list[Constraint] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_breakpoints(self) -> int:
        return len(self.sentences)

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["constraints"] = [
            [list(c.antecedents), c.consequent, c.consequent_label] for c in self.constraints
        ]
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Story:
        story = cls(
            story_id=str(record["story_id"]),
            sentences=list(record["sentences"]),
            propositions=list(record["propositions"]),
            labels=[list(row) for row in record["labels"]],
            constraints=[
                Constraint(tuple(ante), int(cons), int(lab))
                for ante, cons, lab in record.get("constraints") or []
            ],
            questions=[Question(**q) for q in record.get("questions") or []],
            meta=dict(record.get("meta") or {}),
        )
        validate_story(story)
        return story


def parse_label(value: Any, where: str) -> int:
    """A label given as a name ("true"/"false"/"unknown", any case) or an id; errors name ``where``."""
    if isinstance(value, bool):
        return TRUE if value else FALSE
    if isinstance(value, int) and value in (TRUE, FALSE, UNKNOWN, IGNORE):
        return value
    if isinstance(value, str) and value.strip().lower() in LABEL_ID:
        return LABEL_ID[value.strip().lower()]
    raise StoryError(f"{where}: unknown label {value!r}; expected one of {', '.join(LABELS)}")


def validate_story(story: Story) -> None:
    """Raise StoryError naming the record when the story cannot be modelled."""
    name = f"story {story.story_id!r}"
    if not story.sentences:
        raise StoryError(f"{name}: empty story (no sentences)")
    for i, sentence in enumerate(story.sentences):
        if not sentence or not sentence.strip():
            raise StoryError(f"{name}: sentence {i} is empty")
    if story.labels and len(story.labels) != story.n_breakpoints:
        raise StoryError(
            f"{name}: {len(story.labels)} label rows for {story.n_breakpoints} breakpoints"
        )
    for b, row in enumerate(story.labels):
        if len(row) != len(story.propositions):
            raise StoryError(
                f"{name}: breakpoint {b} has {len(row)} labels for {len(story.propositions)} propositions"
            )
        for p, label in enumerate(row):
            row[p] = parse_label(label, f"{name}, breakpoint {b}, proposition {p}")
    for c in story.constraints:
        for index in (*c.antecedents, c.consequent):
            if not 0 <= index < len(story.propositions):
                raise StoryError(f"{name}: constraint {c} refers to a missing proposition")
    for q in story.questions:
        if not 0 <= q.breakpoint < story.n_breakpoints:
            raise StoryError(f"{name}: question {q.text!r} comes before any sentence")

"""World model that replays bAbI-style stories and derives the belief state after each sentence.

Supported sentence forms (bAbI tasks 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13 and the generator):

    <subj> (went|went back|moved|journeyed|travelled) to the L.     move
    <subj> (got|grabbed|took|picked up) the O [there].               take
    <subj> (dropped|left|discarded|put down) the O [there].          drop
    <subj> (passed|handed|gave) the O to Q.                          give
    <subj> is in the L. / is (no longer|not) in the L. / is either in the L1 or the L2.

where <subj> is a name, "A and B", or a pronoun (he / she / they, optionally after "Then",
"After that", "Afterwards", "Following that") resolved to the previous sentence's subjects.

The state is three-valued. A person's location is a map location -> label: a move sets one location
true and the rest false; "is no longer in L" sets L false and the rest unknown; "is either in A or
B" sets A and B unknown and the rest false. A held object is where its holder is; a dropped object
keeps the location labels its holder had when dropping it. Objects never mentioned are unknown
everywhere and belong to nobody as far as the text says (unknown).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from nlprec.beliefs.records import FALSE, TRUE, UNKNOWN, Constraint

MOVE_VERBS = ("went back to", "went to", "moved to", "journeyed to", "travelled to")
TAKE_VERBS = ("picked up", "got", "grabbed", "took")
DROP_VERBS = ("put down", "dropped", "left", "discarded")
GIVE_VERBS = ("passed", "handed", "gave")
CONNECTIVES = ("After that", "Afterwards", "Following that", "Then")
PRONOUNS = ("he", "she", "they")

_connective = r"(?:(?:" + "|".join(CONNECTIVES) + r"),?\s+)?"
_subject = r"(?P<subj>[A-Za-z]+(?: and [A-Za-z]+)?)"
_noun = r"(?:the )?(?P<{}>[a-z]+)"
SENTENCE_PATTERNS: dict[str, re.Pattern[str]] = {
    "move": re.compile(
        rf"^{_connective}{_subject} (?:{'|'.join(MOVE_VERBS)}) {_noun.format('loc')}\.?$"
    ),
    "take": re.compile(
        rf"^{_connective}{_subject} (?:{'|'.join(TAKE_VERBS)}) {_noun.format('obj')}(?: there)?\.?$"
    ),
    "drop": re.compile(
        rf"^{_connective}{_subject} (?:{'|'.join(DROP_VERBS)}) {_noun.format('obj')}(?: there)?\.?$"
    ),
    "give": re.compile(
        rf"^{_connective}{_subject} (?:{'|'.join(GIVE_VERBS)}) {_noun.format('obj')} to (?P<to>[A-Z][a-z]+)\.?$"
    ),
    "not_in": re.compile(rf"^{_subject} is (?:no longer|not) in {_noun.format('loc')}\.?$"),
    "either": re.compile(
        rf"^{_subject} is either in {_noun.format('loc')} or {_noun.format('loc2')}\.?$"
    ),
    "is_in": re.compile(rf"^{_subject} is in {_noun.format('loc')}\.?$"),
}


class UnsupportedSentence(ValueError):
    """A sentence the world model cannot replay (its state would not be determined)."""


@dataclass(frozen=True)
class Event:
    kind: str
    subjects: tuple[str, ...]
    location: str | None = None
    location2: str | None = None
    obj: str | None = None
    recipient: str | None = None


def parse_sentence(sentence: str, previous_subjects: tuple[str, ...]) -> Event:
    """Turn one sentence into an Event, resolving pronouns to ``previous_subjects``."""
    text = sentence.strip()
    for kind, pattern in SENTENCE_PATTERNS.items():
        match = pattern.match(text)
        if match is None:
            continue
        groups = match.groupdict()
        subjects = tuple(groups["subj"].split(" and "))
        if len(subjects) == 1 and subjects[0].lower() in PRONOUNS:
            if not previous_subjects:
                raise UnsupportedSentence(f"pronoun without antecedent: {sentence!r}")
            subjects = previous_subjects
        return Event(
            kind=kind,
            subjects=subjects,
            location=groups.get("loc"),
            location2=groups.get("loc2"),
            obj=groups.get("obj"),
            recipient=groups.get("to"),
        )
    raise UnsupportedSentence(f"no world-model rule for sentence {sentence!r}")


@dataclass
class Vocabulary:
    """The persons, objects and locations of one story, in first-mention order."""

    persons: list[str] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)

    def add(self, items: list[str], value: str | None) -> None:
        if value is not None and value not in items:
            items.append(value)

    @classmethod
    def from_events(cls, events: list[Event]) -> Vocabulary:
        vocab = cls()
        for event in events:
            for person in (*event.subjects, event.recipient):
                vocab.add(vocab.persons, person)
            vocab.add(vocab.objects, event.obj)
            vocab.add(vocab.locations, event.location)
            vocab.add(vocab.locations, event.location2)
        return vocab


def person_in(person: str, location: str) -> str:
    return f"{person} is in the {location}"


def person_has(person: str, obj: str) -> str:
    return f"{person} has the {obj}"


def object_in(obj: str, location: str) -> str:
    return f"the {obj} is in the {location}"


class WorldState:
    """Three-valued knowledge about who is where and who holds what."""

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self.person_location = {p: dict.fromkeys(vocab.locations, UNKNOWN) for p in vocab.persons}
        self.holder: dict[str, str | None] = {}  # object -> person; absent = never mentioned
        self.dropped_location: dict[str, dict[str, int]] = {}

    def _set_location(self, person: str, location: str) -> None:
        self.person_location[person] = {
            loc: TRUE if loc == location else FALSE for loc in self.vocab.locations
        }

    def apply(self, event: Event) -> None:
        for person in event.subjects:
            if event.kind in ("move", "is_in"):
                self._set_location(person, event.location)
            elif event.kind == "not_in":
                self.person_location[person] = dict.fromkeys(self.vocab.locations, UNKNOWN)
                self.person_location[person][event.location] = FALSE
            elif event.kind == "either":
                self.person_location[person] = dict.fromkeys(self.vocab.locations, FALSE)
                self.person_location[person][event.location] = UNKNOWN
                self.person_location[person][event.location2] = UNKNOWN
            elif event.kind == "take":
                self.holder[event.obj] = person
            elif event.kind == "drop":
                self.holder[event.obj] = None
                self.dropped_location[event.obj] = dict(self.person_location[person])
            elif event.kind == "give":
                self.holder[event.obj] = event.recipient

    def object_location(self, obj: str) -> dict[str, int]:
        if obj not in self.holder:
            return dict.fromkeys(self.vocab.locations, UNKNOWN)
        holder = self.holder[obj]
        if holder is not None:
            return dict(self.person_location[holder])
        return dict(self.dropped_location[obj])

    def has_label(self, person: str, obj: str) -> int:
        if obj not in self.holder:
            return UNKNOWN
        return TRUE if self.holder[obj] == person else FALSE


def story_propositions(vocab: Vocabulary) -> list[str]:
    """Propositions "P is in L", "P has O", "O is in L" over the story's vocabulary."""
    props = [person_in(p, loc) for p in vocab.persons for loc in vocab.locations]
    props += [person_has(p, o) for p in vocab.persons for o in vocab.objects]
    props += [object_in(o, loc) for o in vocab.objects for loc in vocab.locations]
    return props


def snapshot(state: WorldState) -> dict[str, int]:
    """The label of every proposition in the current state."""
    labels: dict[str, int] = {}
    for person, locations in state.person_location.items():
        for loc, label in locations.items():
            labels[person_in(person, loc)] = label
    for obj in state.vocab.objects:
        for person in state.vocab.persons:
            labels[person_has(person, obj)] = state.has_label(person, obj)
        for loc, label in state.object_location(obj).items():
            labels[object_in(obj, loc)] = label
    return labels


def story_constraints(vocab: Vocabulary, propositions: list[str]) -> list[Constraint]:
    """Implications that hold in every state of the world.

    - one place at a time: P in L1 -> not P in L2; O in L1 -> not O in L2
    - one holder at a time: P has O -> not Q has O
    - carried objects move with their holder: P has O and P in L -> O in L
    """
    index = {prop: i for i, prop in enumerate(propositions)}
    constraints: list[Constraint] = []
    for thing, where in [(p, person_in) for p in vocab.persons] + [
        (o, object_in) for o in vocab.objects
    ]:
        for a in vocab.locations:
            for b in vocab.locations:
                if a != b:
                    constraints.append(
                        Constraint((index[where(thing, a)],), index[where(thing, b)], FALSE)
                    )
    for obj in vocab.objects:
        for p in vocab.persons:
            for q in vocab.persons:
                if p != q:
                    constraints.append(
                        Constraint((index[person_has(p, obj)],), index[person_has(q, obj)], FALSE)
                    )
            for loc in vocab.locations:
                constraints.append(
                    Constraint(
                        (index[person_has(p, obj)], index[person_in(p, loc)]),
                        index[object_in(obj, loc)],
                        TRUE,
                    )
                )
    return constraints


def parse_story(sentences: list[str]) -> list[Event]:
    events: list[Event] = []
    previous: tuple[str, ...] = ()
    for sentence in sentences:
        event = parse_sentence(sentence, previous)
        events.append(event)
        previous = event.subjects
    return events


def replay(sentences: list[str], extra_vocab: Vocabulary | None = None):
    """Replay a story; return (vocabulary, propositions, labels [n_sentences][n_props], constraints)."""
    events = parse_story(sentences)
    vocab = Vocabulary.from_events(events)
    if extra_vocab is not None:
        for name in ("persons", "objects", "locations"):
            for item in getattr(extra_vocab, name):
                vocab.add(getattr(vocab, name), item)
    propositions = story_propositions(vocab)
    state = WorldState(vocab)
    labels: list[list[int]] = []
    for event in events:
        state.apply(event)
        current = snapshot(state)
        labels.append([current[prop] for prop in propositions])
    return vocab, propositions, labels, story_constraints(vocab, propositions)

"""Answer bAbI questions by reading the belief state, not by a separate QA model.

The reader receives the probabilities of every (breakpoint, proposition, label) of one story and
the breakpoint after which a question is asked. Questions whose answer is not a function of the
belief states ("Who gave the milk?") return None and are left out of QA accuracy.
"""

from __future__ import annotations

import re

import numpy as np
from nlprec.beliefs.records import FALSE, TRUE, UNKNOWN
from nlprec.beliefs.world import object_in, person_has, person_in

NUMBER_WORDS = ("none", "one", "two", "three", "four", "five", "six")
QUESTION_PATTERNS = {
    "where_before": re.compile(r"^Where was the (?P<obj>\w+) before the (?P<loc>\w+)\s*\?"),
    "where": re.compile(r"^Where is (?P<the>the )?(?P<thing>\w+)\s*\?"),
    "is_in": re.compile(r"^Is (?P<person>\w+) in the (?P<loc>\w+)\s*\?"),
    "count": re.compile(r"^How many objects is (?P<person>\w+) carrying\s*\?"),
    "carrying": re.compile(r"^What is (?P<person>\w+) carrying\s*\?"),
    "kin": re.compile(r"^What is (?P<b>[A-Z]\w+) to (?P<a>[A-Z]\w+)\s*\?"),  # CLUTRR
}


def question_kind(text: str) -> tuple[str, dict[str, str]] | None:
    for kind, pattern in QUESTION_PATTERNS.items():
        match = pattern.match(text.strip())
        if match:
            return kind, match.groupdict()
    return None


def answers_match(predicted: str | None, gold: str) -> bool:
    """bAbI lists ("apple,milk") compare as sets; everything else as lower-cased strings."""
    if predicted is None:
        return False
    return set(predicted.lower().split(",")) == set(gold.lower().split(","))


class BeliefReader:
    """Reads answers from probabilities ``probs`` [n_breakpoints, n_propositions, 3]."""

    def __init__(self, propositions: list[str], probs: np.ndarray) -> None:
        self.index = {prop: i for i, prop in enumerate(propositions)}
        self.probs = probs

    def _candidates(self, template, subject: str) -> dict[str, int]:
        """Proposition index of every filler whose proposition exists, e.g. location -> index."""
        out = {}
        for prop, i in self.index.items():
            for filler in self._fillers(prop):
                if template(subject, filler) == prop:
                    out[filler] = i
        return out

    @staticmethod
    def _fillers(prop: str) -> list[str]:
        return [prop.rsplit(" ", 1)[-1]]

    def _most_true(self, breakpoint: int, candidates: dict[str, int]) -> str | None:
        if not candidates:
            return None
        names = list(candidates)
        p_true = self.probs[breakpoint, [candidates[n] for n in names], TRUE]
        return names[int(np.argmax(p_true))]

    def answer(self, text: str, breakpoint: int) -> str | None:
        parsed = question_kind(text)
        if parsed is None:
            return None
        kind, slots = parsed
        if kind == "where":
            template = object_in if slots["the"] else person_in
            return self._most_true(breakpoint, self._candidates(template, slots["thing"]))
        if kind == "is_in":
            i = self.index.get(person_in(slots["person"], slots["loc"]))
            if i is None:
                return None
            label = int(np.argmax(self.probs[breakpoint, i]))
            return {TRUE: "yes", FALSE: "no", UNKNOWN: "maybe"}[label]
        if kind == "kin":
            prefix = f"{slots['b']} is {slots['a']}'s "
            candidates = {
                p[len(prefix) :]: i for p, i in self.index.items() if p.startswith(prefix)
            }
            return self._most_true(breakpoint, candidates)
        held = self._held(slots.get("person", ""), breakpoint)
        if kind == "carrying":
            return ",".join(held) if held else "nothing"
        if kind == "count":
            return NUMBER_WORDS[len(held)] if len(held) < len(NUMBER_WORDS) else str(len(held))
        return self._where_before(slots["obj"], slots["loc"], breakpoint)

    def _held(self, person: str, breakpoint: int) -> list[str]:
        candidates = self._candidates(person_has, person)
        return [o for o, i in candidates.items() if np.argmax(self.probs[breakpoint, i]) == TRUE]

    def _where_before(self, obj: str, location: str, breakpoint: int) -> str | None:
        """The object's location before its last stay at ``location``, from its belief trajectory."""
        candidates = self._candidates(object_in, obj)
        trajectory: list[str] = []
        for b in range(breakpoint + 1):
            names = [n for n, i in candidates.items() if np.argmax(self.probs[b, i]) == TRUE]
            here = self._most_true(b, candidates) if names else None
            if here is not None and (not trajectory or trajectory[-1] != here):
                trajectory.append(here)
        if location not in trajectory:
            return None
        last = len(trajectory) - 1 - trajectory[::-1].index(location)
        return trajectory[last - 1] if last > 0 else None


def one_hot(labels: list[list[int]]) -> np.ndarray:
    """Gold labels as probabilities [n_breakpoints, n_propositions, 3] (ignored pairs -> unknown)."""
    array = np.asarray(labels)
    array = np.where(array < 0, UNKNOWN, array)
    return np.eye(3)[array]

"""Where belief predictions go wrong on bAbI: accuracy by proposition kind and an audit of
"Where is the O?" questions (task 2: objects carried by people).

For each object question the gold state at the question's breakpoint says whether the object is
held (some "P has O" is true) or lies where it was dropped. For a held object the answer can be
read two ways from the same beliefs:

- direct:   argmax_L p(O is in L = true)                      (qa.BeliefReader, the reported QA)
- composed: argmax_L  sum_P p(P has O) p(P is in L) + (1 - sum_P p(P has O)) p(O is in L)
            (the holder's location when the object is believed held, else the direct belief;
            every p is the probability of "true")

The audit counts, per held / dropped, how often the direct reading is right, how often the model
believes the right holder and that holder's right location, and how often the composed reading is
right. Comparing them tells whether the model knows who holds what and where people are but fails
to carry that over to "O is in L", or whether it fails earlier.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
from nlprec.beliefs.qa import BeliefReader, answers_match, question_kind
from nlprec.beliefs.records import TRUE, Question, Story
from nlprec.beliefs.world import object_in, person_has, person_in

KINDS = ("person_in", "person_has", "object_in", "other")


def proposition_kind(prop: str) -> str:
    """The world-model template a proposition comes from (world.py), else "other"."""
    if prop.startswith("the ") and " is in the " in prop:
        return "object_in"
    if " has the " in prop:
        return "person_has"
    if " is in the " in prop:
        return "person_in"
    return "other"


def accuracy_by_kind(stories: list[Story], predictions: list[np.ndarray]) -> dict[str, dict]:
    """Per proposition kind: accuracy, number of pairs, and the confusion of gold -> predicted."""
    right: Counter = Counter()
    total: Counter = Counter()
    confusion: dict[str, Counter] = defaultdict(Counter)
    for story, probs in zip(stories, predictions):
        labels = np.asarray(story.labels).reshape(story.n_breakpoints, -1)
        hard = probs.argmax(-1)
        for p, prop in enumerate(story.propositions):
            kind = proposition_kind(prop)
            keep = labels[:, p] >= 0
            gold, pred = labels[keep, p], hard[keep, p]
            right[kind] += int((gold == pred).sum())
            total[kind] += int(keep.sum())
            for g, q in zip(gold.tolist(), pred.tolist()):
                confusion[kind][f"{g}->{q}"] += 1
    return {
        kind: {"acc": right[kind] / total[kind], "pairs": total[kind], **confusion[kind]}
        for kind in KINDS
        if total[kind]
    }


def _gold_holder(story: Story, breakpoint: int, obj: str) -> str | None:
    for p, prop in enumerate(story.propositions):
        if proposition_kind(prop) == "person_has" and prop.endswith(f" the {obj}"):
            if story.labels[breakpoint][p] == TRUE:
                return prop.split(" has the ")[0]
    return None


def composed_location(story: Story, probs: np.ndarray, breakpoint: int, obj: str) -> str | None:
    """The object's location read through its believed holder (see the module docstring)."""
    index = {prop: i for i, prop in enumerate(story.propositions)}
    p_true = probs[breakpoint, :, TRUE]
    holders = [p.split(" has the ")[0] for p in story.propositions if p.endswith(f" has the {obj}")]
    p_held = {q: p_true[index[person_has(q, obj)]] for q in holders}
    p_free = max(0.0, 1.0 - sum(p_held.values()))
    scores = {}
    for prop, i in index.items():
        if proposition_kind(prop) == "object_in" and prop.startswith(f"the {obj} is in "):
            loc = prop.rsplit(" ", 1)[-1]
            via_holder = sum(
                p_held[q] * p_true[index[person_in(q, loc)]]
                for q in holders
                if person_in(q, loc) in index
            )
            scores[loc] = via_holder + p_free * p_true[i]
    return max(scores, key=scores.get) if scores else None


def object_questions(story: Story) -> list[tuple[Question, str]]:
    """The story's "Where is the O?" questions with their object O."""
    out = []
    for q in story.questions:
        parsed = question_kind(q.text)
        if parsed is not None and parsed[0] == "where" and parsed[1]["the"]:
            out.append((q, parsed[1]["thing"]))
    return out


def object_question_audit(stories: list[Story], predictions: list[np.ndarray]) -> dict[str, dict]:
    """Counts per gold status ("held" / "dropped") of "Where is the O?" questions; see module doc."""
    audit: dict[str, Counter] = defaultdict(Counter)
    for story, probs in zip(stories, predictions):
        reader = BeliefReader(story.propositions, probs)
        hard = probs.argmax(-1)
        index = {prop: i for i, prop in enumerate(story.propositions)}
        for q, obj in object_questions(story):
            t = q.breakpoint
            holder = _gold_holder(story, t, obj)
            counts = audit["held" if holder else "dropped"]
            counts["questions"] += 1
            direct = reader.answer(q.text, t)
            counts["direct_right"] += answers_match(direct, q.answer)
            counts["composed_right"] += answers_match(
                composed_location(story, probs, t, obj), q.answer
            )
            gold_loc_index = index.get(object_in(obj, q.answer))
            if gold_loc_index is not None:
                counts["object_in_gold_predicted_true"] += int(hard[t, gold_loc_index] == TRUE)
            if holder:
                counts["holder_believed"] += int(hard[t, index[person_has(holder, obj)]] == TRUE)
                holder_loc = index.get(person_in(holder, q.answer))
                counts["holder_location_believed"] += int(
                    holder_loc is not None and hard[t, holder_loc] == TRUE
                )
    return {status: dict(counts) for status, counts in audit.items()}


def _last_mention(story: Story, obj: str, breakpoint: int) -> int | None:
    for t in range(breakpoint, -1, -1):
        if f" the {obj}" in f" {story.sentences[t].lower()}":
            return t
    return None


def not_held_accuracy_by_gap(
    stories: list[Story], predictions: list[np.ndarray], max_gap: int = 4
) -> dict[str, dict[str, int]]:
    """Questions about objects nobody holds, by sentences since the object was last named
    (0: the sentence just before the question). "none_believed": no location has p(true) >= 0.5."""
    table: dict[str, Counter] = defaultdict(Counter)
    for _, probs, reader, q, obj, named in _free_object_questions(stories, predictions):
        t = q.breakpoint
        row = table[str(min(t - named, max_gap)) + ("+" if t - named >= max_gap else "")]
        row["questions"] += 1
        row["direct_right"] += answers_match(reader.answer(q.text, t), q.answer)
        locations = [i for p, i in reader.index.items() if p.startswith(f"the {obj} is in ")]
        row["none_believed"] += int(probs[t, locations, TRUE].max() < 0.5)
    return {gap: dict(row) for gap, row in sorted(table.items())}


def _free_object_questions(stories: list[Story], predictions: list[np.ndarray]):
    """(story, probs, reader, question, object, breakpoint that last named the object) for every
    "Where is the O?" question about an object nobody holds at the question (gold state)."""
    for story, probs in zip(stories, predictions):
        reader = BeliefReader(story.propositions, probs)
        for q, obj in object_questions(story):
            named = _last_mention(story, obj, q.breakpoint)
            if named is not None and not _gold_holder(story, q.breakpoint, obj):
                yield story, probs, reader, q, obj, named


def _gold_location(story: Story, breakpoint: int, person: str) -> str | None:
    for p, prop in enumerate(story.propositions):
        if proposition_kind(prop) == "person_in" and prop.startswith(f"{person} is in the "):
            if story.labels[breakpoint][p] == TRUE:
                return prop.rsplit(" ", 1)[-1]
    return None


def dropped_object_audit(
    stories: list[Story], predictions: list[np.ndarray]
) -> dict[str, dict[str, int]]:
    """Questions about objects nobody holds, by whether the person who dropped the object (its
    gold holder just before the sentence that last names it) is still where the object lies.

    Counts: ``right`` at the question; ``right_at_drop``, the same question read at the drop's
    own breakpoint (where the object is wherever its holder is, as when it was carried);
    ``answered_dropper_location``, the object placed where the dropper is now although it
    stayed behind (the model carrying it along). Separates "forgets the object at the drop"
    from "moves it with the person"."""
    table: dict[str, Counter] = defaultdict(Counter)
    for story, _, reader, q, obj, drop in _free_object_questions(stories, predictions):
        dropper = _gold_holder(story, drop - 1, obj) if drop > 0 else None
        if dropper is None:
            continue
        now = _gold_location(story, q.breakpoint, dropper)
        status = "unknown" if now is None else ("stayed" if now == q.answer else "moved")
        row = table[f"dropper {status}"]
        answer = reader.answer(q.text, q.breakpoint)
        row["questions"] += 1
        row["right"] += answers_match(answer, q.answer)
        row["right_at_drop"] += answers_match(reader.answer(q.text, drop), q.answer)
        row["answered_dropper_location"] += int(status == "moved" and answer == now)
    return {status: dict(row) for status, row in sorted(table.items())}

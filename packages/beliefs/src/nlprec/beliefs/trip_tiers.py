"""TRIP's three tiers (Storks et al. 2021) from predicted physical states.

For each example pair:
- plausibility: the story predicted plausible is the plausible one;
- consistency: plausibility right AND the predicted conflicting sentence pair (i, j) of the
  implausible story equals the gold pair;
- verifiability: consistency right AND the states that explain the conflict are right: among the
  *nontrivial* predicted states (a class other than 0 and other than the attribute's default) of
  the effects of sentence i and the preconditions of sentence j, over every entity, there is at
  least one, and every one equals the gold class (TRIP's ``verifiable_reasoning``).

From belief tables the story and the pair come from the states themselves: ``conflict_matrix``
scores every sentence pair i < j by how strongly sentence i's predicted effects contradict what
sentence j states (a true/false clash on one (entity, attribute), or an entity gone after i and
used in j). The story with the larger peak score is the implausible one (a tie calls story 0
plausible) and its argmax (i, j) is the predicted conflict. The cloze-restricted variant
(``restrict=True``) counts only pairs through a sentence where the two stories differ.

Verifiability is reported twice: ``trip_verifiability`` checks every decoded nontrivial state of
the two sentences (all the model's predictions, as TRIP's code does for its models);
``trip_verifiability_evidence`` checks only the states behind the predicted conflict
(``conflict_evidence``: the clash or gone-then-used pair that scored highest), i.e. the model's
explanation of the conflict.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from nlprec.beliefs.records import FALSE, TRUE, UNKNOWN, Story
from nlprec.beliefs.trip import (
    CLASS_FALSE,
    CLASS_TRUE,
    DEFAULT_TRUE,
    States,
    story_states,
)

TIE_TOLERANCE = 1e-9
# (story, belief table [T, P, 3], differing sentences) -> conflict scores [T(i), T(j)], i < j
PairScorer = Callable[[Story, np.ndarray, list[int]], np.ndarray]


@dataclass
class PairOutcome:
    story_label: int
    story_pred: int
    conflict_label: tuple[int, int]
    conflict_pred: tuple[int, int] | None
    gold: States  # states of the implausible story
    pred: States  # predicted states of that same story
    evidence: States | None = None  # only the predicted states behind the predicted conflict


def nontrivial(attribute: str, cls: int) -> bool:
    return cls > 0 and not (attribute in DEFAULT_TRUE and cls == CLASS_TRUE)


def states_verified(gold: States, pred: States, conflict: tuple[int, int]) -> bool:
    """Nontrivial predicted effects of sentence i and preconditions of sentence j all right, and
    at least one of them."""
    found = False
    for t, kind in ((conflict[0], "eff"), (conflict[1], "pre")):
        for key, cls in pred[t][kind].items():
            if not nontrivial(key[1], cls):
                continue
            found = True
            if gold[t][kind].get(key) != cls:
                return False
    return found


def tiers(outcomes: list[PairOutcome]) -> dict[str, float]:
    """trip_plausibility / trip_consistency / trip_verifiability as fractions of the pairs."""
    if not outcomes:
        return {}
    plausible = consistent = verifiable = verified_evidence = 0
    for o in outcomes:
        if o.story_pred != o.story_label:
            continue
        plausible += 1
        if o.conflict_pred is None or tuple(o.conflict_pred) != tuple(o.conflict_label):
            continue
        consistent += 1
        verifiable += states_verified(o.gold, o.pred, o.conflict_label)
        if o.evidence is not None:
            verified_evidence += states_verified(o.gold, o.evidence, o.conflict_label)
    n = len(outcomes)
    result = {
        "trip_plausibility": plausible / n,
        "trip_consistency": consistent / n,
        "trip_verifiability": verifiable / n,
    }
    if all(o.evidence is not None for o in outcomes):
        result["trip_verifiability_evidence"] = verified_evidence / n
    return result


# ---------------------------------------------------------------------------------------- beliefs
def _specs(story: Story) -> list[tuple[str, str, str, int | None]]:
    return [tuple(s) for s in story.meta["trip_props"]]


def binary_state_pairs(story: Story) -> list[tuple[tuple[str, str], int, int]]:
    """((entity, attribute), effect proposition, precondition proposition) for every binary
    attribute of the story that has both an effect and a precondition proposition."""
    by_key: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for p, (kind, entity, attribute, _) in enumerate(_specs(story)):
        if kind in ("pre", "eff"):
            by_key[(entity, attribute)][kind] = p
    return [(key, k["eff"], k["pre"]) for key, k in by_key.items() if len(k) == 2]


def decode_states(story: Story, probs: np.ndarray) -> States:
    """Hard TRIP classes from a belief table [T, P, 3]: true -> 2, false -> 1, unknown -> absent;
    a location is the class whose proposition is predicted true with the highest P(true)."""
    hard = probs.argmax(-1)  # [T, P]
    states: States = {t: {"pre": {}, "eff": {}} for t in range(story.n_breakpoints)}
    for t in range(story.n_breakpoints):
        best: dict[tuple[str, str], tuple[float, int]] = {}
        for p, (kind, entity, attribute, cls) in enumerate(_specs(story)):
            label = hard[t, p]
            if kind == "loc":
                if (
                    label == TRUE
                    and probs[t, p, TRUE] > best.get((entity, attribute), (-1.0, 0))[0]
                ):
                    best[(entity, attribute)] = (float(probs[t, p, TRUE]), cls)
            elif label in (TRUE, FALSE):
                states[t][kind][(entity, attribute)] = CLASS_TRUE if label == TRUE else CLASS_FALSE
        for key, (_, cls) in best.items():
            states[t]["pre"][key] = states[t]["eff"][key] = cls
    return states


def related_entities(entities: list[str]) -> np.ndarray:
    """[E, E] True where two entity names share a word ("notebook" / "notebook paper")."""
    words = [set(e.lower().split()) for e in entities]
    return np.array([[bool(a & b) for b in words] for a in words])


def conflict_matrix(story: Story, probs: np.ndarray) -> np.ndarray:
    """c[i, j] (i < j; 0 elsewhere): the strongest conflict between sentence i's effects and
    sentence j's states, the larger of the two ``conflict_terms``."""
    clash, used = conflict_terms(story, probs)
    return np.triu(np.maximum(clash, used), k=1)


def conflict_terms(story: Story, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(clash, used), each [T(i), T(j)] over every sentence pair (not only i < j):
    - clash: one (entity, attribute) is true after i and false before j, or the reverse;
    - gone, then used: after i an entity stops existing / working / being conscious or moveable
      (false for an attribute whose default is true) or disappears (location class 1), and
      sentence j states anything about it or a related entity (TRIP leaves "exist = true", the
      precondition j would need, unannotated)."""
    specs = _specs(story)
    entities = list(dict.fromkeys(s[1] for s in specs))
    slot = {e: n for n, e in enumerate(entities)}
    T, E = story.n_breakpoints, len(entities)
    gone, stated = np.zeros((T, E)), np.zeros((T, E))  # P(entity gone after t), P(stated at t)
    for p, (kind, entity, attribute, cls) in enumerate(specs):
        e = slot[entity]
        if kind == "loc":
            stated[:, e] = np.maximum(stated[:, e], probs[:, p, TRUE])
            if cls == 1:  # disappears
                gone[:, e] = np.maximum(gone[:, e], probs[:, p, TRUE])
            continue
        stated[:, e] = np.maximum(stated[:, e], 1.0 - probs[:, p, UNKNOWN])
        if kind == "eff" and attribute in DEFAULT_TRUE:
            gone[:, e] = np.maximum(gone[:, e], probs[:, p, FALSE])
    # gone then used: max over related (e, e') of gone[i, e] * stated[j, e']
    reach = np.where(related_entities(entities), 1.0, 0.0)  # [E, E]
    used = np.einsum("ie,jf,ef->ijef", gone, stated, reach).reshape(T, T, -1).max(-1)
    both = binary_state_pairs(story)
    clash = np.zeros((T, T))
    if both:
        _, eff_idx, pre_idx = (list(x) for x in zip(*both))
        eff, pre = probs[:, eff_idx], probs[:, pre_idx]  # [T, K, 3]
        clash = (
            np.einsum("ik,jk->ijk", eff[..., TRUE], pre[..., FALSE])
            + np.einsum("ik,jk->ijk", eff[..., FALSE], pre[..., TRUE])
        ).max(-1)  # [T(i), T(j)]
    return clash, used


def conflict_evidence(story: Story, probs: np.ndarray, i: int, j: int) -> States:
    """The predicted states behind the conflict score of (i, j): the (entity, attribute) clash, or
    the gone-then-used pair, with the highest probability (``conflict_matrix``'s two terms)."""
    specs = _specs(story)
    hard = probs.argmax(-1)
    candidates: list[tuple[float, list[tuple[int, str, tuple[str, str], int]]]] = []
    gone, stated = [], []  # (probability, state) after i / at j
    for p, (kind, entity, attribute, cls) in enumerate(specs):
        key = (entity, attribute)
        if kind == "loc":
            if cls == 1:
                gone.append((probs[i, p, TRUE], (i, "eff", key, 1), entity))
            if hard[j, p] == TRUE:
                stated.append((probs[j, p, TRUE], (j, "pre", key, cls), entity))
            continue
        if kind == "eff" and attribute in DEFAULT_TRUE:
            gone.append((probs[i, p, FALSE], (i, "eff", key, CLASS_FALSE), entity))
        if hard[j, p] in (TRUE, FALSE):
            cls_j = CLASS_TRUE if hard[j, p] == TRUE else CLASS_FALSE
            stated.append((1.0 - probs[j, p, UNKNOWN], (j, kind, key, cls_j), entity))
    for key, e, q in binary_state_pairs(story):
        for first, second in ((CLASS_TRUE, CLASS_FALSE), (CLASS_FALSE, CLASS_TRUE)):
            a, b = (TRUE, FALSE) if first == CLASS_TRUE else (FALSE, TRUE)
            score = probs[i, e, a] * probs[j, q, b]
            candidates.append((score, [(i, "eff", key, first), (j, "pre", key, second)]))
    words = {e: set(e.lower().split()) for e in {s[1] for s in specs}}
    for p_gone, state_i, entity in gone:
        for p_stated, state_j, other in stated:
            if words[entity] & words[other]:
                candidates.append((p_gone * p_stated, [state_i, state_j]))
    evidence: States = {t: {"pre": {}, "eff": {}} for t in range(story.n_breakpoints)}
    if candidates:
        for t, kind, key, cls in max(candidates, key=lambda c: c[0])[1]:
            evidence[t][kind][key] = cls
    return evidence


def differing_sentences(a: Story, b: Story) -> list[int]:
    """Positions where the two stories of a pair differ (all of them when lengths differ)."""
    if a.n_breakpoints != b.n_breakpoints:
        return list(range(max(a.n_breakpoints, b.n_breakpoints)))
    return [t for t, (x, y) in enumerate(zip(a.sentences, b.sentences)) if x != y]


def through(c: np.ndarray, sentences: list[int]) -> np.ndarray:
    """Keep only sentence pairs that involve one of ``sentences`` (a conflict the two stories of a
    cloze pair share cannot tell them apart)."""
    keep = np.zeros_like(c, dtype=bool)
    for t in sentences:
        if t < len(c):
            keep[t, :] = keep[:, t] = True
    return np.where(keep, c, 0.0)


def rule_scorer(story: Story, probs: np.ndarray, differ: list[int]) -> np.ndarray:
    """The rule (``conflict_matrix``) as a pair scorer; ``differ`` is not used."""
    return conflict_matrix(story, probs)


def pair_outcome(
    stories: tuple[Story, Story],
    predictions: tuple[np.ndarray, np.ndarray],
    restrict: bool = False,
    scorer: PairScorer = rule_scorer,
    pair_scorer: PairScorer | None = None,
) -> PairOutcome:
    """Plausible story and conflict predicted from the two belief tables of one example. By
    default every sentence pair of each story is scored (each story judged on its own, as the
    compared RoBERTa system was); ``restrict=True`` is the cloze-restricted rule, which scores only
    pairs through a sentence where the two stories differ (information the compared systems'
    predictions did not use: reported as a named variant, never as the headline). ``scorer`` maps
    (story, belief table, differing sentences) to a [T, T] conflict score (i < j), e.g. the rule
    or ``trip_detector.LearnedConflictDetector.matrix``; the story with the larger peak is the
    implausible one. ``pair_scorer`` (default ``scorer``) then picks the conflict in that story."""
    differ = differing_sentences(*stories) if restrict else list(range(stories[0].n_breakpoints))
    scores = [through(scorer(s, p, differ), differ) for s, p in zip(stories, predictions)]
    peak = [float(c.max()) for c in scores]
    implausible_pred = 1 if abs(peak[1] - peak[0]) <= TIE_TOLERANCE else int(np.argmax(peak))
    chosen = scores[implausible_pred]
    if pair_scorer is not None:
        story, table = stories[implausible_pred], predictions[implausible_pred]
        chosen = through(pair_scorer(story, table, differ), differ)
    i, j = np.unravel_index(int(np.argmax(chosen)), chosen.shape)
    story_label = next(k for k, s in enumerate(stories) if s.meta["trip_plausible"])
    bad = 1 - story_label
    return PairOutcome(
        story_label=story_label,
        story_pred=1 - implausible_pred,
        conflict_label=tuple(stories[bad].meta["trip_conflict"]),
        conflict_pred=(int(i), int(j)) if i < j else None,
        gold=gold_states(stories[bad]),
        pred=decode_states(stories[bad], predictions[bad]),
        evidence=conflict_evidence(stories[bad], predictions[bad], int(i), int(j)),
    )


def gold_states(story: Story) -> States:
    """The annotated classes of a story record (its labels read back as TRIP classes)."""
    labels = np.asarray(story.labels)
    probs = np.zeros((*labels.shape, 3))
    for t, row in enumerate(labels):
        for p, label in enumerate(row):
            if label >= 0:
                probs[t, p, label] = 1.0
            else:
                probs[t, p, 2] = 1.0
    return decode_states(story, probs)


def pair_members(stories: list[Story]) -> list[tuple[int, int]]:
    """(index of story0, index of story1) of every TRIP example with both stories in ``stories``."""
    by_pair: dict[str, dict[int, int]] = defaultdict(dict)
    for n, story in enumerate(stories):
        if "trip_pair" in story.meta:
            by_pair[story.meta["trip_pair"]][story.meta["trip_index"]] = n
    return [(m[0], m[1]) for m in by_pair.values() if set(m) == {0, 1}]


def pair_outcomes(
    stories: list[Story],
    predictions: list[np.ndarray],
    restrict: bool = False,
    scorer: PairScorer = rule_scorer,
    pair_scorer: PairScorer | None = None,
) -> dict[str, PairOutcome]:
    """Example id -> outcome, for every example whose two stories are both in ``stories``."""
    return {
        stories[a].meta["trip_pair"]: pair_outcome(
            (stories[a], stories[b]),
            (predictions[a], predictions[b]),
            restrict,
            scorer,
            pair_scorer,
        )
        for a, b in pair_members(stories)
    }


def belief_tiers(
    stories: list[Story],
    predictions: list[np.ndarray],
    restrict: bool = False,
    scorer: PairScorer = rule_scorer,
    pair_scorer: PairScorer | None = None,
) -> dict[str, float]:
    """Tiers over every example whose two stories are both in ``stories``; {} when none is.
    ``restrict=True`` is the cloze-restricted rule (``pair_outcome``)."""
    return tiers(list(pair_outcomes(stories, predictions, restrict, scorer, pair_scorer).values()))


# ---------------------------------------------------------------------------------------- RoBERTa
def reference_outcome(record: dict[str, Any]) -> PairOutcome:
    """The outcome of the predictions stored with a trip_eval record (Storks et al.'s RoBERTa)."""
    where = f"TRIP example {record.get('example_id')!r}"
    bad = 1 - record["story_label"]
    n = len(record[f"story{bad}"].split("\n"))
    conflict = record.get("conflict_pred") or []
    return PairOutcome(
        story_label=record["story_label"],
        story_pred=record["story_pred"],
        conflict_label=tuple(record["conflict_label"]),
        conflict_pred=tuple(conflict) if len(conflict) == 2 else None,
        gold=story_states(record, n, where, "label"),
        pred=story_states(record, n, where, "pred"),
    )


def reference_tiers(records: list[dict[str, Any]]) -> dict[str, float]:
    return tiers([reference_outcome(r) for r in records])

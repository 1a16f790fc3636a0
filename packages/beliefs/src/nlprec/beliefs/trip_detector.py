"""A learned TRIP conflict detector over predicted physical states (in place of the fixed rule).

``trip_tiers.conflict_matrix`` calls a sentence pair (i, j) conflicting by one fixed rule (a
true/false clash of one (entity, attribute), or an entity gone after i and used in j). With gold
states that rule reaches only 0.70 plausibility on our test part, so, as TRIP's tiered baseline
learns its conflict detector, this module learns how to weigh the evidence instead:

- ``pair_features``: for every sentence pair i < j of a story, features from the belief table
  (the rule's score and its two terms, clash scores per attribute, clashes between related
  entities, how much i changes and j requires, distance, position and which of i / j is the
  sentence where the two stories of the cloze pair differ);
- ``LearnedConflictDetector``: a logistic regression on those features, trained on the train
  part's pairs through a differing sentence with label "(i, j) is the annotated conflict of the
  implausible story" (every pair of the plausible story is a negative);
- ``matrix`` plugs into ``trip_tiers.belief_tiers(..., scorer=detector.matrix)``: the story with
  the larger peak probability is the implausible one, its argmax pair the predicted conflict.

Which belief tables it is trained on is the caller's choice: the beliefs-trip pipeline fits it on
its training stories only (``trip_detector: learned``).
"""

from __future__ import annotations

import numpy as np
from nlprec.beliefs.records import FALSE, TRUE, UNKNOWN, Story
from nlprec.beliefs.trip import BINARY_ATTRIBUTES, DEFAULT_TRUE
from nlprec.beliefs.trip_tiers import (
    binary_state_pairs,
    conflict_terms,
    differing_sentences,
    pair_members,
    related_entities,
)

BASE_FEATURES = (
    "rule",  # the rule's score max(clash, used)
    "clash",  # max over (entity, attribute) of P(eff_i true) P(pre_j false) + the reverse
    "used",  # gone after i, then stated at j (same or related entity)
    "clash_true_false",  # max P(eff_i true) P(pre_j false)
    "clash_false_true",  # max P(eff_i false) P(pre_j true)
    "clash_default_true",  # clash on exist / functional / conscious / moveable
    "clash_related",  # clash between two different entities that share a word
    "clash_sum",  # soft count of clashing (entity, attribute)s
    "agree",  # max P(eff_i) = P(pre_j) on one (entity, attribute): continuity, no conflict
    "effects_i",  # how surely sentence i changes some state
    "requires_j",  # how surely sentence j requires some state
    "effects_j",
    "requires_i",
    "distance",  # (j - i) / (T - 1)
    "i_differs",  # i is a sentence where the two stories differ
    "j_differs",
    "i_first",
    "j_last",
)
FEATURES = BASE_FEATURES + tuple(f"clash_{a}" for a in BINARY_ATTRIBUTES)


def _activity(story: Story, probs: np.ndarray, kind: str) -> np.ndarray:
    """[T]: the highest probability that sentence t states something of ``kind`` (a binary
    state true or false, or, for either kind, a location change)."""
    columns = [
        probs[:, p, TRUE] if k == "loc" else 1.0 - probs[:, p, UNKNOWN]
        for p, (k, *_) in enumerate(story.meta["trip_props"])
        if k in (kind, "loc")
    ]
    return np.max(columns, axis=0) if columns else np.zeros(len(probs))


def _check(story: Story, probs: np.ndarray) -> None:
    expected = (story.n_breakpoints, len(story.propositions), 3)
    if "trip_props" not in story.meta:
        raise ValueError(f"story {story.story_id!r}: not a TRIP story (no trip_props in meta)")
    if probs.shape != expected:
        raise ValueError(
            f"story {story.story_id!r}: belief table of shape {probs.shape}, expected {expected}"
        )


def feature_cube(story: Story, probs: np.ndarray, differ: list[int]) -> np.ndarray:
    """[T(i), T(j), len(FEATURES)] features of every ordered sentence pair (use i < j)."""
    _check(story, probs)
    T = story.n_breakpoints
    clash, used = conflict_terms(story, probs)
    pairs = binary_state_pairs(story)
    eff_idx = [e for _, e, _ in pairs]
    pre_idx = [q for _, _, q in pairs]
    entities = [entity for (entity, _), _, _ in pairs]
    attributes = [attribute for (_, attribute), _, _ in pairs]
    K = len(eff_idx)
    eff, pre = probs[:, eff_idx], probs[:, pre_idx]  # [T, K, 3]
    tf = np.einsum("ik,jk->ijk", eff[..., TRUE], pre[..., FALSE])
    ft = np.einsum("ik,jk->ijk", eff[..., FALSE], pre[..., TRUE])
    agree = np.einsum("ik,jk->ijk", eff[..., TRUE], pre[..., TRUE]) + np.einsum(
        "ik,jk->ijk", eff[..., FALSE], pre[..., FALSE]
    )
    both = tf + ft

    def peak(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        if mask is not None:
            values = values[..., mask]
        return values.max(-1) if values.shape[-1] else np.zeros((T, T))

    attrs = np.array(attributes, dtype=object)
    default_true = np.array([a in DEFAULT_TRUE for a in attributes], dtype=bool)
    related = np.zeros((K, K))
    if K:
        names = list(dict.fromkeys(entities))
        slot = np.array([names.index(e) for e in entities])
        shares = related_entities(names)[slot][:, slot]
        same_attr = attrs[:, None] == attrs[None, :]
        other = slot[:, None] != slot[None, :]
        related = (shares & same_attr & other).astype(float)
    cross = np.einsum("ik,jl,kl->ijkl", eff[..., TRUE], pre[..., FALSE], related) + np.einsum(
        "ik,jl,kl->ijkl", eff[..., FALSE], pre[..., TRUE], related
    )
    clash_related = cross.reshape(T, T, -1).max(-1) if K else np.zeros((T, T))
    effects, requires = _activity(story, probs, "eff"), _activity(story, probs, "pre")
    i_grid, j_grid = np.meshgrid(np.arange(T), np.arange(T), indexing="ij")
    differs = np.isin(np.arange(T), differ).astype(float)
    columns = [
        np.maximum(clash, used),
        clash,
        used,
        peak(tf),
        peak(ft),
        peak(both, default_true),
        clash_related,
        both.sum(-1),
        peak(agree),
        effects[i_grid],
        requires[j_grid],
        effects[j_grid],
        requires[i_grid],
        (j_grid - i_grid) / max(1, T - 1),
        differs[i_grid],
        differs[j_grid],
        (i_grid == 0).astype(float),
        (j_grid == T - 1).astype(float),
    ]
    columns += [peak(both, attrs == a) for a in BINARY_ATTRIBUTES]
    return np.stack(columns, axis=-1)


def pair_features(
    story: Story, probs: np.ndarray, differ: list[int]
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """The sentence pairs (i < j) of a story through a ``differ`` sentence and their features
    [n_pairs, len(FEATURES)]."""
    cube = feature_cube(story, probs, differ)
    pairs = [
        (i, j)
        for i in range(story.n_breakpoints)
        for j in range(i + 1, story.n_breakpoints)
        if i in differ or j in differ
    ]
    rows = np.array([cube[i, j] for i, j in pairs]).reshape(len(pairs), len(FEATURES))
    return pairs, rows


def training_pairs(
    stories: list[Story], predictions: list[np.ndarray], negatives: str = "both"
) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) over every example with both stories present: pairs through a differing sentence,
    y = 1 for the annotated conflict of the implausible story, 0 for every other pair.

    ``negatives="implausible"`` keeps only the implausible story's pairs: for annotated (gold)
    states, whose plausible story has no labels on its differing sentence, the plausible story's
    pairs would teach "a differing sentence without states is no conflict", which holds for the
    annotation and not for predicted states."""
    if negatives not in ("both", "implausible"):
        raise ValueError(f"negatives {negatives!r}: expected 'both' or 'implausible'")
    blocks, labels = [], []
    for a, b in pair_members(stories):
        differ = differing_sentences(stories[a], stories[b])
        for n in (a, b):
            if negatives == "implausible" and stories[n].meta.get("trip_plausible"):
                continue
            pairs, rows = pair_features(stories[n], predictions[n], differ)
            conflict = stories[n].meta.get("trip_conflict")
            target = tuple(conflict) if conflict else None
            blocks.append(rows)
            labels += [int(pair == target) for pair in pairs]
    if not blocks:
        raise ValueError("no TRIP example with both of its stories: nothing to train on")
    return np.concatenate(blocks), np.asarray(labels)


class LearnedConflictDetector:
    """Logistic regression P(conflict | pair features) (standardised features, L2 penalty ``c``).

    ``matrix`` is a ``trip_tiers.PairScorer``: pass it as ``belief_tiers(..., scorer=...)``."""

    def __init__(self, c: float = 1.0, negatives: str = "both", seed: int = 0):
        self.c, self.negatives, self.seed = c, negatives, seed
        self.model = None

    def fit(self, stories: list[Story], predictions: list[np.ndarray]) -> LearnedConflictDetector:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        X, y = training_pairs(stories, predictions, self.negatives)
        if y.sum() == 0 or y.sum() == len(y):
            raise ValueError(
                f"{len(y)} training pairs with {int(y.sum())} annotated conflicts: need both "
                "conflicting and other pairs (is the conflict pair through a differing sentence?)"
            )
        self.model = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=self.c, max_iter=5000, random_state=self.seed),
        )
        self.model.fit(X, y)
        self.n_pairs, self.n_conflicts = len(y), int(y.sum())
        return self

    def matrix(self, story: Story, probs: np.ndarray, differ: list[int]) -> np.ndarray:
        """[T, T] P(conflict) for i < j (0 elsewhere), from every pair's features."""
        if self.model is None:
            raise RuntimeError("LearnedConflictDetector.matrix called before fit")
        T = story.n_breakpoints
        cube = feature_cube(story, probs, differ)
        upper = np.triu_indices(T, k=1)
        scores = np.zeros((T, T))
        if len(upper[0]):
            scores[upper] = self.model.predict_proba(cube[upper])[:, 1]
        return scores

    def weights(self) -> dict[str, float]:
        """Standardised logistic-regression weight per feature (what the detector relies on)."""
        coefficients = self.model[-1].coef_[0]
        return dict(zip(FEATURES, (float(w) for w in coefficients)))


def label_probs(story: Story, smoothing: float = 0.0) -> np.ndarray:
    """A belief table [T, P, 3] from a story's own labels (unlabelled = unknown), with
    ``smoothing`` of the probability spread evenly over the other two values."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing {smoothing} is not in [0, 1)")
    labels = np.asarray(story.labels)
    probs = np.full((*labels.shape, 3), smoothing / 2, dtype=np.float32)
    hard = np.where(labels >= 0, labels, UNKNOWN)
    np.put_along_axis(probs, hard[..., None], 1.0 - smoothing, axis=-1)
    return probs

"""TRIP's evaluation as ``tasks.TaskHooks``: the three tiers over example pairs.

Metrics (``<model>.`` prefixed by the steps):

* ``trip_plausibility`` / ``trip_consistency`` / ``trip_verifiability`` (and
  ``trip_verifiability_evidence``): the headline. Each story of a pair is judged on its own
  (every sentence pair scored), so the decision uses no information the compared RoBERTa system
  lacked.
* ``cloze.trip_*``: the cloze-restricted rule, which scores only sentence pairs through a sentence
  where the two stories differ (a named variant, never the headline).
* with ``detector="learned"``: ``learned.trip_*`` (the learned conflict detector decides story and
  conflict) and ``learned_pair.trip_*`` (the rule picks the story, the detector the pair), fitted
  on the training stories' annotated states only (``trip_detector.py``); ``cloze.learned.*`` too.

Unit scores: per example pair, 0/1 for each headline tier (``trip_plausibility`` ...).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from nlprec.beliefs.records import Story
from nlprec.beliefs.tasks import TaskHooks
from nlprec.beliefs.trip import with_pair_partners
from nlprec.beliefs.trip_tiers import belief_tiers, pair_outcomes, rule_scorer, tiers

# Label smoothing of the annotated states the learned detector is fitted on (trip_detector.py).
DETECTOR_SMOOTHING = 0.1


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}{key}": value for key, value in metrics.items()}


class TripHooks(TaskHooks):
    """TRIP tiers from belief tables; ``detector`` "learned" adds the learned conflict detector."""

    def __init__(
        self, detector: Literal["rule", "learned"] = "rule", detector_c: float = 0.01
    ) -> None:
        if detector not in ("rule", "learned"):
            raise ValueError(f"TRIP detector must be 'rule' or 'learned', got {detector!r}")
        self.detector_name, self.detector_c = detector, detector_c
        self.detector = None

    def fit(self, train_stories: list[Story]) -> None:
        if self.detector_name == "rule":
            return
        from nlprec.beliefs.trip_detector import LearnedConflictDetector, label_probs

        train = [s for s in train_stories if "trip_pair" in s.meta]
        if not train:
            raise ValueError("TRIP detector 'learned' needs TRIP training stories (none loaded)")
        self.detector = LearnedConflictDetector(self.detector_c, negatives="implausible")
        self.detector.fit(train, [label_probs(s, DETECTOR_SMOOTHING) for s in train])

    def eval_subset(self, indices: list[int], stories: list[Story]) -> list[int]:
        return with_pair_partners(indices, stories)

    def metrics(self, stories: list[Story], predictions: list[np.ndarray]) -> dict[str, float]:
        result: dict[str, float] = {}
        for prefix, restrict in (("", False), ("cloze.", True)):
            result |= _prefixed(prefix, belief_tiers(stories, predictions, restrict))
            if self.detector_name == "learned":
                if self.detector is None:
                    raise RuntimeError("TripHooks.fit must run before the learned detector scores")
                learned = self.detector.matrix
                result |= _prefixed(
                    f"{prefix}learned.", belief_tiers(stories, predictions, restrict, learned)
                )
                result |= _prefixed(
                    f"{prefix}learned_pair.",
                    belief_tiers(stories, predictions, restrict, rule_scorer, learned),
                )
        return result

    def unit_scores(
        self, stories: list[Story], predictions: list[np.ndarray]
    ) -> dict[str, dict[str, float]]:
        scores: dict[str, dict[str, float]] = {}
        for pair, outcome in pair_outcomes(stories, predictions).items():
            for metric, value in tiers([outcome]).items():
                scores.setdefault(metric, {})[pair] = value
        return scores

"""The hook through which a dataset with its own evaluation plugs into the generic steps.

The generic code (metrics.py, the flat baseline, the comparison step) knows belief tables and
stories only. A dataset whose task needs more (TRIP: story pairs, a plausible story, a
conflicting sentence pair) supplies a ``TaskHooks`` subclass; its loader names it in the load
step's output as ``task_hooks: "module:Class"`` (``sources.task_hooks_path``), and every step
resolves it with ``hooks_for``. The generic steps call it at four points:

* ``fit(train_stories)`` once, before scoring (e.g. a learned decision rule on the training
  stories' annotations; never on evaluation stories);
* ``eval_subset(indices, stories)``: a model that scores only some evaluation stories (the flat
  baseline) lets the task complete the subset (TRIP adds each story's pair partner);
* ``metrics(stories, predictions)``: metrics merged into ``metrics.evaluate``'s;
* ``unit_scores(stories, predictions)``: {metric: {unit: score}} for paired tests, in place of
  the generic per-story scores when the task's unit is not the story (a TRIP example pair).
"""

from __future__ import annotations

import importlib

import numpy as np
from nlprec.beliefs.records import Story


class TaskHooks:
    """No task-specific evaluation: every hook is the identity or empty."""

    def __init__(self, **options) -> None:
        if options:
            raise ValueError(f"{type(self).__name__} takes no options, got {sorted(options)}")

    def fit(self, train_stories: list[Story]) -> None:
        """Learn whatever the task's decision rule learns, from training stories only."""

    def eval_subset(self, indices: list[int], stories: list[Story]) -> list[int]:
        return indices

    def metrics(self, stories: list[Story], predictions: list[np.ndarray]) -> dict[str, float]:
        return {}

    def unit_scores(
        self, stories: list[Story], predictions: list[np.ndarray]
    ) -> dict[str, dict[str, float]]:
        return {}


def hooks_for(path: str | None, **options) -> TaskHooks:
    """The hooks named by a load step's ``task_hooks`` ("module:Class"); plain ones for None."""
    if not path:
        return TaskHooks(**options)
    module_name, _, attribute = path.partition(":")
    try:
        hooks_class = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"task_hooks {path!r} cannot be imported: {error}") from None
    if not (isinstance(hooks_class, type) and issubclass(hooks_class, TaskHooks)):
        raise ValueError(f"task_hooks {path!r} is not a TaskHooks subclass")
    return hooks_class(**options)

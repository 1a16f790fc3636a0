"""Metrics over predicted belief tables.

Predictions are one array of probabilities [T, P, 3] per story (a hard prediction is its argmax).
- prop_acc / macro_f1: over every scored (breakpoint, proposition) pair
- all_correct: fraction of breakpoints whose every proposition is right
- constraint_violation: among (breakpoint, constraint) pairs whose antecedents are all predicted
  true, the fraction whose consequent is not predicted with the required label
- qa_acc: questions answered from the beliefs at the breakpoint before them (qa.BeliefReader)
- whatever a dataset's ``tasks.TaskHooks`` adds (TRIP's tiers: trip_task.py)

``unit_scores`` gives the per-story scores of paired tests (the unit is the story).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from nlprec.beliefs.qa import BeliefReader, answers_match, question_kind
from nlprec.beliefs.records import TRUE, Story
from nlprec.beliefs.tasks import TaskHooks
from sklearn.metrics import f1_score


def _pairs(stories: list[Story], predictions: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    gold, pred = [], []
    for story, probs in zip(stories, predictions):
        labels = np.asarray(story.labels).reshape(story.n_breakpoints, -1)
        keep = labels >= 0
        gold.append(labels[keep])
        pred.append(probs.argmax(-1)[keep])
    return np.concatenate(gold), np.concatenate(pred)


def proposition_metrics(stories: list[Story], predictions: list[np.ndarray]) -> dict[str, float]:
    gold, pred = _pairs(stories, predictions)
    if gold.size == 0:
        return {}
    return {
        "prop_acc": float((gold == pred).mean()),
        "macro_f1": float(f1_score(gold, pred, labels=[0, 1, 2], average="macro", zero_division=0)),
    }


def all_correct_rate(stories: list[Story], predictions: list[np.ndarray]) -> float:
    rows = []
    for story, probs in zip(stories, predictions):
        labels = np.asarray(story.labels).reshape(story.n_breakpoints, -1)
        right = (probs.argmax(-1) == labels) | (labels < 0)
        rows.append(right.all(axis=1))
    return float(np.concatenate(rows).mean())


def constraint_violation_rate(stories: list[Story], predictions: list[np.ndarray]) -> float | None:
    violated = applicable = 0
    for story, probs in zip(stories, predictions):
        hard = probs.argmax(-1)  # [T, P]
        for c in story.constraints:
            holds = np.all([hard[:, a] == TRUE for a in c.antecedents], axis=0)  # [T]
            applicable += int(holds.sum())
            violated += int((holds & (hard[:, c.consequent] != c.consequent_label)).sum())
    return violated / applicable if applicable else None


def qa_accuracy(stories: list[Story], predictions: list[np.ndarray]) -> tuple[float | None, int]:
    """Accuracy over questions answerable from beliefs, and how many there were."""
    right = total = 0
    for story, probs in zip(stories, predictions):
        reader = BeliefReader(story.propositions, probs)
        for q in story.questions:
            if question_kind(q.text) is None:
                continue
            total += 1
            right += answers_match(reader.answer(q.text, q.breakpoint), q.answer)
    return (right / total if total else None), total


def evaluate(
    stories: list[Story], predictions: list[np.ndarray], hooks: TaskHooks | None = None
) -> dict[str, float]:
    """Flat metrics, the task hooks' metrics; per bAbI task also ``qa<N>.prop_acc`` and
    ``qa<N>.qa_acc``."""
    metrics: dict[str, float] = dict(proposition_metrics(stories, predictions))
    metrics["all_correct"] = all_correct_rate(stories, predictions)
    violation = constraint_violation_rate(stories, predictions)
    if violation is not None:
        metrics["constraint_violation"] = violation
    qa, n_questions = qa_accuracy(stories, predictions)
    if qa is not None:
        metrics["qa_acc"] = qa
    if hooks is not None:
        metrics.update(hooks.metrics(stories, predictions))
    by_task: dict[int, list[int]] = defaultdict(list)
    for i, story in enumerate(stories):
        if isinstance(story.meta.get("task"), int):
            by_task[story.meta["task"]].append(i)
    if len(by_task) > 1 or (by_task and len(stories) == sum(map(len, by_task.values()))):
        for task, idx in sorted(by_task.items()):
            sub_s, sub_p = [stories[i] for i in idx], [predictions[i] for i in idx]
            metrics[f"qa{task}.prop_acc"] = proposition_metrics(sub_s, sub_p)["prop_acc"]
            task_qa, _ = qa_accuracy(sub_s, sub_p)
            if task_qa is not None:
                metrics[f"qa{task}.qa_acc"] = task_qa
    return metrics


def unit_scores(stories: list[Story], predictions: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """Per story (keyed by its id): ``prop_acc`` over its scored pairs and, where it has
    answerable questions, ``qa_acc``; stories with nothing scored are left out."""
    scores: dict[str, dict[str, float]] = defaultdict(dict)
    for story, probs in zip(stories, predictions):
        result = proposition_metrics([story], [probs])
        if result:
            scores["prop_acc"][story.story_id] = result["prop_acc"]
        qa, _ = qa_accuracy([story], [probs])
        if qa is not None:
            scores["qa_acc"][story.story_id] = qa
    return dict(scores)


def accuracy_by(stories: list[Story], predictions: list[np.ndarray], key: str) -> dict[str, float]:
    """Proposition accuracy grouped by a meta field (e.g. "length" or CLUTRR "k")."""
    groups: dict = defaultdict(list)
    for i, story in enumerate(stories):
        groups[story.meta.get(key)].append(i)
    out = {}
    for value, idx in sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0])):
        result = proposition_metrics([stories[i] for i in idx], [predictions[i] for i in idx])
        if result:
            out[str(value)] = result["prop_acc"]
    return out

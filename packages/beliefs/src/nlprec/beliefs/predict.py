"""Batch inference: JSONL of stories and propositions -> a belief table per story.

Input rows: ``{"story_id": "s1", "sentences": ["Mary went to the kitchen.", ...],
"propositions": ["Mary is in the kitchen", ...]}``; instead of ``sentences`` a row may give
``story``, a text split after ``.``, ``!`` or ``?``. Output rows: ``story_id`` and ``beliefs``, a
list of ``{"breakpoint", "sentence", "proposition", "label", "p_true", "p_false", "p_unknown"}``,
one entry per (breakpoint, proposition) pair.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from nlprec.beliefs.model import BreakpointModel
from nlprec.beliefs.records import LABELS, Story, StoryError

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(story_id: str, text: str) -> list[str]:
    """Sentences of ``text``; a story with no sentence-final punctuation at all is an error."""
    text = text.strip()
    if not text:
        raise StoryError(f"story {story_id!r}: empty story")
    if not re.search(r"[.!?]\s*$", text) and not SENTENCE_END.search(text):
        raise StoryError(
            f"story {story_id!r}: no sentence boundaries (end sentences with . ! or ?, "
            "or give a 'sentences' list)"
        )
    return [s for s in SENTENCE_END.split(text) if s.strip()]


def story_from_row(row: dict[str, Any], position: int) -> Story:
    story_id = str(row.get("story_id") or f"row {position}")
    sentences = row.get("sentences")
    if sentences is None:
        sentences = split_sentences(story_id, str(row.get("story") or ""))
    propositions = row.get("propositions") or []
    if not propositions:
        raise StoryError(f"story {story_id!r}: no propositions to score")
    story = Story(story_id, list(sentences), [str(p) for p in propositions], [])
    if not story.sentences:
        raise StoryError(f"story {story_id!r}: empty story")
    return story


class BeliefPredictor:
    """Loads a saved breakpoint model once; scores every proposition at every breakpoint."""

    def __init__(self, model: str, device: str | None = None) -> None:
        from nlprec.core.models import resolve

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = BreakpointModel.load(resolve(model), device=self.device)

    @torch.no_grad()
    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        n_rows = len(next(iter(batch.values())))
        rows = [{key: values[i] for key, values in batch.items()} for i in range(n_rows)]
        stories = [story_from_row(row, i) for i, row in enumerate(rows)]
        probs = self.model(self.model.collate(stories).to(self.device)).float().softmax(-1).cpu()
        tables = [self._table(story, probs[b]) for b, story in enumerate(stories)]
        return {"story_id": [s.story_id for s in stories], "beliefs": tables}

    @staticmethod
    def _table(story: Story, probs: torch.Tensor) -> list[dict[str, Any]]:
        table = []
        for t, sentence in enumerate(story.sentences):
            for p, proposition in enumerate(story.propositions):
                row = probs[t, p].tolist()
                table.append(
                    {
                        "breakpoint": t,
                        "sentence": sentence,
                        "proposition": proposition,
                        "label": LABELS[max(range(3), key=row.__getitem__)],
                        "p_true": row[0],
                        "p_false": row[1],
                        "p_unknown": row[2],
                    }
                )
        return table

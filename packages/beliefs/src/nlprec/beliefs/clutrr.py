"""CLUTRR (hf/1.0 CSV configs) -> Story records with kinship beliefs at every breakpoint.

A triple (A, r, B) in CLUTRR means "B is A's r". ``proof_state`` lists every derived relation with
the two relations it is composed from (the composition rules applied); its leaves are facts the
story states. A stated fact becomes known at the first sentence naming both people; a derived
fact when the last of its leaves is known. Kinship is functional, so once a pair's relation is
known every other relation for that pair is false; before that it is unknown.

Propositions: for the query pair every one of the 21 relations (so the answer can be read from the
beliefs); for every other pair in the proof its true relation and ``n_negatives`` others.
Constraints: one relation per ordered pair (r1 true implies every other r2 false).
There is no train split in the shared data: ``train`` reads validation.csv (k = 2, 3 for
gen_train23_test2to10), ``test`` reads test.csv (k = 2..10).
"""

from __future__ import annotations

import ast
import random
import re
from pathlib import Path

import pandas as pd
from nlprec.beliefs.records import FALSE, TRUE, UNKNOWN, Constraint, Question, Story, StoryError

RELATIONS = (
    "aunt",
    "son-in-law",
    "grandfather",
    "brother",
    "sister",
    "father",
    "mother",
    "grandmother",
    "uncle",
    "daughter-in-law",
    "grandson",
    "granddaughter",
    "father-in-law",
    "mother-in-law",
    "nephew",
    "son",
    "daughter",
    "niece",
    "husband",
    "wife",
    "sister-in-law",
)
SPLIT_FILES = {"train": "validation.csv", "test": "test.csv"}
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

Triple = tuple[str, str, str]


def kin_proposition(a: str, relation: str, b: str) -> str:
    """(A, r, B) as text: "B is A's r"."""
    return f"{b} is {a}'s {relation}"


def kin_question(a: str, b: str) -> str:
    return f"What is {b} to {a}?"


def _known_at(
    proof: list[dict[Triple, list[Triple]]], sentences: list[str], story_id: str
) -> dict[Triple, int]:
    """Breakpoint at which each stated or derived fact is first determined by the text."""
    rules = {head: body for step in proof for head, body in step.items()}
    mentions = [set(re.findall(r"[A-Z][a-z]+", s)) for s in sentences]
    known: dict[Triple, int] = {}

    def leaf_time(a: str, b: str) -> int:
        for t, names in enumerate(mentions):
            if a in names and b in names:
                return t
        seen = [t for t, names in enumerate(mentions) if a in names or b in names]
        if not seen:
            raise StoryError(f"story {story_id!r}: {a} and {b} are never mentioned")
        return max(seen)

    def resolve(fact: Triple) -> int:
        if fact not in known:
            body = rules.get(fact)
            known[fact] = max(resolve(f) for f in body) if body else leaf_time(fact[0], fact[2])
        return known[fact]

    for head in rules:
        resolve(head)
    return known


def clutrr_story(row: pd.Series, n_negatives: int, rng: random.Random) -> Story:
    story_id = f"clutrr/{row['id']}"
    text = str(row["story"]).replace("[", "").replace("]", "").strip()
    sentences = [s for s in SENTENCE_END.split(text) if s.strip()]
    if not sentences:
        raise StoryError(f"story {story_id!r}: empty story")
    proof = ast.literal_eval(row["proof_state"])
    known = _known_at(proof, sentences, story_id)
    query_a, query_b = ast.literal_eval(row["query"])
    relation_of: dict[tuple[str, str], str] = {(a, b): r for a, r, b in known}
    propositions: list[str] = []
    pair_of: list[tuple[str, str]] = []
    for (a, b), relation in relation_of.items():
        if (a, b) == (query_a, query_b):
            relations = list(RELATIONS)
        else:
            others = [r for r in RELATIONS if r != relation]
            relations = [relation, *rng.sample(others, min(n_negatives, len(others)))]
        for r in relations:
            propositions.append(kin_proposition(a, r, b))
            pair_of.append((a, b))
    labels = []
    for t in range(len(sentences)):
        row_labels = []
        for prop, (a, b) in zip(propositions, pair_of):
            relation = relation_of[(a, b)]
            if known[(a, relation, b)] > t:
                row_labels.append(UNKNOWN)
            else:
                row_labels.append(TRUE if prop == kin_proposition(a, relation, b) else FALSE)
        labels.append(row_labels)
    constraints = functional_constraints(pair_of)
    k = int(str(row["task_name"]).split(".")[-1])
    question = Question(kin_question(query_a, query_b), str(row["target_text"]), len(sentences) - 1)
    meta = {"k": k, "length": len(sentences), "task_name": str(row["task_name"])}
    return Story(story_id, sentences, propositions, labels, constraints, [question], meta)


def functional_constraints(pair_of: list[tuple[str, str]]) -> list[Constraint]:
    """One relation per ordered pair: "B is A's r1" true implies "B is A's r2" false."""
    by_pair: dict[tuple[str, str], list[int]] = {}
    for index, pair in enumerate(pair_of):
        by_pair.setdefault(pair, []).append(index)
    return [
        Constraint((i,), j, FALSE)
        for indices in by_pair.values()
        for i in indices
        for j in indices
        if i != j
    ]


def load_clutrr(
    path: Path, split: str, n_negatives: int = 3, seed: int = 0, limit: int | None = None
) -> list[Story] | None:
    """Stories of ``split`` from a config folder (or a CSV file); None when the split is absent."""
    path = Path(path)
    csv = path if path.is_file() else path / SPLIT_FILES[split]
    if not csv.exists():
        return None
    frame = pd.read_csv(csv, nrows=limit)
    missing = {"id", "story", "query", "target_text", "proof_state", "task_name"} - set(
        frame.columns
    )
    if missing:
        raise StoryError(f"{csv}: not a CLUTRR CSV (missing columns {sorted(missing)})")
    rng = random.Random(seed)
    return [clutrr_story(row, n_negatives, rng) for _, row in frame.iterrows()]

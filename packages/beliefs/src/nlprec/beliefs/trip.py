"""TRIP (Storks et al. 2021, situation_modeling ``trip_eval`` JSON) -> breakpoint Story records.

A TRIP cloze example is a pair of five-or-six-sentence stories that differ in one sentence; one is
plausible (``story_label`` is its index), the other has a conflict: the effect of sentence i
contradicts a precondition of sentence j (``conflict_label = [i, j]``). Physical states are given
per entity, per sentence, per attribute as TRIP class ids; only *nontrivial* classes are stored
(class 0 = irrelevant, and the attribute's default value, are left out).

Class ids (TRIP's ``ann.py``):
- the 18 binary attributes (``clean``, ``open``, ``exist`` ...): precondition / effect class
  1 = false, 2 = true. A missing class is *unknown* here (irrelevant to the sentence). For
  ``conscious``, ``exist``, ``functional``, ``moveable`` the default value is true and is not stored
  either, so for them a missing class means "true or irrelevant" and only false is ever asserted.
- ``h_location`` (people) and ``location`` (objects) name how the entity moved in that sentence:
  classes 1..2 (people) and 1..8 (objects) in ``LOCATION_CHANGES``; precondition and effect
  carry the same class.

Propositions (asked at the breakpoint after sentence t, about sentence t):
- precondition: "the pan was hot", effect: "the pan is hot" -> true / false / unknown;
- location: "the pan is put into a container" for every class -> true for the annotated class,
  unknown otherwise.

Only the implausible story is annotated in ``*_implausible_*`` files (the plausible-story file of the
snapshot names its entities in an order that does not match its states, so it is not used). The
plausible story shares every sentence but one with the implausible one, and TRIP's preconditions
and effects describe a sentence (what it needs, what it causes), so each shared sentence takes the
implausible story's labels; the sentence that differs is not scored (``IGNORE``).

The dataset has no train split here: ``split_groups`` assigns whole groups of examples (same
story number, or any shared story text) to train or test.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from nlprec.beliefs.records import FALSE, IGNORE, TRUE, UNKNOWN, Story, StoryError
from nlprec.core.hashing import unit_interval

BINARY_ATTRIBUTES: dict[str, str] = {
    # attribute -> adjective of its "true" value (TRIP's att_adj)
    "conscious": "conscious",
    "wearing": "dressed",
    "h_wet": "wet",
    "hygiene": "clean",
    "exist": "existent",
    "clean": "clean",
    "power": "powered",
    "functional": "functional",
    "pieces": "in pieces",
    "wet": "wet",
    "open": "open",
    "temperature": "hot",
    "solid": "solid",
    "contain": "occupied",
    "running": "turned on",
    "moveable": "moveable",
    "mixed": "mixed",
    "edible": "edible",
}
HUMAN_ATTRIBUTES = ("h_location", "conscious", "wearing", "h_wet", "hygiene")
DEFAULT_TRUE = frozenset({"conscious", "exist", "functional", "moveable"})
LOCATION_CHANGES: dict[str, dict[int, str]] = {
    "h_location": {1: "disappears", 2: "moves somewhere new"},
    "location": {
        1: "disappears",
        2: "is picked up",
        3: "is put down",
        4: "is put on",
        5: "is removed",
        6: "is put into a container",
        7: "is taken out of a container",
        8: "moved somewhere new",
    },
}
CLASS_FALSE, CLASS_TRUE = 1, 2
ATTRIBUTES = (*LOCATION_CHANGES, *BINARY_ATTRIBUTES)
STATE_KEYS = ("preconditions_label", "effects_label")
PAIR_KEYS = ("example_id", "story0", "story1", "story_label", "conflict_label", *STATE_KEYS)

# (kind, entity, attribute, class): kind "pre" / "eff" (binary attribute, class None) or "loc"
PropSpec = tuple[str, str, str, int | None]
# sentence -> kind ("pre" / "eff") -> (entity, attribute) -> nontrivial TRIP class
States = dict[int, dict[str, dict[tuple[str, str], int]]]


def is_human(entity: str) -> bool:
    """TRIP's own test: people's names are capitalised (and "TV" is an object)."""
    return entity[:1].isupper() and entity != "TV"


def entity_attributes(entity: str) -> tuple[str, ...]:
    human = is_human(entity)
    return tuple(a for a in ATTRIBUTES if (a in HUMAN_ATTRIBUTES) == human)


def _noun(entity: str) -> str:
    return entity if is_human(entity) else f"the {entity}"


def proposition_text(spec: PropSpec) -> str:
    kind, entity, attribute, cls = spec
    if kind == "loc":
        return f"{_noun(entity)} {LOCATION_CHANGES[attribute][cls]}"
    verb = "was" if kind == "pre" else "is"
    return f"{_noun(entity)} {verb} {BINARY_ATTRIBUTES[attribute]}"


def proposition_specs(entities: list[str]) -> list[PropSpec]:
    specs: list[PropSpec] = []
    for entity in entities:
        for attribute in entity_attributes(entity):
            if attribute in LOCATION_CHANGES:
                specs += [("loc", entity, attribute, c) for c in LOCATION_CHANGES[attribute]]
            else:
                specs += [("pre", entity, attribute, None), ("eff", entity, attribute, None)]
    return specs


# ---------------------------------------------------------------------------------------- reading
def read_states(
    record: dict[str, Any], key: str, n_sentences: int, where: str
) -> dict[int, dict[tuple[str, str], int]]:
    """sentence -> (entity, attribute) -> class from one ``*_label`` / ``*_pred`` dict, checked."""
    states: dict[int, dict[tuple[str, str], int]] = {t: {} for t in range(n_sentences)}
    table = record.get(key)
    if not isinstance(table, dict):
        raise StoryError(f"{where}: {key!r} is missing or not a dict of entities")
    for entity, per_sentence in table.items():
        if not isinstance(per_sentence, dict):
            raise StoryError(f"{where}: {key}[{entity!r}] is not a dict of sentences")
        allowed = entity_attributes(entity)
        for sentence, attributes in per_sentence.items():
            try:
                t = int(sentence)
            except ValueError:
                raise StoryError(f"{where}: {key}[{entity!r}] has sentence {sentence!r}") from None
            for attribute, cls in (attributes or {}).items():
                place = f"{where}: {key}[{entity!r}][{sentence}][{attribute!r}]"
                if attribute not in ATTRIBUTES:
                    raise StoryError(f"{place}: unknown attribute (expected one of TRIP's 20)")
                if attribute not in allowed:
                    continue  # a human attribute on an object or the reverse: never asked
                valid = LOCATION_CHANGES.get(attribute, {CLASS_FALSE: "", CLASS_TRUE: ""})
                if isinstance(cls, bool) or not isinstance(cls, int) or cls not in (0, *valid):
                    raise StoryError(
                        f"{place}: unknown class {cls!r} (expected 0 or {list(valid)})"
                    )
                if not 0 <= t < n_sentences:
                    raise StoryError(f"{place}: sentence index out of range 0..{n_sentences - 1}")
                if cls != 0:
                    states[t][(entity, attribute)] = cls
    return states


def story_states(record: dict[str, Any], n_sentences: int, where: str, suffix: str) -> States:
    """Preconditions and effects of the annotated (implausible) story; ``suffix`` label or pred."""
    pre = read_states(record, f"preconditions_{suffix}", n_sentences, where)
    eff = read_states(record, f"effects_{suffix}", n_sentences, where)
    return {t: {"pre": pre[t], "eff": eff[t]} for t in range(n_sentences)}


def _sentences(text: Any, where: str) -> list[str]:
    if not isinstance(text, str) or not text.strip():
        raise StoryError(f"{where}: story without sentences")
    sentences = [s.strip() for s in text.split("\n")]
    if any(not s for s in sentences):
        raise StoryError(f"{where}: empty sentence in a newline-separated story")
    return sentences


def _check_pair(record: Any, position: int, source: str) -> str:
    where = f"{source} pair {position}"
    if not isinstance(record, dict):
        raise StoryError(f"{where}: not a JSON object")
    missing = [k for k in PAIR_KEYS if k not in record]
    if missing:
        raise StoryError(f"{where}: missing keys {missing}")
    where = f"{source} example {record['example_id']!r}"
    if record["story_label"] not in (0, 1):
        raise StoryError(f"{where}: story_label {record['story_label']!r} is not 0 or 1")
    conflict = record["conflict_label"]
    if not (isinstance(conflict, list) and len(conflict) == 2 and conflict[0] < conflict[1]):
        raise StoryError(f"{where}: conflict_label {conflict!r} is not [i, j] with i < j")
    return where


def _label(spec: PropSpec, states: dict[str, dict[tuple[str, str], int]]) -> int:
    kind, entity, attribute, cls = spec
    if kind == "loc":
        found = states["eff"].get((entity, attribute), states["pre"].get((entity, attribute)))
        return TRUE if found == cls else UNKNOWN
    found = states[kind].get((entity, attribute))
    if found is None:
        return UNKNOWN
    return TRUE if found == CLASS_TRUE else FALSE


def pair_stories(record: dict[str, Any], source: str = "TRIP") -> list[Story]:
    """Both stories of one example as Story records (story0 first)."""
    where = _check_pair(record, 0, source)
    texts = [_sentences(record[f"story{k}"], f"{where} story{k}") for k in (0, 1)]
    bad = 1 - record["story_label"]
    n = len(texts[bad])
    conflict = [int(c) for c in record["conflict_label"]]
    if conflict[1] >= n:
        raise StoryError(f"{where}: conflict_label {conflict} outside the {n}-sentence story")
    states = story_states(record, n, where, "label")
    entities = list(record["effects_label"])
    specs = proposition_specs(entities)
    stories = []
    for k in (0, 1):
        rows = []
        for t, sentence in enumerate(texts[k]):
            same = t < n and texts[bad][t] == sentence
            rows.append([_label(s, states[t]) if same else IGNORE for s in specs])
        meta = {
            "trip_pair": str(record["example_id"]),
            "trip_index": k,
            "trip_plausible": k == record["story_label"],
            "trip_conflict": conflict if k == bad else None,
            "trip_props": [list(s) for s in specs],
            "length": len(texts[k]),
        }
        stories.append(
            Story(
                f"trip/{record['example_id']}/story{k}",
                texts[k],
                [proposition_text(s) for s in specs],
                rows,
                meta=meta,
            )
        )
    return stories


def trip_file(path: Path) -> Path:
    """The annotated file of a TRIP folder (the implausible-story states), or ``path`` itself."""
    path = Path(path)
    if path.is_file():
        if "_plausible_" in path.name:
            raise StoryError(
                f"{path}: the plausible-story file names its entities out of step with its states; "
                "use the *implausible* file of the same folder"
            )
        return path
    found = sorted(path.glob("*implausible*.jsonl")) or sorted(
        p for p in path.glob("*cloze*.jsonl") if "plausible" not in p.name
    )
    if not found:
        raise StoryError(f"{path}: no TRIP *implausible*.jsonl file")
    return found[0]


def read_pairs(path: Path) -> list[dict[str, Any]]:
    """The list of example pairs in a trip_eval file (one JSON line holding a list)."""
    file = trip_file(path)
    text = file.read_text()
    try:
        pairs = json.loads(text)
    except json.JSONDecodeError:  # also accept one pair per line
        pairs = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not isinstance(pairs, list) or not pairs:
        raise StoryError(f"{file}: expected a non-empty JSON list of TRIP example pairs")
    for i, record in enumerate(pairs):
        _check_pair(record, i, str(file))
    return pairs


# ---------------------------------------------------------------------------------------- split
def example_groups(pairs: list[dict[str, Any]]) -> list[str]:
    """A group per pair: pairs with the same story number ("13" in "13-C0") or any shared story
    text fall in the same group (union-find), so no story is on both sides of a split."""
    parent = list(range(len(pairs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, record in enumerate(pairs):
        keys = [f"id:{str(record['example_id']).split('-')[0]}"]
        keys += [f"text:{record['story0']}", f"text:{record['story1']}"]
        for key in keys:
            if key in first:
                parent[root(i)] = root(first[key])
            else:
                first[key] = i
    return [str(pairs[root(i)]["example_id"]).split("-")[0] for i in range(len(pairs))]


def in_test_part(group: str, test_fraction: float, seed: int) -> bool:
    """A stable pseudo-random assignment of a group (independent of file order)."""
    return unit_interval(seed, group) < test_fraction


def split_pairs(
    pairs: list[dict[str, Any]], split: str, test_fraction: float, seed: int
) -> list[dict[str, Any]]:
    groups = example_groups(pairs)
    want_test = split == "test"
    return [p for p, g in zip(pairs, groups) if in_test_part(g, test_fraction, seed) == want_test]


def story_folds(stories: list[Story], pairs: list[dict[str, Any]], n_folds: int) -> list[int]:
    """A fold per story (cross-validation / cross-fitting inside one part): whole story groups
    (``example_groups`` of ``pairs``, the part's example pairs) go round-robin to the folds."""
    group_of = dict(zip((str(p["example_id"]) for p in pairs), example_groups(pairs)))
    fold_of = {g: n % n_folds for n, g in enumerate(sorted(set(group_of.values())))}
    try:
        return [fold_of[group_of[s.meta["trip_pair"]]] for s in stories]
    except KeyError as missing:
        raise StoryError(f"story folds: TRIP example {missing} is not among the pairs") from None


def thin_unknowns(stories: list[Story], keep: float, seed: int) -> None:
    """Score only a ``keep`` fraction of the *unknown* pairs (the rest become IGNORE), in place.

    About 98.6 % of TRIP's (sentence, proposition) pairs are unknown (no nontrivial state), so a
    model trained on all of them learns to say unknown everywhere; training stories thin them."""
    if keep >= 1.0:
        return
    rng = random.Random(seed)
    for story in stories:
        for row in story.labels:
            for p, label in enumerate(row):
                if label == UNKNOWN and rng.random() >= keep:
                    row[p] = IGNORE


def load_trip(
    path: Path,
    split: str,
    test_fraction: float = 0.5,
    seed: int = 0,
    limit: int | None = None,
    unknown_keep: float = 1.0,
) -> list[Story]:
    """Stories (two per example, pair members adjacent) of the ``split`` part of a TRIP file;
    ``unknown_keep`` < 1 thins the unknown labels of the train part (``thin_unknowns``)."""
    all_pairs = read_pairs(path)
    group_of = dict(zip((str(p["example_id"]) for p in all_pairs), example_groups(all_pairs)))
    pairs = split_pairs(all_pairs, split, test_fraction, seed)[:limit]
    stories = [story for record in pairs for story in pair_stories(record, str(path))]
    for story in stories:  # a validation carve keeps story groups whole (sources.py)
        story.meta["group"] = group_of[story.meta["trip_pair"]]
    if split == "train":
        thin_unknowns(stories, unknown_keep, seed)
    return stories


def with_pair_partners(indices: list[int], stories: list[Story]) -> list[int]:
    """``indices`` plus the other story of every TRIP example among them (the tiers need both);
    unchanged for other data."""
    by_pair: dict[str, list[int]] = {}
    for n, story in enumerate(stories):
        if "trip_pair" in story.meta:
            by_pair.setdefault(story.meta["trip_pair"], []).append(n)
    if not by_pair:
        return indices
    chosen = set(indices)
    for n in indices:
        pair = stories[n].meta.get("trip_pair")
        chosen.update(by_pair.get(pair, []))
    return sorted(chosen)

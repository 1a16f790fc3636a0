"""A generated BEIR folder with known relevance: the embedded default of ranking-demo.

Each document describes one landmark by a few attributes; each query asks for a landmark by a
subset of its attributes, some as paraphrases (so lexical and semantic matching both matter).
A query's relevant document is the landmark it was generated from (relevance 1), unique by
construction. Deterministic given the seed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

KINDS = [
    "lighthouse",
    "bridge",
    "museum",
    "library",
    "observatory",
    "cathedral",
    "castle",
    "harbour",
    "mill",
    "theatre",
]
CITIES = [
    "Oslo",
    "Lisbon",
    "Krakow",
    "Porto",
    "Ghent",
    "Turin",
    "Bergen",
    "Malmo",
    "Leeds",
    "Lyon",
    "Graz",
    "Split",
]
MATERIALS = {
    "granite": "grey stone",
    "brick": "red clay blocks",
    "timber": "wood",
    "marble": "polished white stone",
    "steel": "iron girders",
    "sandstone": "soft yellow rock",
    "glass": "transparent panes",
}
FEATURES = {
    "a spiral staircase": "winding stairs",
    "a copper dome": "a green metal roof",
    "a rose garden": "flower beds",
    "an underground vault": "a cellar beneath it",
    "a clock tower": "a tall clock",
    "stained windows": "coloured glass windows",
}
CENTURIES = ["twelfth", "fourteenth", "sixteenth", "seventeenth", "eighteenth", "nineteenth"]
SYLLABLES = ["ka", "lo", "mi", "ren", "tov", "sa", "bel", "dor", "vin", "quo", "zel", "par"]


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()


def generate_demo_corpus(n_docs: int = 300, n_queries: int = 300, seed: int = 0) -> dict:
    """``{"corpus": [...], "queries": {...}, "qrels": {"train": ..., "test": ...}}``; 2/3 of queries train."""
    rng = random.Random(seed)
    landmarks, seen = [], set()
    while len(landmarks) < n_docs:
        item = (
            rng.choice(KINDS),
            rng.choice(CITIES),
            rng.choice(list(MATERIALS)),
            rng.choice(list(FEATURES)),
            rng.choice(CENTURIES),
        )
        if item[:4] in seen:
            continue
        seen.add(item[:4])
        landmarks.append(item)
    corpus = []
    for i, (kind, city, material, feature, century) in enumerate(landmarks):
        name, founder = _name(rng), _name(rng)
        corpus.append(
            {
                "_id": f"d{i}",
                "title": f"The {name} {kind}",
                "text": f"The {name} {kind} stands in {city}. Built of {material} in the {century} century by "
                f"{founder}, it is known for {feature}.",
            }
        )
    queries, qrels = {}, {"train": {}, "test": {}}
    for j in range(n_queries):
        i = rng.randrange(n_docs)
        kind, city, material, feature, _ = landmarks[i]
        use_paraphrase = rng.random() < 0.5  # half the queries need semantic matching
        material_text = MATERIALS[material] if use_paraphrase else material
        feature_text = FEATURES[feature] if use_paraphrase else feature
        queries[f"q{j}"] = f"{kind} in {city} made of {material_text} with {feature_text}"
        split = "train" if j % 3 else "test"
        qrels[split][f"q{j}"] = {f"d{i}": 1}
    return {"corpus": corpus, "queries": queries, "qrels": qrels}


def write_beir_folder(data: dict, folder: str | Path) -> Path:
    folder = Path(folder)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w") as handle:
        handle.writelines(json.dumps(doc) + "\n" for doc in data["corpus"])
    with (folder / "queries.jsonl").open("w") as handle:
        handle.writelines(
            json.dumps({"_id": q, "text": t}) + "\n" for q, t in data["queries"].items()
        )
    for split, judged in data["qrels"].items():
        lines = ["query-id\tcorpus-id\tscore"] + [
            f"{q}\t{d}\t{r}" for q, docs in judged.items() for d, r in docs.items()
        ]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder

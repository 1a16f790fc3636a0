"""A small pipeline of the runner itself: generate labelled sentences, fit a classifier, evaluate it.

It exercises every runner feature (needs, params, metrics with curves, artifacts, datasets, models)
in a few seconds, and the runner's tests use its steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from nlprec.core.step import StepContext
from pydantic import BaseModel, ConfigDict, Field

TOPIC_WORDS = {
    "sport": ["match", "goal", "team", "coach", "score", "league", "player", "win"],
    "science": ["cell", "protein", "energy", "theory", "experiment", "data", "atom", "gene"],
}
FILLER = ["the", "a", "new", "today", "after", "with", "big", "report", "says", "more"]


class GenerateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(400, ge=2, description="number of sentences")
    length: int = Field(8, ge=2)
    noise: float = Field(0.3, ge=0.0, le=1.0, description="share of filler words")


def generate(ctx: StepContext, cfg: GenerateConfig) -> dict:
    rng = np.random.default_rng(ctx.seed)
    topics = sorted(TOPIC_WORDS)
    rows = []
    for index in range(cfg.n):
        label = topics[index % len(topics)]
        words = [
            str(rng.choice(FILLER)) if rng.random() < cfg.noise else str(rng.choice(TOPIC_WORDS[label]))
            for _ in range(cfg.length)
        ]
        rows.append({"id": index, "text": " ".join(words), "label": label})
    path = ctx.output_dir / "sentences.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ctx.log_input("generated-sentences", path, context="train")
    ctx.log_params({"n": cfg.n})
    return {"data": str(path), "n": cfg.n}


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(20, ge=1)
    lr: float = Field(0.5, gt=0)
    train_fraction: float = Field(0.8, gt=0, lt=1)
    register_as: str | None = None


def _featurise(texts: list[str], vocabulary: dict[str, int]) -> np.ndarray:
    features = np.zeros((len(texts), len(vocabulary)), dtype=np.float32)  # (n, V) bag of words
    for row, text in enumerate(texts):
        for word in text.split():
            if word in vocabulary:
                features[row, vocabulary[word]] += 1.0
    return features


def train(ctx: StepContext, cfg: TrainConfig) -> dict:
    """Logistic regression by gradient descent; logs the loss curve."""
    rows = [json.loads(line) for line in Path(ctx.inputs["generate"]["data"]).read_text().splitlines()]
    cut = int(len(rows) * cfg.train_fraction)
    words = sorted({w for r in rows[:cut] for w in r["text"].split()})
    vocabulary = {w: i for i, w in enumerate(words)}
    x = _featurise([r["text"] for r in rows[:cut]], vocabulary)
    y = np.array([r["label"] == "sport" for r in rows[:cut]], dtype=np.float32)
    weights = np.zeros(len(vocabulary), dtype=np.float32)
    for epoch in range(cfg.epochs):
        probability = 1.0 / (1.0 + np.exp(-(x @ weights)))
        loss = -np.mean(y * np.log(probability + 1e-9) + (1 - y) * np.log(1 - probability + 1e-9))
        weights -= cfg.lr * x.T @ (probability - y) / len(y)
        ctx.log_metrics({"train.loss": float(loss)}, step=epoch)
    model_dir = ctx.output_dir / "model"
    model_dir.mkdir()
    (model_dir / "model.json").write_text(json.dumps({"vocabulary": vocabulary, "weights": weights.tolist()}))
    if cfg.register_as:
        ctx.log_model(model_dir, name=cfg.register_as, flavor="dir")
    return {"model_dir": str(model_dir), "test_from": cut}


class EvaluateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


def evaluate(ctx: StepContext, cfg: EvaluateConfig) -> dict:
    rows = [json.loads(line) for line in Path(ctx.inputs["generate"]["data"]).read_text().splitlines()]
    rows = rows[ctx.inputs["train"]["test_from"] :]
    model = json.loads((Path(ctx.inputs["train"]["model_dir"]) / "model.json").read_text())
    x = _featurise([r["text"] for r in rows], model["vocabulary"])
    predicted = x @ np.array(model["weights"], dtype=np.float32) > 0
    truth = np.array([r["label"] == "sport" for r in rows])
    accuracy = float(np.mean(predicted == truth)) if len(rows) else 0.0
    ctx.log_metrics({"classifier.accuracy": accuracy})
    ctx.log_dict({"accuracy": accuracy, "n": len(rows)}, "evaluation.json")
    return {"accuracy": accuracy}

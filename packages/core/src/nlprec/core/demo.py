"""A small study of the runner itself: generate labelled sentences, fit bag-of-words classifiers, compare.

`pipelines/core-demo.yaml` searches two systems on validation with the same grid (a full-vocabulary
classifier and one that reads only the first words of each sentence), runs the chosen configurations over three
seeds and compares them with a paired test, all in seconds; the runner's tests use these steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from nlprec.core.step import StepContext, StepOutput, across_seeds
from pydantic import BaseModel, ConfigDict, Field

TOPIC_WORDS = {
    "sport": ["match", "goal", "team", "coach", "score", "league", "player", "win"],
    "science": ["cell", "protein", "energy", "theory", "experiment", "data", "atom", "gene"],
}
FILLER = ["the", "a", "new", "today", "after", "with", "big", "report", "says", "more"]
SPLITS = {"train": 0.6, "validation": 0.2, "test": 0.2}


class GenerateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(400, ge=10, description="number of sentences")
    length: int = Field(8, ge=2)
    noise: float = Field(0.3, ge=0.0, le=1.0, description="share of filler words")


class Sentences(StepOutput):
    """The generated splits as JSONL files; `test` is None in search trials (the runner hides it)."""

    n: int
    train: Path
    validation: Path
    test: Path | None = None


@across_seeds
def generate(ctx: StepContext, cfg: GenerateConfig) -> Sentences:
    """Sentences of topic and filler words, split 60/20/20; the data is the same for every seed."""
    rng = np.random.default_rng(ctx.seed)
    topics = sorted(TOPIC_WORDS)
    rows = []
    for index in range(cfg.n):
        label = topics[index % len(topics)]
        words = [
            str(rng.choice(FILLER)) if rng.random() < cfg.noise else str(rng.choice(TOPIC_WORDS[label]))
            for _ in range(cfg.length)
        ]
        rows.append({"id": f"s{index}", "text": " ".join(words), "label": label})
    order = rng.permutation(len(rows))
    outputs: dict = {"n": cfg.n}
    start = 0
    for split, share in SPLITS.items():
        stop = len(rows) if split == "test" else start + int(round(share * len(rows)))
        path = ctx.output_dir / f"{split}.jsonl"
        path.write_text("".join(json.dumps(rows[i]) + "\n" for i in order[start:stop]))
        ctx.log_input(f"generated-sentences-{split}", path, context=split)
        outputs[split] = str(path)
        start = stop
    ctx.log_params({"n": cfg.n})
    return Sentences(**outputs)


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: Sentences = Field(description="${steps.<generate step>}")
    system: str = Field("bow", min_length=1, description="the name metrics and unit scores are logged under")
    epochs: int = Field(10, ge=1)
    lr: float = Field(0.5, gt=0)
    batch_size: int = Field(16, ge=1)
    max_words: int | None = Field(None, ge=1, description="read only the first N words (like a max length)")
    register_as: str | None = None


def _read(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _featurise(texts: list[str], vocabulary: dict[str, int], max_words: int | None = None) -> np.ndarray:
    features = np.zeros((len(texts), len(vocabulary)), dtype=np.float32)  # (n, V) bag of words
    for row, text in enumerate(texts):
        for word in text.split()[:max_words]:
            if word in vocabulary:
                features[row, vocabulary[word]] += 1.0
    return features


def _vocabulary(rows: list[dict]) -> dict[str, int]:
    return {word: index for index, word in enumerate(sorted({w for row in rows for w in row["text"].split()}))}


def _fit(ctx: StepContext, cfg: TrainConfig, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Logistic regression by minibatch SGD (order and initialisation from the seed); stops when the
    step's time budget runs out."""
    rng = np.random.default_rng(ctx.seed)
    weights = rng.normal(0.0, 0.1, size=x.shape[1]).astype(np.float32)  # (V,)
    bias = 0.0
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            probability = 1.0 / (1.0 + np.exp(-(x[batch] @ weights + bias)))
            weights -= cfg.lr * x[batch].T @ (probability - y[batch]) / len(batch)
            bias -= cfg.lr * float(np.mean(probability - y[batch]))
        probability = 1.0 / (1.0 + np.exp(-(x @ weights + bias)))
        loss = -np.mean(y * np.log(probability + 1e-9) + (1 - y) * np.log(1 - probability + 1e-9))
        ctx.log_metrics({f"{cfg.system}.train_loss": float(loss)}, step=epoch)
        if ctx.time_left() == 0.0:
            ctx.logger.warning("time budget spent after %d of %d epochs", epoch + 1, cfg.epochs)
            break
    return weights, bias


def train(ctx: StepContext, cfg: TrainConfig) -> dict:
    """Fit on the training split, score `ctx.split` (validation in search trials, test otherwise)."""
    training = _read(cfg.data.train)
    vocabulary = _vocabulary(training)
    x = _featurise([r["text"] for r in training], vocabulary, cfg.max_words)
    y = np.array([r["label"] == "sport" for r in training], dtype=np.float32)
    weights, bias = _fit(ctx, cfg, x, y)

    evaluated = _read(getattr(cfg.data, ctx.split))
    predicted = _featurise([r["text"] for r in evaluated], vocabulary, cfg.max_words) @ weights + bias > 0
    correct = {r["id"]: float(p == (r["label"] == "sport")) for r, p in zip(evaluated, predicted, strict=True)}
    accuracy = float(np.mean(list(correct.values())))
    ctx.log_metrics({f"{cfg.system}.accuracy": accuracy})
    ctx.log_unit_scores(cfg.system, "accuracy", correct)

    model_dir = ctx.output_dir / "model"
    model_dir.mkdir()
    (model_dir / "model.json").write_text(json.dumps({"vocabulary": vocabulary, "weights": weights.tolist(), "bias": bias}))
    if cfg.register_as:
        ctx.log_model(model_dir, name=cfg.register_as, flavor="dir")
    return {"model_dir": str(model_dir), "accuracy": accuracy}

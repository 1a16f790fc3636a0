"""Baselines on the same encoder and data.

- flat: a cross-encoder over ``[CLS] s_1 .. s_t [SEP] proposition [SEP]``, one forward pass per
  (breakpoint, proposition) pair, 3-way head on [CLS]. What the breakpoint model must beat on cost.
- hypothesis_only: the same cross-encoder that sees the proposition only (measures label priors).
- majority: the most frequent training label, everywhere.
- last_mention: rule baseline: true if the last sentence that names the proposition's subject
  also names its argument, false if it names the subject only, unknown if the subject is unseen.
"""

from __future__ import annotations

import random
import time
from collections import Counter

import numpy as np
import torch
from nlprec.beliefs.model import resolve_encoder, truncate_layers
from nlprec.beliefs.records import FALSE, TRUE, UNKNOWN, Story
from nlprec.beliefs.training import TrainConfig, fit, iterate_chunks
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

Pair = tuple[int, int, int]  # (story index, breakpoint, proposition)


class FlatPairModel(nn.Module):
    def __init__(
        self,
        encoder: str = "minilm",
        encoder_layers: int | None = None,
        hypothesis_only: bool = False,
        max_length: int = 512,
    ) -> None:
        super().__init__()
        source = resolve_encoder(encoder)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.tokenizer.truncation_side = "left"  # keep the most recent sentences when too long
        self.encoder = AutoModel.from_pretrained(source, dtype=torch.float32)
        truncate_layers(self.encoder, encoder_layers)
        self.head = nn.Linear(self.encoder.config.hidden_size, 3)
        self.hypothesis_only = hypothesis_only
        self.max_length = max_length

    def encode_pairs(self, stories: list[Story], pairs: list[Pair]) -> dict[str, torch.Tensor]:
        props = [stories[s].propositions[p] for s, _, p in pairs]
        if self.hypothesis_only:
            return self.tokenizer(props, padding=True, return_tensors="pt")
        prefixes = [" ".join(stories[s].sentences[: t + 1]) for s, t, _ in pairs]
        return self.tokenizer(
            prefixes,
            props,
            padding=True,
            truncation="only_first",
            max_length=self.max_length,
            return_tensors="pt",
        )

    def forward(self, encoded: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.encoder(**encoded).last_hidden_state  # [N, L, H]
        return self.head(hidden[:, 0])  # [N, 3]


def all_pairs(stories: list[Story], labelled_only: bool = True) -> list[Pair]:
    pairs = []
    for s, story in enumerate(stories):
        for t in range(story.n_breakpoints):
            for p in range(len(story.propositions)):
                if not labelled_only or story.labels[t][p] >= 0:
                    pairs.append((s, t, p))
    return pairs


def train_flat(
    model: FlatPairModel,
    stories: list[Story],
    cfg: TrainConfig,
    device: str,
    pairs_per_epoch: int | None = None,
) -> dict[str, float]:
    """Train on (a random sample of ``pairs_per_epoch``) labelled pairs each epoch."""
    model.to(device)
    pairs = all_pairs(stories)

    def make_batches(rng: random.Random) -> list[list[Pair]]:
        sample = rng.sample(pairs, min(len(pairs), pairs_per_epoch or len(pairs)))
        return list(iterate_chunks(sample, cfg.batch_size))

    def step_loss(batch: list[Pair]) -> tuple[torch.Tensor, int]:
        encoded = {k: v.to(device) for k, v in model.encode_pairs(stories, batch).items()}
        labels = torch.tensor([stories[s].labels[t][p] for s, t, p in batch], device=device)
        return nn.functional.cross_entropy(model(encoded), labels), len(batch)

    name = "hypothesis_only" if model.hypothesis_only else "flat"
    return fit(model, make_batches, step_loss, cfg, name)


@torch.no_grad()
def predict_flat(
    model: FlatPairModel, stories: list[Story], device: str, batch_size: int = 128
) -> tuple[list[np.ndarray], float]:
    """Probabilities [T, P, 3] per story and pairs scored per second.

    The hypothesis-only model scores each unique proposition once and copies it to every pair.
    """
    model.to(device).eval()
    pairs = all_pairs(stories, labelled_only=False)
    out = [np.zeros((s.n_breakpoints, len(s.propositions), 3), dtype=np.float32) for s in stories]
    started = time.perf_counter()
    if model.hypothesis_only:
        unique = sorted({p for s in stories for p in s.propositions})
        fake = [Story("props", ["-"], unique, [])]
        probs = _score(model, fake, [(0, 0, i) for i in range(len(unique))], device, batch_size)
        lookup = dict(zip(unique, probs))
        for s, t, p in pairs:
            out[s][t, p] = lookup[stories[s].propositions[p]]
    else:
        probs = _score(model, stories, pairs, device, batch_size)
        for (s, t, p), row in zip(pairs, probs):
            out[s][t, p] = row
    seconds = time.perf_counter() - started
    return out, len(pairs) / max(seconds, 1e-9)


def _score(model: FlatPairModel, stories, pairs, device, batch_size) -> np.ndarray:
    rows = []
    for chunk in tqdm(list(iterate_chunks(pairs, batch_size)), desc="flat predict", leave=False):
        encoded = {k: v.to(device) for k, v in model.encode_pairs(stories, chunk).items()}
        rows.append(model(encoded).float().softmax(-1).cpu().numpy())
    return np.concatenate(rows)


class MajorityBaseline:
    def fit(self, stories: list[Story]) -> MajorityBaseline:
        counts = Counter(label for s in stories for row in s.labels for label in row if label >= 0)
        self.label = counts.most_common(1)[0][0] if counts else FALSE
        return self

    def predict(self, stories: list[Story]) -> list[np.ndarray]:
        return [
            np.broadcast_to(np.eye(3)[self.label], (s.n_breakpoints, len(s.propositions), 3)).copy()
            for s in stories
        ]


def _subject_and_argument(prop: str) -> tuple[str, str]:
    words = prop.replace(".", "").split()
    subject = words[1] if words[0].lower() == "the" else words[0]
    return subject.lower(), words[-1].lower()


def predict_last_mention(stories: list[Story]) -> list[np.ndarray]:
    out = []
    for story in stories:
        probs = np.zeros((story.n_breakpoints, len(story.propositions), 3), dtype=np.float32)
        tokens = [set(s.lower().replace(".", "").split()) for s in story.sentences]
        for p, prop in enumerate(story.propositions):
            subject, argument = _subject_and_argument(prop)
            label = UNKNOWN
            for t, words in enumerate(tokens):
                if subject in words:
                    label = TRUE if argument in words else FALSE
                probs[t, p, label] = 1.0
        out.append(probs)
    return out

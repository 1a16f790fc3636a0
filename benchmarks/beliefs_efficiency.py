"""(breakpoint, proposition) pairs per second: breakpoint transformer vs the flat pairwise model.

Same encoder (MiniLM-L6), same generated stories, CPU limited to 2 threads. Speed only: the
accuracy comparison at equal training is in the bAbI section (GPU).

    flock /tmp/nlprec-bench.lock nice -n 10 .venv/bin/python benchmarks/beliefs_efficiency.py
"""

from __future__ import annotations

import argparse
import os
import random
import time

import torch
from nlprec.beliefs.baselines import FlatPairModel, all_pairs, predict_flat
from nlprec.beliefs.generator import GeneratorConfig, generate_stories
from nlprec.beliefs.losses import belief_cross_entropy
from nlprec.beliefs.model import BreakpointConfig, BreakpointModel
from nlprec.beliefs.training import n_scored_pairs, predict_breakpoint

SECTION = "beliefs: breakpoint vs flat pairs per second (CPU)"


def train_rate_breakpoint(model: BreakpointModel, stories, steps: int, batch_size: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()
    pairs, started = 0, time.perf_counter()
    for step in range(steps):
        batch_stories = stories[step * batch_size : (step + 1) * batch_size]
        batch = model.collate(batch_stories)
        loss = belief_cross_entropy(model(batch), batch.labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        pairs += n_scored_pairs(batch_stories)
    model.eval()
    return pairs / (time.perf_counter() - started)


def train_rate_flat(model: FlatPairModel, stories, steps: int, batch_size: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    pairs = all_pairs(stories)
    random.Random(0).shuffle(pairs)
    model.train()
    started = time.perf_counter()
    for step in range(steps):
        chunk = pairs[step * batch_size : (step + 1) * batch_size]
        labels = torch.tensor([stories[s].labels[t][p] for s, t, p in chunk])
        loss = torch.nn.functional.cross_entropy(model(model.encode_pairs(stories, chunk)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return steps * batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stories", type=int, default=8)
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--record", action="store_true", help="write the section of RESULTS.md")
    parser.add_argument("--note", default="", help="text appended under the table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    stories = generate_stories(
        GeneratorConfig(n_stories=args.stories, min_sentences=8, max_sentences=8)
    )
    load_before = os.getloadavg()[0]
    breakpoint_model = BreakpointModel(BreakpointConfig(encoder=args.encoder)).eval()
    flat_model = FlatPairModel(args.encoder).eval()
    predict_breakpoint(breakpoint_model, stories[:2], "cpu")  # warm-up
    _, bp_infer = predict_breakpoint(breakpoint_model, stories, "cpu", batch_size=8)
    _, flat_infer = predict_flat(flat_model, stories, "cpu", batch_size=64)
    bp_train = train_rate_breakpoint(breakpoint_model, stories, steps=2, batch_size=4)
    flat_train = train_rate_flat(flat_model, stories, steps=2, batch_size=64)
    load_after = os.getloadavg()[0]
    rows = [
        ("breakpoint", bp_train, bp_infer),
        ("flat", flat_train, flat_infer),
        ("ratio breakpoint / flat", bp_train / flat_train, bp_infer / flat_infer),
    ]
    table = "| model | train pairs/s | inference pairs/s |\n|---|---|---|\n" + "\n".join(
        f"| {name} | {train:,.1f} | {infer:,.1f} |" for name, train, infer in rows
    )
    text = (
        f"{args.stories} generated stories of 8 sentences, {n_scored_pairs(stories):,} pairs, MiniLM-L6, "
        f"torch threads {args.threads}, untrained models (speed only). The machine was shared with "
        f"other jobs: 1-minute load average {load_before:.1f} before, {load_after:.1f} after, so "
        f"absolute rates are low; the ratio is the figure to read.\n\n{table}"
    )
    if args.note:
        text += "\n\n" + args.note
    print(text)
    if args.record:
        from nlprec.core.bench import record_section

        command = (
            f"python benchmarks/beliefs_efficiency.py --stories {args.stories} "
            f"--threads {args.threads} --record"
            + (" --note <the text under the table>" if args.note else "")
        )
        record_section(SECTION, text, command=command)


if __name__ == "__main__":
    main()

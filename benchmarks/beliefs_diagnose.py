"""Diagnose the bAbI task-1 failure on CPU: label distribution, and a short breakpoint-model run
reporting how often "true" is predicted and recalled, next to prop / QA accuracy.

    python benchmarks/beliefs_diagnose.py --n 100 --test 30 --epochs 1 [--record NOTE]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

import numpy as np
import torch
from nlprec.beliefs.babi import load_babi
from nlprec.beliefs.metrics import evaluate
from nlprec.beliefs.model import BreakpointConfig, BreakpointModel
from nlprec.beliefs.records import LABELS, TRUE
from nlprec.beliefs.training import TrainConfig, predict_breakpoint, train_breakpoint
from nlprec.core.data import data_root

SECTION = "beliefs: bAbI task 1 diagnosis (CPU)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="en")
    parser.add_argument("--n", type=int, default=100, help="training stories of task 1")
    parser.add_argument("--test", type=int, default=30, help="test stories of task 1")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--record", metavar="NOTE", default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    root = data_root() / "beliefs" / "babi" / args.data
    train = load_babi(root, "train", [1], limit_per_task=args.n)
    test = load_babi(root, "test", [1], limit_per_task=args.test)
    counts = Counter(label for s in train for row in s.labels for label in row)
    total = sum(counts.values())
    shares = ", ".join(f"{LABELS[k]} {counts[k] / total:.3f}" for k in range(3))
    model = BreakpointModel(BreakpointConfig(scorer="mlp", attention="prefix"))
    cfg = TrainConfig(epochs=args.epochs, batch_size=16, lr=args.lr, head_lr=args.head_lr)
    started = time.perf_counter()
    stats = train_breakpoint(model, train, cfg, "cpu")
    predictions, _ = predict_breakpoint(model, test, "cpu")
    metrics = evaluate(test, predictions)
    gold = np.concatenate([np.asarray(s.labels).ravel() for s in test])
    pred = np.concatenate([p.argmax(-1).ravel() for p in predictions])
    row = (
        f"| {args.n} | {args.test} | {args.epochs} ({stats['train_steps']} steps) | "
        f"{metrics['prop_acc']:.4f} | {metrics['macro_f1']:.4f} | {metrics.get('qa_acc', float('nan')):.4f} | "
        f"{(pred == TRUE).mean():.3f} | {(gold == TRUE).mean():.3f} | {(pred[gold == TRUE] == TRUE).mean():.3f} |"
    )
    text = (
        f"bAbI {args.data} task 1, MiniLM-L6, scorer mlp, prefix attention, lr {args.lr} / head "
        f"{args.head_lr}, batch 16, 2 threads on a shared machine "
        f"({time.perf_counter() - started:.0f} s). Training label shares: {shares}.\n\n"
        "| train stories | test stories | epochs | prop_acc | macro_f1 | qa_acc | predicted true | gold true | true recall |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + row + "\n"
    )
    if args.record:
        text += "\n" + args.record + "\n"
    print(text)
    if args.record is not None:
        from nlprec.core.bench import record_section

        record_section(SECTION, text, command="python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()

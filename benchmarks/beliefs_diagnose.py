"""Diagnose the bAbI task-1 failure on CPU: label distribution, and a short breakpoint-model run
reporting how often "true" is predicted and recalled, next to prop / QA accuracy.

    python benchmarks/beliefs_diagnose.py --n 100 --test 30 --epochs 1 [--record NOTE]

With ``--task2`` it audits bAbI task 2 instead (no training): QA read from the gold beliefs, gold
constraint violations, held / dropped object questions, and, given test predictions saved by
``beliefs_babi.py run --save-predictions``, accuracy by proposition kind, the held / dropped audit
(direct vs composed reading, nlprec.beliefs.diagnosis) and dropped objects by sentences since
last named:

    python benchmarks/beliefs_diagnose.py --task2 --data en-10k --predictions P.npz [--record NOTE]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

import numpy as np
import torch
from nlprec.beliefs.babi import load_babi
from nlprec.beliefs.diagnosis import (
    accuracy_by_kind,
    dropped_object_audit,
    not_held_accuracy_by_gap,
    object_question_audit,
)
from nlprec.beliefs.metrics import constraint_violation_rate, evaluate, qa_accuracy
from nlprec.beliefs.model import BreakpointConfig, BreakpointModel
from nlprec.beliefs.qa import one_hot
from nlprec.beliefs.records import LABELS, TRUE
from nlprec.beliefs.training import TrainConfig, predict_breakpoint, train_breakpoint
from nlprec.core.data import data_root

SECTION = "beliefs: bAbI task 1 diagnosis (CPU)"
TASK2_SECTION = "beliefs: bAbI task 2 diagnosis"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def task2_report(root, predictions_path: str | None) -> str:
    """Markdown: the gold audit of task 2 and, with predictions, where the model goes wrong."""
    parts, test = [], None
    rows = []
    for split in ("train", "test"):
        stories = load_babi(root, split, [2])
        gold = [one_hot(s.labels) for s in stories]
        qa, n = qa_accuracy(stories, gold)
        audit = object_question_audit(stories, gold)
        rows.append(
            [split, len(stories), n, f"{qa:.4f}", f"{constraint_violation_rate(stories, gold):.4f}"]
            + [audit.get(k, {}).get("questions", 0) for k in ("held", "dropped")]
        )
        test = stories
    parts.append(
        "Gold beliefs (world-model replay), read by the same reader as the model's beliefs:\n\n"
        + _table(
            [
                "split",
                "stories (windows)",
                "questions",
                "QA from gold beliefs",
                "gold constraint violation",
                "held-object questions",
                "dropped-object questions",
            ],
            rows,
        )
    )
    if predictions_path:
        saved = np.load(predictions_path)
        preds = [saved[s.story_id.replace("/", "__")].astype(np.float32) for s in test]
        kinds = accuracy_by_kind(test, preds)
        parts.append(
            "Model predictions on task-2 test, by proposition kind (labels 0 true, 1 false, 2 unknown; "
            "'g->p' counts gold g predicted p):\n\n"
            + _table(
                ["kind", "pairs", "accuracy", "true recall", "0->1", "0->2", "1->0", "2->1"],
                [
                    [
                        k,
                        v["pairs"],
                        f"{v['acc']:.4f}",
                        f"{v.get('0->0', 0) / max(1, sum(v.get(f'0->{j}', 0) for j in range(3))):.3f}",
                        v.get("0->1", 0),
                        v.get("0->2", 0),
                        v.get("1->0", 0),
                        v.get("2->1", 0),
                    ]
                    for k, v in kinds.items()
                ],
            )
        )
        audit = object_question_audit(test, preds)
        cols = [
            "questions",
            "direct_right",
            "composed_right",
            "object_in_gold_predicted_true",
            "holder_believed",
            "holder_location_believed",
        ]
        parts.append(
            "'Where is the O?' questions by the gold state at the question (direct: argmax p(O in L); "
            "composed: through the believed holder, nlprec.beliefs.diagnosis):\n\n"
            + _table(
                ["object"] + cols, [[k] + [v.get(c, "–") for c in cols] for k, v in audit.items()]
            )
        )
        gaps = not_held_accuracy_by_gap(test, preds)
        parts.append(
            "Objects nobody holds, by sentences since the object was last named (0: the drop is the "
            "sentence just before the question); none believed: no location with p(true) >= 0.5:\n\n"
            + _table(
                ["sentences since named", "questions", "direct right", "accuracy", "none believed"],
                [
                    [
                        g,
                        r["questions"],
                        r["direct_right"],
                        f"{r['direct_right'] / r['questions']:.3f}",
                        r["none_believed"],
                    ]
                    for g, r in gaps.items()
                ],
            )
        )
        drops = dropped_object_audit(test, preds)
        cols = ["questions", "right", "right_at_drop", "answered_dropper_location"]
        parts.append(
            "Objects nobody holds, by whether the person who dropped the object is still where it "
            "lies (right_at_drop: the same question read at the drop's own breakpoint; "
            "answered_dropper_location: placed where the dropper is now, i.e. carried along):\n\n"
            + _table(
                ["dropper"] + cols, [[k] + [v.get(c, 0) for c in cols] for k, v in drops.items()]
            )
        )
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="en")
    parser.add_argument("--n", type=int, default=100, help="training stories of task 1")
    parser.add_argument("--test", type=int, default=30, help="test stories of task 1")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--record", metavar="NOTE", default=None)
    parser.add_argument("--task2", action="store_true", help="audit task 2 instead (no training)")
    parser.add_argument("--predictions", default=None, help="--task2: saved test predictions")
    args = parser.parse_args()
    if args.task2:
        text = task2_report(data_root() / "beliefs" / "babi" / args.data, args.predictions)
        if args.record:
            text += "\n\n" + args.record
        print(text)
        if args.record is not None:
            from nlprec.core.bench import record_section

            record_section(
                TASK2_SECTION,
                text,
                command="python "
                + " ".join(sys.argv[:-2] if args.record else sys.argv)
                + (" --record <note>" if args.record else ""),
            )
        return
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

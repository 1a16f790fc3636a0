# make bench: skip trains models: a study driver that records a GPU run, not a speed measurement
"""bAbI tasks 1 and 2 (en-10k) or CLUTRR: breakpoint transformer vs flat, hypothesis-only, majority,
last-mention. With ``--format clutrr`` it trains on validation.csv (k = 2, 3) and reports
proposition accuracy by k on test.csv (k = 2..10).

Run (a GPU; writes results JSON, no MLflow needed):
    PYTHONPATH=packages/core/src:packages/beliefs/src python benchmarks/beliefs_babi.py run \
        --data ../shared/data/beliefs/babi/en-10k --out out/babi --budget 100
Record into benchmarks/RESULTS.md from the JSON it wrote:
    .venv/bin/python benchmarks/beliefs_babi.py record out/babi/babi_results.json

Targets (issue 6): proposition accuracy >= 0.97 and QA-from-beliefs >= 0.95 on tasks 1 and 2 test;
breakpoint >= 5x the flat baseline's (breakpoint, proposition) pairs per second at equal accuracy.
The flat model scores one pair per forward pass, so it is trained on a sample of pairs and
evaluated on a subset of test stories; the breakpoint model is reported on the same subset too.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from nlprec.beliefs.babi import load_babi
from nlprec.beliefs.baselines import (
    FlatPairModel,
    MajorityBaseline,
    predict_flat,
    predict_last_mention,
    train_flat,
)
from nlprec.beliefs.clutrr import load_clutrr
from nlprec.beliefs.diagnosis import accuracy_by_kind, object_question_audit
from nlprec.beliefs.metrics import accuracy_by, evaluate
from nlprec.beliefs.model import BreakpointConfig, BreakpointModel
from nlprec.beliefs.training import TrainConfig, predict_breakpoint, train_breakpoint

SECTIONS = {"babi": "beliefs: bAbI tasks 1-2 (en-10k)", "clutrr": "beliefs: CLUTRR accuracy by k"}


class Clock:
    def __init__(self, budget: float) -> None:
        self.start, self.budget = time.perf_counter(), budget

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)


def device_name(device: str) -> str:
    return torch.cuda.get_device_name(0) if device == "cuda" else "CPU"


def run(args: argparse.Namespace) -> None:
    clock = Clock(args.budget)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.format == "clutrr":
        train = load_clutrr(Path(args.data), "train")[: args.train_limit]
        test = load_clutrr(Path(args.data), "test")[: args.test_limit]
        subset = test[:: max(1, len(test) // args.flat_stories)][: args.flat_stories]  # every k
    else:
        train = load_babi(Path(args.data), "train", args.tasks, limit_per_task=args.train_limit)
        test = load_babi(Path(args.data), "test", args.tasks, limit_per_task=args.test_limit)
        subset = [
            s
            for task in args.tasks
            for s in [x for x in test if x.meta["task"] == task][: args.flat_stories]
        ]
    results: dict = {
        "device": device_name(device),
        "tasks": args.tasks,
        "n_train": len(train),
        "n_test": len(test),
        "n_subset": len(subset),
        "args": vars(args),
        "models": {},
    }

    def save() -> None:
        (out / "babi_results.json").write_text(json.dumps(results, indent=2))

    def record(name: str, stories, predictions, **extra) -> None:
        results["models"][name] = {**evaluate(stories, predictions), **extra}
        if args.format == "clutrr":
            results["models"][name]["prop_acc_by_k"] = accuracy_by(stories, predictions, "k")
        else:
            results.setdefault("diagnosis", {})[name] = diagnose(stories, predictions)
        print(name, json.dumps(results["models"][name]), flush=True)
        save()

    record("majority", test, MajorityBaseline().fit(train).predict(test))
    record("last_mention", test, predict_last_mention(test))
    train_cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        head_lr=args.head_lr,
        frozen_encoder_fraction=args.frozen_encoder_fraction,
    )
    for attention in args.attention:
        if clock.left() < 30:
            break
        train_cfg.max_seconds = args.train_seconds
        name = "breakpoint" + ("_reader" if args.reader != "none" else "")
        name += "" if attention == "prefix" else f"_{attention}"
        model_cfg = BreakpointConfig(
            encoder=args.encoder,
            scorer=args.scorer,
            attention=attention,
            constraint_weight=args.constraint_weight,
            reader=args.reader,
        )
        model = BreakpointModel(model_cfg)
        if args.freeze_encoder:  # diagnosis: train projection, reader and scorer only
            model.encoder.requires_grad_(False)
        stats = train_breakpoint(model, train, train_cfg, device)
        predictions, rate = predict_breakpoint(model, test, device, batch_size=64)
        sub_predictions, subset_rate = predict_breakpoint(model, subset, device, batch_size=64)
        record(name, test, predictions, **stats, infer_pairs_per_s=rate)
        if args.save_predictions:
            save_predictions(out / f"{name}_test_predictions.npz", test, predictions)
        record(f"{name}@subset", subset, sub_predictions, infer_pairs_per_s=subset_rate)
    for hypothesis_only in (False, True):
        if args.skip_flat or clock.left() < 15 or (hypothesis_only and args.skip_hypothesis_only):
            break
        name = "hypothesis_only" if hypothesis_only else "flat"
        flat = FlatPairModel(args.encoder, hypothesis_only=hypothesis_only)
        flat_cfg = TrainConfig(
            epochs=1, batch_size=args.flat_batch_size, lr=args.lr, head_lr=args.head_lr
        )
        pairs = args.flat_pairs if not hypothesis_only else args.flat_pairs // 4
        flat_cfg.max_seconds = min(clock.left() * 0.6, args.flat_seconds or float("inf"))
        stats = train_flat(flat, train, flat_cfg, device, pairs_per_epoch=pairs)
        predictions, rate = predict_flat(flat, subset, device, batch_size=args.flat_batch_size * 2)
        record(
            f"{name}@subset",
            subset,
            predictions,
            **stats,
            infer_pairs_per_s=rate,
            train_pairs=pairs,
        )
    results["seconds"] = args.budget - clock.left()
    print(f"done in {results['seconds']:.0f} s on {results['device']}", flush=True)
    save()


def diagnose(stories, predictions) -> dict:
    """Accuracy by proposition kind per bAbI task and the "Where is the O?" audit (diagnosis.py)."""
    out = {}
    for task in sorted({s.meta.get("task") for s in stories}, key=str):
        idx = [i for i, s in enumerate(stories) if s.meta.get("task") == task]
        sub, preds = [stories[i] for i in idx], [predictions[i] for i in idx]
        out[f"qa{task}"] = {
            "by_kind": accuracy_by_kind(sub, preds),
            "object_questions": object_question_audit(sub, preds),
        }
    return out


def save_predictions(path: Path, stories, predictions) -> None:
    """Test-set probabilities (float16) keyed by story id, for analysis off the device."""
    np.savez_compressed(
        path,
        **{
            s.story_id.replace("/", "__"): p.astype(np.float16)
            for s, p in zip(stories, predictions)
        },
    )


def _fmt(value) -> str:
    return (
        f"{value:.4f}"
        if isinstance(value, float) and value <= 1
        else (f"{value:,.0f}" if isinstance(value, float) else "–")
    )


def results_table(results: dict) -> str:
    tasks = results["tasks"] if results["args"].get("format", "babi") == "babi" else []
    columns = ["prop_acc", "macro_f1", "all_correct", "constraint_violation", "qa_acc"]
    columns += [f"qa{t}.{m}" for t in tasks for m in ("prop_acc", "qa_acc")]
    columns += ["train_pairs_per_s", "infer_pairs_per_s"]
    lines = [
        "| model | eval set | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for name, metrics in results["models"].items():
        where = (
            f"{results['n_subset']} test stories"
            if name.endswith("@subset")
            else f"test ({results['n_test']} stories)"
        )
        cells = " | ".join(_fmt(metrics.get(c)) for c in columns)
        lines.append(f"| {name.removesuffix('@subset')} | {where} | {cells} |")
    return "\n".join(lines)


def by_k_table(results: dict) -> str:
    """Proposition accuracy by CLUTRR k (rows: models; the flat models score a subset)."""
    rows = {n: m["prop_acc_by_k"] for n, m in results["models"].items() if "prop_acc_by_k" in m}
    ks = sorted({k for by_k in rows.values() for k in by_k}, key=int)
    lines = ["| model | eval set | " + " | ".join(f"k={k}" for k in ks) + " |"]
    lines.append("|---|---|" + "---|" * len(ks))
    for name, by_k in rows.items():
        where = f"{results['n_subset']} stories" if name.endswith("@subset") else "test"
        cells = " | ".join(_fmt(by_k.get(k)) for k in ks)
        lines.append(f"| {name.removesuffix('@subset')} | {where} | {cells} |")
    return "\n".join(lines)


def describe_run(results: dict) -> str:
    args = results["args"]
    if args.get("format") == "clutrr":
        data = f"CLUTRR validation.csv (k = 2, 3; {results['n_train']} stories), tested on test.csv"
    else:
        data = (
            f"en-10k tasks {results['tasks']} train ({results['n_train']} stories, windows of at "
            "most 60 sentences)"
        )
    encoder = "frozen encoder" if args.get("freeze_encoder") else "fine-tuned encoder"
    return (
        f"**Run `{device_command(args)}`** — card: {results['device']}; trained on {data}, up to "
        f"{args['epochs']} epochs capped at {args['train_seconds']:.0f} s per breakpoint model "
        f"({encoder}, reader {args.get('reader', 'none')}), lr {args['lr']} / head "
        f"{args['head_lr']}, scorer {args['scorer']}, constraint weight "
        f"{args['constraint_weight']}; flat: one pass over at most {args['flat_pairs']:,} sampled "
        f"training pairs ({'not run' if args.get('skip_flat') else 'capped by time'})."
    )


def device_command(args: dict) -> str:
    flags = []
    for key, value in args.items():
        if key in ("command", "func") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        else:
            flags.append(
                f"{flag} {' '.join(map(str, value)) if isinstance(value, list) else value}"
            )
    command = (
        "PYTHONPATH=packages/core/src:packages/beliefs/src python benchmarks/beliefs_babi.py run "
    )
    return command + " ".join(flags).replace(str(args.get("out")), "$OUT")


def record_results(paths: list[Path], note: str, section: str | None = None) -> None:
    """One RESULTS.md section with a table per run (the JSON files that ``run`` wrote)."""
    from nlprec.core.bench import record_section

    parts = []
    for path in paths:
        results = json.loads(Path(path).read_text())
        part = describe_run(results) + "\n\n" + results_table(results)
        if results["args"].get("format") == "clutrr":
            part += "\n\nProposition accuracy by k:\n\n" + by_k_table(results)
        parts.append(part)
    first = json.loads(Path(paths[0]).read_text())["args"].get("format", "babi")
    text = "Pairs per second count (breakpoint, proposition) pairs.\n\n" + "\n\n".join(parts)
    command = "each run's command above (run on the card named), then `.venv/bin/python benchmarks/beliefs_babi.py record <run JSON files> --note <analysis>` on"
    devices = sorted({json.loads(Path(p).read_text())["device"] for p in paths})
    machine = f"{', '.join(devices)} (the runs above; recorded on this machine)"
    record_section(
        section or SECTIONS[first], text + "\n\n" + note, command=command, machine=machine
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run")
    go.add_argument("--data", default="../shared/data/beliefs/babi/en-10k")
    go.add_argument("--encoder", default="minilm")
    go.add_argument("--out", default="out/babi")
    go.add_argument("--format", choices=["babi", "clutrr"], default="babi")
    go.add_argument("--tasks", type=int, nargs="+", default=[1, 2])
    go.add_argument("--train-limit", type=int, default=None)
    go.add_argument("--test-limit", type=int, default=None)
    go.add_argument("--epochs", type=int, default=4)
    go.add_argument("--batch-size", type=int, default=32)
    go.add_argument("--lr", type=float, default=1e-4)
    go.add_argument("--head-lr", type=float, default=1e-3)
    go.add_argument("--scorer", default="mlp")
    go.add_argument("--constraint-weight", type=float, default=0.1)
    go.add_argument(
        "--attention", nargs="*", default=["prefix", "bidirectional"], help="none: flat only"
    )
    go.add_argument("--reader", choices=["none", "attention"], default="none")
    go.add_argument("--flat-pairs", type=int, default=100_000)
    go.add_argument("--flat-batch-size", type=int, default=256)
    go.add_argument(
        "--flat-stories", type=int, default=20, help="test stories per bAbI task (CLUTRR: in all)"
    )
    go.add_argument(
        "--train-seconds", type=float, default=30, help="training cap per breakpoint model"
    )
    go.add_argument("--skip-flat", action="store_true")
    go.add_argument("--skip-hypothesis-only", action="store_true")
    go.add_argument("--flat-seconds", type=float, default=None, help="cap on flat training")
    go.add_argument(
        "--save-predictions", action="store_true", help="write test probabilities (npz)"
    )
    go.add_argument("--freeze-encoder", action="store_true", help="breakpoint models: heads only")
    go.add_argument(
        "--frozen-encoder-fraction",
        type=float,
        default=0.0,
        help="breakpoint models: heads only for this fraction of training, then fine-tuning",
    )
    go.add_argument("--budget", type=float, default=100, help="seconds; later stages are skipped")
    rec = sub.add_parser("record")
    rec.add_argument("results", type=Path, nargs="+")
    rec.add_argument("--note", default="", help="analysis appended under the tables")
    rec.add_argument("--section", default=None, help="RESULTS.md section (default: by format)")
    args = parser.parse_args()
    if args.command == "run":
        run(args)
    else:
        record_results(args.results, args.note, args.section)


if __name__ == "__main__":
    main()

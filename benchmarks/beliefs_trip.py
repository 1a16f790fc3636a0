# make bench: skip trains models: a study driver that records a GPU run, not a speed measurement
"""TRIP tiers (plausibility / consistency / verifiability) from predicted physical states.

The shared snapshot holds TRIP's 322 cloze *dev* pairs only (situation_modeling trip_eval file, with
RoBERTa's predictions), so models train on one part and are tested on the other, split by story
group (``nlprec.beliefs.trip.split_pairs``: no story in both parts). Reported on the test part:
- breakpoint (MiniLM, prefix attention, MLP scorer), flat (cross-encoder, one pass per pair; on a
  subset of test pairs, with the breakpoint model re-scored on the same subset),
  hypothesis-only, majority;
- RoBERTa (Storks et al. 2021) from the predictions in the file, through the same tier code;
- gold states through the same conflict rule (what the rule can reach with perfect states).

Run (trains and predicts; CPU or a GPU, needs no MLflow / scikit-learn; writes predictions):
    PYTHONPATH=packages/core/src:packages/beliefs/src python benchmarks/beliefs_trip.py run \
        --out out/trip --budget 30
Score on this machine (metrics of the run's predictions; RoBERTa and gold-state rows), then record:
    .venv/bin/python benchmarks/beliefs_trip.py score out/trip
    .venv/bin/python benchmarks/beliefs_trip.py record out/trip/trip_results.json --notes "..."
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from nlprec.beliefs.baselines import FlatPairModel, MajorityBaseline, predict_flat, train_flat
from nlprec.beliefs.metrics import evaluate
from nlprec.beliefs.model import BreakpointConfig, BreakpointModel
from nlprec.beliefs.records import UNKNOWN
from nlprec.beliefs.training import TrainConfig, predict_breakpoint, train_breakpoint
from nlprec.beliefs.trip import (
    example_groups,
    load_trip,
    read_pairs,
    split_pairs,
    story_folds,
)
from nlprec.beliefs.trip_tiers import belief_tiers, reference_tiers

SECTION = "beliefs: TRIP"
PUBLISHED_ROBERTA_TEST = {"plausibility": 0.729, "consistency": 0.191, "verifiability": 0.091}
TIERS = (
    "trip_plausibility",
    "trip_consistency",
    "trip_verifiability",
    "trip_verifiability_evidence",
)


def _gold_probs(story) -> np.ndarray:
    labels = np.asarray(story.labels)
    probs = np.zeros((*labels.shape, 3), dtype=np.float32)
    for (t, p), label in np.ndenumerate(labels):
        probs[t, p, label if label >= 0 else UNKNOWN] = 1.0
    return probs


def _parts(args: argparse.Namespace):
    """(train stories, test stories, test pairs, split description) for the run's arguments."""
    pairs = read_pairs(Path(args.data))
    split = {s: split_pairs(pairs, s, args.test_fraction, args.seed) for s in ("train", "test")}
    train = load_trip(
        args.data, "train", args.test_fraction, args.seed, args.limit, args.unknown_keep
    )
    test = load_trip(args.data, "test", args.test_fraction, args.seed, args.limit)
    described = {
        s: {"pairs": len(p), "groups": len(set(example_groups(p)))} for s, p in split.items()
    }
    return train, test, split["test"][: args.limit], described


def _save(path: Path, predictions: list[np.ndarray]) -> None:
    np.savez_compressed(path, **{f"s{i}": p.astype(np.float16) for i, p in enumerate(predictions)})


def _load(path: Path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"s{i}"].astype(np.float32) for i in range(len(data.files))]


def run(args: argparse.Namespace) -> None:
    """Train and predict; writes one predictions file per model and run_info.json as it goes (a
    run cut short keeps what it finished). Needs no MLflow or scikit-learn (GPU machines)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, test, _, described = _parts(args)
    info: dict = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "CPU",
        "threads": args.threads,
        "load_average": os.getloadavg()[0],
        "args": {k: v for k, v in vars(args).items() if k != "func"},
        "split": described,
        "stats": {},
    }

    def save(name: str, predictions: list[np.ndarray], **stats) -> None:
        _save(out / f"pred_{name}.npz", predictions)
        info["stats"][name] = stats
        (out / "run_info.json").write_text(json.dumps(info, indent=2, default=float))
        print(name, json.dumps(stats, default=float), flush=True)

    cfg = BreakpointConfig(encoder=args.encoder, encoder_layers=args.layers, scorer="mlp")
    model = BreakpointModel(cfg)
    train_cfg = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, head_lr=1e-3,
        max_seconds=args.budget, frozen_encoder_fraction=args.frozen_fraction,
    )  # fmt: skip
    stats = train_breakpoint(model, train, train_cfg, device)
    predictions, rate = predict_breakpoint(model, test, device, batch_size=8)
    save("breakpoint", predictions, infer_pairs_per_s=round(rate), **stats)
    if args.cross_fit:
        save("breakpoint_train", cross_fit(args, cfg, train_cfg, train, device), folds=2)

    flat_cfg = TrainConfig(epochs=1, batch_size=64, lr=1e-4, max_seconds=args.flat_budget)
    flat = FlatPairModel(args.encoder, args.layers).float()  # an fp16 checkpoint trains in fp32
    flat_stats = train_flat(flat, train, flat_cfg, device, args.flat_train_pairs)
    subset = test[: 2 * args.flat_pairs_eval]
    flat_pred, flat_rate = predict_flat(flat, subset, device, batch_size=args.flat_batch)
    save("flat", flat_pred, infer_pairs_per_s=round(flat_rate), **flat_stats)

    hyp = FlatPairModel(args.encoder, args.layers, hypothesis_only=True).float()
    hyp_stats = train_flat(hyp, train, flat_cfg, device, args.flat_train_pairs)
    save("hypothesis_only", predict_flat(hyp, test, device, args.flat_batch)[0], **hyp_stats)


def cross_fit(args, cfg, train_cfg, train, device) -> list[np.ndarray]:
    """Belief tables of the train part without leakage (for ``beliefs_trip_learned.py``): a model
    trained on one half of the train part's story groups predicts the other half, and back."""
    pairs = split_pairs(read_pairs(Path(args.data)), "train", args.test_fraction, args.seed)
    folds = story_folds(train, pairs[: args.limit], 2)
    tables: list[np.ndarray] = [np.empty(0)] * len(train)
    for k in (0, 1):
        held = [n for n, f in enumerate(folds) if f == k]
        model = BreakpointModel(cfg)
        train_breakpoint(model, [s for s, f in zip(train, folds) if f != k], train_cfg, device)
        predicted, _ = predict_breakpoint(model, [train[n] for n in held], device, batch_size=8)
        for n, table in zip(held, predicted):
            tables[n] = table
    return tables


def prior_corrected(predictions: list[np.ndarray], unknown_keep: float) -> list[np.ndarray]:
    """Undo the thinned unknown labels of training: P(unknown) times 1 / keep, renormalised (the
    label prior at test time is the unthinned one)."""
    fixed = []
    for probs in predictions:
        scaled = probs.copy()
        scaled[..., UNKNOWN] /= unknown_keep
        fixed.append(scaled / scaled.sum(-1, keepdims=True))
    return fixed


def _row(stories, predictions, **extra) -> dict:
    # the recorded figures used the cloze-restricted rule
    metrics = evaluate(stories, predictions) | belief_tiers(stories, predictions, restrict=True)
    keep = ("prop_acc", "macro_f1", *TIERS)
    return {"pairs": len(stories) // 2, **{k: metrics.get(k) for k in keep}, **extra}


def score(args: argparse.Namespace) -> None:
    """Metrics of a run's predictions on this machine (same split arguments as the run)."""
    folder = Path(args.run)
    info = json.loads((folder / "run_info.json").read_text())
    run_args = argparse.Namespace(**info["args"])
    train, test, test_pairs, _ = _parts(run_args)
    keep = run_args.unknown_keep
    rows: dict = {
        "roberta (file predictions)": {"pairs": len(test_pairs), **reference_tiers(test_pairs)}
    }
    rows["gold states (rule ceiling)"] = _row(test, [_gold_probs(s) for s in test])
    for name in ("breakpoint", "flat", "hypothesis_only"):
        path = folder / f"pred_{name}.npz"
        if not path.exists():
            continue
        predictions = _load(path)
        scored = test[: len(predictions)]
        stats = info["stats"].get(name, {})
        extra = {k: stats[k] for k in ("train_seconds", "infer_pairs_per_s") if k in stats}
        rows[name] = _row(scored, prior_corrected(predictions, keep), **extra)
        rows[f"{name} (no prior correction)"] = _row(scored, predictions)
        if name == "flat":
            rows["breakpoint (flat's subset)"] = _row(
                scored, prior_corrected(_load(folder / "pred_breakpoint.npz")[: len(scored)], keep)
            )
    rows["majority"] = _row(test, MajorityBaseline().fit(train).predict(test))
    uniform = [np.full((s.n_breakpoints, len(s.propositions), 3), 1 / 3) for s in test]
    rows["uniform probabilities (chance under the rule)"] = _row(test, uniform)
    if (folder / "pred_breakpoint.npz").exists():
        corrected = prior_corrected(_load(folder / "pred_breakpoint.npz"), keep)
        rows["breakpoint, every sentence pair (no cloze restriction)"] = {
            "pairs": len(test) // 2,
            **belief_tiers(test, corrected, restrict=False),
        }
    results = {**info, "rows": rows}
    (folder / "trip_results.json").write_text(json.dumps(results, indent=2, default=float))
    print(json.dumps(rows, indent=2, default=float))


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ("–" if value is None else str(value))


def record(args: argparse.Namespace) -> None:
    from nlprec.core.bench import record_section

    results = json.loads(Path(args.results).read_text())
    a, split = results["args"], results["split"]
    lines = [
        "TRIP cloze pairs of the situation_modeling trip_eval **dev** file (322 pairs; TRIP train is "
        "not in the snapshot). Split by story group (same story number, or any shared story text: "
        f"`trip.split_pairs`, test fraction {a['test_fraction']}, seed {a['seed']}): "
        f"train {split['train']['pairs']} pairs / {split['train']['groups']} groups, "
        f"test {split['test']['pairs']} pairs / {split['test']['groups']} groups, no story in both. "
        f"Training labels: unknown pairs thinned to {a['unknown_keep']:.0%} "
        "(98.6 % of all pairs are unknown); test labels are all kept.",
        "",
        f"Published RoBERTa (Storks et al. 2021, TRIP **test**): plausibility "
        f"{PUBLISHED_ROBERTA_TEST['plausibility']}, consistency {PUBLISHED_ROBERTA_TEST['consistency']}, "
        f"verifiability {PUBLISHED_ROBERTA_TEST['verifiability']}.",
        "",
        "| model (TRIP test part) | pairs | plausibility | consistency | verifiability (all decoded states) | verifiability (conflict evidence) | prop acc | macro-F1 | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in results["rows"].items():
        notes = []
        if "train_seconds" in row:
            notes.append(f"trained {row['train_seconds']:.0f} s")
        if "infer_pairs_per_s" in row:
            notes.append(f"{row['infer_pairs_per_s']} pairs/s inference")
        cells = [name, str(row["pairs"])] + [_fmt(row.get(k)) for k in TIERS]
        cells += [_fmt(row.get("prop_acc")), _fmt(row.get("macro_f1")), "; ".join(notes)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", args.notes or ""]
    machine = (
        f"{results['device']} ({results['threads']} torch threads, load average "
        f"{results['load_average']:.1f} at start)"
    )
    command = args.command or (
        "PYTHONPATH=packages/core/src:packages/beliefs/src python benchmarks/beliefs_trip.py run "
        + " ".join(
            f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
            for k, v in a.items()
            if v is not None and v is not False and k != "func"
        )
    )
    record_section(SECTION, "\n".join(lines), command=command, machine=machine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("run")
    p.add_argument("--data", default="../shared/data/beliefs/trip")
    p.add_argument("--out", default="out/trip")
    p.add_argument("--test-fraction", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="first N pairs of each part")
    p.add_argument("--unknown-keep", type=float, default=0.05)
    p.add_argument("--encoder", default="minilm")
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--frozen-fraction", type=float, default=0.0)
    p.add_argument("--budget", type=float, default=900, help="breakpoint training seconds")
    p.add_argument("--flat-budget", type=float, default=300, help="flat training seconds")
    p.add_argument("--flat-train-pairs", type=int, default=20000)
    p.add_argument(
        "--flat-pairs-eval", type=int, default=20, help="test pairs the flat model scores"
    )
    p.add_argument("--flat-batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--cross-fit", action="store_true",
        help="also predict the train part by 2-fold cross-fitting (pred_breakpoint_train.npz)",
    )  # fmt: skip
    p.set_defaults(func=run)
    sc = sub.add_parser("score")
    sc.add_argument("run", help="the run's --out folder")
    sc.set_defaults(func=score)
    r = sub.add_parser("record")
    r.add_argument("results")
    r.add_argument("--notes", default="")
    r.add_argument("--command", default="", help="the exact command behind the figures")
    r.set_defaults(func=record)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()

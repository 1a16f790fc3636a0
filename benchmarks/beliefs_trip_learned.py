# make bench: skip trains models: a study driver that records a GPU run, not a speed measurement
"""TRIP: the learned conflict detector (``nlprec.beliefs.trip_detector``) against the rule.

Same split as section "beliefs: TRIP" (trip_eval dev file, story groups, test fraction 0.5, seed
0). The detector is trained on the train part only; its regularisation C is chosen by
cross-validation over train-part story groups (conflict localisation in the implausible story;
ties go to the smaller C); then it and the rule decide the test part from the same belief tables.

Train-part belief tables (``--train-states``):
- ``gold``: the train part's annotated states as probabilities, ``--smoothing`` spread over the
  other two values (no breakpoint-model predictions of the train part exist: the GPU runs
  predicted the test part only, and on this CPU one training step takes about 20 s, so the
  cross-fitted breakpoint models the detector should be trained on are out of reach);
- a ``pred_breakpoint_train.npz`` file (stories in ``load_trip(..., "train")`` order), e.g. from
  ``beliefs_trip.py run --predict-train``.
Test-part belief tables: a ``beliefs_trip.py run`` folder (``pred_breakpoint.npz``, prior-corrected
as in that section), and the test part's annotated states.

    .venv/bin/python benchmarks/beliefs_trip_learned.py score --run <run folder> \
        --out out/trip_learned.json
    .venv/bin/python benchmarks/beliefs_trip_learned.py record out/trip_learned.json --notes "..."
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from beliefs_trip import _load, prior_corrected  # same folder: the run's files, its correction
from nlprec.beliefs.trip import load_trip, read_pairs, split_pairs, story_folds
from nlprec.beliefs.trip_detector import LearnedConflictDetector, label_probs
from nlprec.beliefs.trip_tiers import (
    belief_tiers,
    differing_sentences,
    pair_members,
    rule_scorer,
    through,
)

SECTION = "beliefs: TRIP learned conflict detector"
TIERS = (
    "trip_plausibility",
    "trip_consistency",
    "trip_verifiability",
    "trip_verifiability_evidence",
)


def localised(stories, tables, scorer) -> list[bool]:
    """Per example: the top-scored pair through a differing sentence of the *implausible* story
    is its annotated conflict (ignores the plausible story, whose annotated states are blank on
    its differing sentence, so a plausibility score on annotated states is inflated)."""
    hits = []
    for a, b in pair_members(stories):
        differ = differing_sentences(stories[a], stories[b])
        bad = a if stories[b].meta["trip_plausible"] else b
        c = through(scorer(stories[bad], tables[bad], differ), differ)
        i, j = np.unravel_index(int(np.argmax(c)), c.shape)
        hits.append((int(i), int(j)) == tuple(stories[bad].meta["trip_conflict"]))
    return hits


def cross_validate(stories, tables, folds, c: float, negatives: str) -> float:
    """Conflict localisation accuracy (``localised``) over held-out folds of the train part."""
    hits = []
    for k in sorted(set(folds)):
        fit_idx = [n for n, f in enumerate(folds) if f != k]
        held = [n for n, f in enumerate(folds) if f == k]
        detector = LearnedConflictDetector(c, negatives).fit(
            [stories[n] for n in fit_idx], [tables[n] for n in fit_idx]
        )
        hits += localised([stories[n] for n in held], [tables[n] for n in held], detector.matrix)
    return float(np.mean(hits))


def score(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    info = json.loads((Path(args.run) / "run_info.json").read_text())
    run_args = info["args"]
    if (run_args["test_fraction"], run_args["seed"]) != (args.test_fraction, args.seed):
        raise SystemExit(f"{args.run}: its split differs from --test-fraction / --seed")
    pairs = read_pairs(Path(args.data))
    train_pairs = split_pairs(pairs, "train", args.test_fraction, args.seed)
    limit = run_args.get("limit")
    train_pairs = train_pairs[:limit]
    train = load_trip(args.data, "train", args.test_fraction, args.seed, limit)  # not thinned
    test = load_trip(args.data, "test", args.test_fraction, args.seed, limit)
    if args.train_states == "gold":
        train_tables = [label_probs(s, args.smoothing) for s in train]
    else:
        train_tables = prior_corrected(_load(Path(args.train_states)), run_args["unknown_keep"])
    folds = story_folds(train, train_pairs, args.folds)
    cv = {c: cross_validate(train, train_tables, folds, c, args.negatives) for c in args.c}
    best = max(cv, key=lambda c: (round(cv[c], 9), -c))  # ties: the stronger penalty
    detector = LearnedConflictDetector(best, args.negatives).fit(train, train_tables)
    test_pred = prior_corrected(
        _load(Path(args.run) / "pred_breakpoint.npz"), run_args["unknown_keep"]
    )
    if len(test_pred) != len(test):
        raise SystemExit(f"{args.run}: {len(test_pred)} tables for {len(test)} test stories")
    test_gold = [label_probs(s) for s in test]
    rows = {}
    for states, tables in (("breakpoint", test_pred), ("gold", test_gold)):
        for name, scorer in (("rule", rule_scorer), ("learned", detector.matrix)):
            rows[f"{states} states, {name}"] = belief_tiers(
                test, tables, restrict=True, scorer=scorer
            )
        rows[f"{states} states, rule picks the story, learned the pair"] = belief_tiers(
            test, tables, restrict=True, scorer=rule_scorer, pair_scorer=detector.matrix
        )
    localisation = {
        f"{states} states, {name}": float(np.mean(localised(test, tables, scorer)))
        for states, tables in (("breakpoint", test_pred), ("gold", test_gold))
        for name, scorer in (("rule", rule_scorer), ("learned", detector.matrix))
    }
    rows["train part (in-sample), learned"] = belief_tiers(
        train, train_tables, restrict=True, scorer=detector.matrix
    )
    results = {
        "rows": rows,
        "localisation": localisation,
        "cv": {str(c): v for c, v in cv.items()},
        "c": best,
        "weights": detector.weights(),
        "training_pairs": detector.n_pairs,
        "training_conflicts": detector.n_conflicts,
        "test_pairs": len(test) // 2,
        "train_pairs": len(train) // 2,
        "states_run": {"device": info["device"], "args": run_args},
        "args": {k: v for k, v in vars(args).items() if k != "func"},
        "seconds": time.perf_counter() - started,
        "load_average": os.getloadavg(),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=float))
    print(json.dumps({k: results[k] for k in ("rows", "localisation", "cv", "c")}, indent=2))


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def record(args: argparse.Namespace) -> None:
    from nlprec.core.bench import record_section

    results = json.loads(Path(args.results).read_text())
    a = results["args"]
    lines = [
        "| decision (test part unless said) | plausibility | consistency | verifiability (all) | "
        "verifiability (evidence) |",
        "|---|---|---|---|---|",
    ]
    for name, row in results["rows"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(row.get(k)) for k in TIERS) + " |")
    lines += [
        "",
        "| conflict localised in the implausible story (test part) | rule | learned |",
        "|---|---|---|",
    ]
    loc = results["localisation"]
    for states in ("breakpoint", "gold"):
        cells = [_fmt(loc[f"{states} states, {name}"]) for name in ("rule", "learned")]
        lines.append(f"| {states} states | " + " | ".join(cells) + " |")
    cv = ", ".join(f"C={c}: {v:.3f}" for c, v in results["cv"].items())
    top = sorted(results["weights"].items(), key=lambda kv: -abs(kv[1]))[:6]
    lines += [
        "",
        f"Detector: logistic regression on {len(results['weights'])} pair features "
        f"(`trip_detector.FEATURES`), {results['training_pairs']} train-part sentence pairs "
        f"through a differing sentence, {results['training_conflicts']} of them annotated "
        f"conflicts; C = {results['c']} chosen by {a['folds']}-fold cross-validation over "
        f"train-part story groups (conflict localisation: {cv}). Largest standardised weights: "
        + ", ".join(f"{k} {w:+.2f}" for k, w in top)
        + ".",
        "",
        args.notes,
    ]
    la = results["load_average"]
    machine = (
        f"{results['machine']} (load average {la[0]:.1f} / {la[1]:.1f} / {la[2]:.1f} at the end; "
        f"{results['seconds']:.0f} s); breakpoint states from the {results['states_run']['device']} "
        "run of section *beliefs: TRIP*"
    )
    command = args.command or (
        ".venv/bin/python benchmarks/beliefs_trip_learned.py score "
        + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in a.items()
        )
    )
    record_section(SECTION, "\n".join(lines), command=command, machine=machine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(required=True)
    s = sub.add_parser("score")
    s.add_argument("--run", required=True, help="a beliefs_trip.py run folder (test predictions)")
    s.add_argument("--data", default="../shared/data/beliefs/trip")
    s.add_argument("--test-fraction", type=float, default=0.5)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--train-states", default="gold", help="gold, or a train predictions .npz")
    s.add_argument("--smoothing", type=float, default=0.1, help="gold train states only")
    s.add_argument("--c", type=float, nargs="+", default=[0.001, 0.01, 0.1, 1.0, 10.0])
    s.add_argument("--folds", type=int, default=5)
    s.add_argument(
        "--negatives", choices=["both", "implausible"], default="implausible",
        help="train on both stories' pairs, or the implausible story's only (gold states)",
    )  # fmt: skip
    s.add_argument("--out", default="out/trip_learned.json")
    s.set_defaults(func=score)
    r = sub.add_parser("record")
    r.add_argument("results")
    r.add_argument("--notes", default="")
    r.add_argument("--command", default="")
    r.set_defaults(func=record)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()

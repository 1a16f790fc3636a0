"""clinical-longdoc on one GPU: step cost across lengths, the three tasks (long model vs the short
baselines, several seeds), and continued MLM, in one device call; then record the figures here.

Prepare the carried folder here once (git-ignored; the data never enters the repository):

    D=.carry/longdoc/data/clinical S=../shared/data/clinical
    mkdir -p $D/{mtsamples,covid_qa,ncbi_disease,mts_dialog,nli4ct} .carry/longdoc/site
    cp $S/mtsamples/{split.json,mtsamples_dedup_multilabel.jsonl.gz} $D/mtsamples/
    cp $S/covid_qa/200423_covidQA.json $D/covid_qa/; cp $S/ncbi_disease/*.tsv $D/ncbi_disease/
    cp $S/mts_dialog/MTS-Dialog-TrainingSet.csv $D/mts_dialog/; cp $S/nli4ct/Complete_dataset.zip $D/nli4ct/
    cp -r .venv/lib/python3.11/site-packages/seqeval .carry/longdoc/site/

On the device (no MLflow or pydantic there; carry .carry/minilm-fp16 and .carry/longdoc):

    PYTHONPATH=packages/clinical-longdoc/src:.carry/longdoc/site python benchmarks/clinical_longdoc_gpu.py \
        run --model .carry/minilm-fp16 --data .carry/longdoc/data --out $OUT --budget 230

Dry run on CPU with tiny settings (what CI-grade checking of this script means):

    python benchmarks/clinical_longdoc_gpu.py run --tiny --model <minilm dir> --data ../shared/data --out /tmp/x

Back here, write RESULTS.md sections and the figures from the returned JSON:

    python benchmarks/clinical_longdoc_gpu.py record --results <dir holding gpu_results.json>
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

logger = logging.getLogger("clinical_longdoc_gpu")
FIGURES = Path(__file__).resolve().parents[1] / "packages" / "clinical-longdoc" / "figures"


# ====================================================================== run (device)


class Clock:
    """A whole-run deadline plus per-section shares of it."""

    def __init__(self, budget_s: float):
        self.start = time.perf_counter()
        self.deadline = self.start + budget_s

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def section_deadline(self, share_s: float) -> float:
        return min(self.deadline, time.perf_counter() + share_s)


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu"


def _peak_reset(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def section_costs(env, clock: Clock, share_s: float) -> list[dict]:
    from nlprec.clinical_longdoc.costs import COST_VARIANTS, step_cost

    deadline = clock.section_deadline(share_s)
    rows = []
    lengths = (128, 256) if env["tiny"] else env["cost_lengths"]
    for length in lengths:
        for variant in env["cost_variants"] or COST_VARIANTS:
            if time.perf_counter() > deadline:
                rows.append({"variant": variant, "length": length, "skipped": "time"})
                _record_row(env, "costs", rows[-1])
                continue
            try:
                _peak_reset(env["device"])
                row = step_cost(
                    variant,
                    length,
                    batch_size=2,
                    device=env["device"],
                    repeats=3,
                    source=env["source"],
                )
            except Exception as exc:  # an OOM or kernel failure is a result too
                row = {"variant": variant, "length": length, "error": repr(exc)[:300]}
            rows.append(row)
            _record_row(env, "costs", row)
    return rows


def _train_settings(env, seed: int, epochs: int, lr: float, max_tokens: int):
    from nlprec.clinical_longdoc.training import TrainSettings

    return TrainSettings(
        epochs=epochs,
        lr=lr,
        device=env["device"],
        seed=seed,
        max_tokens=max_tokens,
        max_batch=32,
        progress=False,
    )


def _runs_in_seed_order(plan: dict[str, list[int]]) -> list[tuple[str, int]]:
    """Seed 0 of every variant first, so a cut-short section still covers every variant."""
    seeds = sorted({s for ss in plan.values() for s in ss})
    return [(v, s) for s in seeds for v, ss in plan.items() if s in ss]


def _planned(env, default: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The section's runs: ``--plan`` overrides the default list for this section."""
    override = env["plan"].get(env["section"])
    return [tuple(run) for run in override] if override is not None else default


def _record_row(env, section: str, row: dict) -> None:
    """Append one finished run to the results and write them out at once (a killed call keeps it)."""
    env["results"]["sections"].setdefault(section, {"rows": []})["rows"].append(row)
    env["save"]()
    logger.info("%s %s", section, {k: v for k, v in row.items() if k not in ("trace", "losses")})


def _timed_run(env, name: str, seed: int, fn) -> dict:
    _peak_reset(env["device"])
    started = time.perf_counter()
    try:
        scores = fn()
    except Exception as exc:
        return {
            "variant": name,
            "seed": seed,
            "error": repr(exc)[:500],
            "trace": traceback.format_exc()[-1500:],
        }
    return {
        "variant": name,
        "seed": seed,
        **scores,
        "gpu_seconds": time.perf_counter() - started,
        "peak_gib": _peak_gib(env["device"]),
    }


def _run_plan(env, runs: list[tuple[str, int]], deadline: float, train_and_score) -> list[dict]:
    """Run (variant, seed) pairs until the deadline; each finished or skipped run is recorded at once.

    train_and_score(variant_name, seed) -> scores dict.
    """
    rows = []
    for name, seed in _planned(env, runs):
        if time.perf_counter() > deadline:
            rows.append({"variant": name, "seed": seed, "skipped": "time"})
        else:
            torch.manual_seed(seed)
            rows.append(
                _timed_run(
                    env, name, seed, lambda name=name, seed=seed: train_and_score(name, seed)
                )
            )
        _record_row(env, env["section"], rows[-1])
    return rows


FROZEN = {  # frozen encoder + logistic regression: name -> (variant whose encoder/segments it uses, pooling)
    "frozen_chunk_mean": ("chunk_mean", "mean"),
    "frozen_chunk_mean_cls": ("chunk_mean", "cls"),
    "frozen_long": ("long", "mean"),
}


def _mtsamples_plan(tiny: bool) -> list[tuple[str, int]]:
    """Three seeds of the long default and of the two best short baselines of session 1 first,
    then the frozen probes (deterministic: one run each), then the costly sparse variants (one
    seed), so a deadline cuts what matters least."""
    if tiny:
        return [("long", 0), ("chunk_mean", 0), ("frozen_chunk_mean", 0), ("long_longformer", 0)]
    main = [(v, s) for s in (0, 1, 2) for v in ("long", "chunk_mean", "head_tail")]
    return main + [(v, 0) for v in (*FROZEN, "long_longformer", "long_bigbird")]


def section_mtsamples(env, clock: Clock, share_s: float) -> list[dict]:
    from nlprec.clinical_longdoc.classify import DocumentClassifierModel
    from nlprec.clinical_longdoc.data import load_mtsamples
    from nlprec.clinical_longdoc.variants import build_encoder, get_variant

    splits = load_mtsamples(env["data"])
    tiny = env["tiny"]
    if tiny:
        splits = {k: v.take(12) for k, v in splits.items()}
    labels = sorted(set(splits["train"].labels))
    max_length = 512 if tiny else 4096
    short = 128 if tiny else 512
    recipe = env["cls_recipe"]

    def train_and_score(name: str, seed: int) -> dict:
        frozen = name in FROZEN
        variant = get_variant(FROZEN[name][0] if frozen else name)
        pooling = FROZEN[name][1] if frozen else recipe["pooling"]
        encoder = build_encoder(variant, env["source"], max_length=max_length)
        length = max_length if variant.attention else short
        model = DocumentClassifierModel(
            encoder, env["tokenizer"], labels, variant.strategy, length, pooling=pooling
        )
        settings = _train_settings(
            env, seed, 0 if frozen else recipe["epochs"], recipe["lr"], 4096 if tiny else 32768
        )
        settings.head_lr = recipe["head_lr"]
        history = model.fit(
            splits["train"], splits["dev"], settings, linear_probe=frozen or recipe["probe"]
        )
        scores = model.evaluate(splits["test"], settings)
        return {
            **scores,
            "recipe": "frozen + LR, " + pooling if frozen else recipe["label"],
            "best_epoch": history["best_epoch"],
            "dev": history["dev"],
            "probe": history["probe"],
            "train_seconds": history["seconds"],
        }

    return _run_plan(env, _mtsamples_plan(tiny), clock.section_deadline(share_s), train_and_score)


def section_covid_qa(env, clock: Clock, share_s: float) -> list[dict]:
    from nlprec.clinical_longdoc.data import load_covid_qa
    from nlprec.clinical_longdoc.qa import QAModel
    from nlprec.clinical_longdoc.variants import build_encoder, get_variant

    splits = load_covid_qa(env["data"], seed=0)
    tiny = env["tiny"]
    if tiny:
        splits = {k: v[:4] for k, v in splits.items()}
    max_length = 512 if tiny else 4096
    short = 128 if tiny else 512
    three = [0] if tiny else [0, 1, 2]
    recipe = env["qa_recipe"]
    plan = {recipe["long_variant"]: three, "sliding_window": three}

    def train_and_score(name: str, seed: int) -> dict:
        variant = get_variant("head" if name == "sliding_window" else name)
        encoder = build_encoder(
            variant, env["source"], max_length=max_length, attention_window=short
        )
        length = max_length if variant.attention else short
        model = QAModel(
            encoder, env["tokenizer"], max_length=length, stride=length // 4, max_answer_tokens=96
        )
        epochs = recipe["long_epochs"] if variant.attention else recipe["epochs"]
        settings = _train_settings(
            env, seed, epochs, recipe["lr"], 4096 if tiny else recipe["max_tokens"]
        )
        settings.head_lr = recipe["head_lr"]
        history = model.fit(
            splits["train"],
            splits["dev"] if recipe["dev"] else None,
            settings,
            negative_keep=recipe["negative_keep"],
        )
        scores = model.evaluate(splits["test"], settings)
        return {
            **scores,
            "epochs": epochs,
            "lr": recipe["lr"],
            "recipe": f"{epochs} ep, " + recipe["label"],
            "windows": history.get("windows"),
            "losses": history["loss"],
            "dev": history["dev"],
            "best_epoch": history["best_epoch"],
            "train_seconds": history["seconds"],
        }

    return _run_plan(
        env, _runs_in_seed_order(plan), clock.section_deadline(share_s), train_and_score
    )


def section_ner(env, clock: Clock, share_s: float) -> list[dict]:
    from nlprec.clinical_longdoc.data import load_ncbi
    from nlprec.clinical_longdoc.tagging import TokenTaggerModel
    from nlprec.clinical_longdoc.variants import build_encoder, get_variant

    splits = load_ncbi(env["data"])
    tiny = env["tiny"]
    if tiny:
        splits = {k: v[:16] for k, v in splits.items()}
    tags = sorted({t for s in splits["train"] for t in s.tags})
    three = [0] if tiny else [0, 1, 2]
    plan = {"long": three, "head": three, "long_longformer": [0]}

    def train_and_score(name: str, seed: int) -> dict:
        encoder = build_encoder(get_variant(name), env["source"], max_length=512 if tiny else 4096)
        model = TokenTaggerModel(encoder, env["tokenizer"], tags, max_length=512)
        settings = _train_settings(env, seed, 1 if tiny else 2, 1e-4, 4096 if tiny else 16384)
        history = model.fit(splits["train"], splits["dev"], settings)
        scores = model.evaluate(splits["test"], settings)
        return {**scores, "best_epoch": history["best_epoch"], "train_seconds": history["seconds"]}

    return _run_plan(
        env, _runs_in_seed_order(plan), clock.section_deadline(share_s), train_and_score
    )


def section_mlm(env, clock: Clock, share_s: float) -> list[dict]:
    from nlprec.clinical_longdoc.longify import longify
    from nlprec.clinical_longdoc.mlm import build_clinical_corpus, continue_mlm

    corpus = build_clinical_corpus(env["data"])
    texts = [t for source in corpus.values() for t in source]
    tiny = env["tiny"]
    max_length = 512 if tiny else 4096
    encoder = longify(
        env["source"],
        max_length=max_length,
        attention="longformer",
        attention_window=128 if tiny else 512,
    )
    budget = max(5.0, min(share_s, clock.left() - 5))
    _peak_reset(env["device"])
    result = continue_mlm(
        encoder,
        env["tokenizer"],
        texts[:40] if tiny else texts,
        max_length=max_length,
        steps=3 if tiny else 400,
        batch_size=2,
        lr=5e-5,
        device=env["device"],
        time_budget_s=budget,
        progress=False,
    )
    result["peak_gib"] = _peak_gib(env["device"])
    result["corpus_texts"] = {k: len(v) for k, v in corpus.items()}
    return [result]


SECTIONS = {  # name: (function, share of the time left when the section starts, among those left)
    "costs": (section_costs, 0.17),
    "mtsamples": (section_mtsamples, 0.38),
    "covid_qa": (section_covid_qa, 0.28),
    "ner": (section_ner, 0.10),
    "mlm": (section_mlm, 0.07),
}


def run(args) -> None:
    from transformers import AutoModel, AutoTokenizer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    source = AutoModel.from_pretrained(args.model, dtype=torch.float32).base_model
    env = {
        "device": device,
        "source": source,
        "tokenizer": AutoTokenizer.from_pretrained(args.model),
        "data": Path(args.data),
        "tiny": args.tiny,
        "plan": json.loads(args.plan) if args.plan else {},
        "qa_recipe": {
            "epochs": args.qa_epochs,
            "lr": args.qa_lr,
            "head_lr": args.qa_head_lr,
            "negative_keep": args.qa_negative_keep,
            "max_tokens": args.qa_max_tokens,
            "dev": not args.qa_no_dev,
            "long_variant": args.qa_long_variant,
            "long_epochs": args.qa_long_epochs or args.qa_epochs,
            "label": f"lr {args.qa_lr:g} / head {args.qa_head_lr:g}, "
            f"negatives kept {args.qa_negative_keep:g}, {args.qa_max_tokens} tokens per batch"
            + ("" if args.qa_no_dev else ", best epoch on dev"),
        },
        "cost_lengths": tuple(int(n) for n in args.cost_lengths.split(",")),
        "cost_variants": tuple(v for v in args.cost_variants.split(",") if v),
        "cls_recipe": {
            "epochs": args.cls_epochs,
            "lr": args.cls_lr,
            "head_lr": args.cls_head_lr,
            "pooling": args.cls_pooling,
            "probe": not args.no_probe,
            "label": f"{args.cls_pooling}{'' if args.no_probe else ' + LP-FT'}, {args.cls_epochs} ep, lr {args.cls_lr:g} / head {args.cls_head_lr:g}",
        },
    }
    import transformers

    results = {
        "device": _device_name(device),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "model": args.model,
        "budget_s": args.budget,
        "sections": {},
    }
    env["results"] = results
    env["save"] = lambda: (out / "gpu_results.json").write_text(
        json.dumps(results, indent=1, default=str)
    )
    clock = Clock(args.budget)
    wanted = args.sections.split(",") if args.sections else list(SECTIONS)
    shares = {name: share for name, (_, share) in SECTIONS.items()}
    shares.update(
        {k: float(v) for k, v in (item.split("=") for item in args.shares.split(",") if item)}
    )
    for position, name in enumerate(wanted):
        function, share = SECTIONS[name][0], shares[name]
        shares_left = sum(shares[n] for n in wanted[position:])
        env["section"] = name
        started = time.perf_counter()
        try:
            rows = function(env, clock, clock.left() * share / shares_left)
        except Exception as exc:
            rows = [{"error": repr(exc)[:500], "trace": traceback.format_exc()[-2000:]}]
        section = results["sections"].setdefault(name, {"rows": []})
        if not section["rows"]:
            section["rows"] = rows  # mlm, or a section that failed before its first run
        section["seconds"] = time.perf_counter() - started
        env["save"]()
        logger.info("section %s done in %.1fs (%.0fs left)", name, section["seconds"], clock.left())


# ====================================================================== record (here)


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None and v == v]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f} (1 seed)"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f} ({len(values)} seeds)"


def _by_variant(rows: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        if "variant" in row and "error" not in row and "skipped" not in row:
            epochs = row.get(
                "epochs", 1 if "em" in row else None
            )  # QA rows of the first call: 1 epoch
            if row.get("recipe"):
                label = f"{row['variant']} ({row['recipe']})"
            else:
                label = row["variant"] + (f" ({epochs} ep)" if epochs else "")
            grouped.setdefault(label, []).append(row)
    return grouped


def _problems(rows: list[dict]) -> str:
    lines = [
        f"- {r.get('variant')} seed {r.get('seed')}: {r.get('error') or 'skipped (' + r['skipped'] + ')'}"
        for r in rows
        if "error" in r or "skipped" in r
    ]
    return ("\n\nNot measured:\n" + "\n".join(lines)) if lines else ""


def _task_table(rows: list[dict], metrics: list[str]) -> str:
    header = ["variant", *metrics, "GPU-s per run", "peak GiB", "card"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, runs in _by_variant(rows).items():
        cells = [variant] + [_mean_std([r.get(m) for r in runs]) for m in metrics]
        cells.append(f"{statistics.fmean(r['gpu_seconds'] for r in runs):.1f}")
        peaks = [r["peak_gib"] for r in runs if r.get("peak_gib") is not None]
        cells.append(f"{max(peaks):.2f}" if peaks else "–")
        cells.append(_cards(runs))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cards(runs: list[dict]) -> str:
    """'H100 ×3' or 'H200 ×2, H100 ×1': which card ran how many of the seeds."""
    counts: dict[str, int] = {}
    for run in runs:
        card = run.get("card", "?").replace("NVIDIA ", "").split()[0]
        counts[card] = counts.get(card, 0) + 1
    return ", ".join(f"{card} ×{n}" for card, n in counts.items())


def _cost_figure(rows: list[dict], device: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    good = [r for r in rows if "seconds" in r]
    if not good:
        return None
    FIGURES.mkdir(parents=True, exist_ok=True)
    figure, (memory_axis, time_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    for variant in sorted({r["variant"] for r in good}):
        mine = sorted((r for r in good if r["variant"] == variant), key=lambda r: r["length"])
        lengths = [r["length"] for r in mine]
        memory_axis.plot(lengths, [r["peak_gib"] for r in mine], marker="o", label=variant)
        time_axis.plot(lengths, [1000 * r["seconds"] for r in mine], marker="o", label=variant)
    for axis, label in ((memory_axis, "peak memory (GiB)"), (time_axis, "forward+backward (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("tokens")
        axis.set_ylabel(label)
    memory_axis.legend(fontsize=7)
    figure.suptitle(f"MiniLM-L6 long variants, batch 2, bf16 autocast — {device}")
    figure.tight_layout()
    path = FIGURES / "step_cost_gpu.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _cost_table(rows: list[dict]) -> tuple[str, str]:
    good = {(r["variant"], r["length"]): r for r in rows if "seconds" in r}
    lengths = sorted({r["length"] for r in rows})
    variants = sorted({r["variant"] for r in rows})
    header = ["variant", *[f"{n} tok: GiB / ms" for n in lengths]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant in variants:
        cells = [variant]
        for n in lengths:
            r = good.get((variant, n))
            cells.append(f"{r['peak_gib']:.2f} / {1000 * r['seconds']:.0f}" if r else "–")
        lines.append("| " + " | ".join(cells) + " |")
    checks = []
    longest = max(lengths) if lengths else None
    eager = good.get(("full_eager", longest))
    for variant in ("longformer", "bigbird", "full_sdpa"):
        r = good.get((variant, longest))
        if eager and r and eager["peak_gib"] > 0:
            ratio = r["peak_gib"] / eager["peak_gib"]
            verdict = "met" if ratio <= 1 / 3 else "missed"
            checks.append(
                f"- {variant} at {longest}: {ratio:.2f} × eager full attention's peak memory (target ≤ 0.33: {verdict})"
            )
    return "\n".join(lines), "\n".join(checks)


COST_NAME = {
    "long": "full_sdpa",
    "long_full": "full_sdpa",
    "long_local": "local",
    "long_longformer": "longformer",
    "long_bigbird": "bigbird",
}


def _verdict(sections: dict) -> str:
    """Accuracy against cost for every long variant and baseline, and the default it implies.

    Rule: the default is the long variant with the cheapest 4,096-token step whose MTSamples
    macro-F1 on notes > 512 tokens is within one standard deviation (over seeds) of the best long variant.
    """
    costs = sections.get("step_costs") or {
        (r["variant"], r["length"]): r for r in sections["costs"]["rows"] if "seconds" in r
    }
    runs = _by_variant([r for r in sections["mtsamples"]["rows"] if r.get("latest")])
    lines = [
        "| variant | macro-F1 | macro-F1 (notes > 512) | seeds | GPU-s per training run | peak GiB in training | step at 4,096 tok, batch 2: GiB / ms |",
        "|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for label, rows in runs.items():
        variant = rows[0]["variant"]
        values = [r["long_notes_macro_f1"] for r in rows]
        mean = statistics.fmean(values)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        step = costs.get((COST_NAME.get(variant, ""), 4096))
        summary[variant] = (mean, std, step)
        if step:
            card = step.get("card", "?").replace("NVIDIA ", "").split()[0]
            step_text = f"{step['peak_gib']:.2f} / {1000 * step['seconds']:.0f} ({card})"
        elif variant in FROZEN:
            step_text = "(frozen: no training step)"
        else:
            step_text = "(short: 512-token windows)"
        peak = max(r["peak_gib"] or 0 for r in rows)
        overall = _mean_std([r["macro_f1"] for r in rows]).split(" (")[0]
        lines.append(
            f"| {label} | {overall} | {mean:.3f} ± {std:.3f} | {len(values)} | {statistics.fmean(r['gpu_seconds'] for r in rows):.1f} | {peak:.2f} | {step_text} |"
        )
    long_variants = {v: x for v, x in summary.items() if v in COST_NAME and x[2]}
    if not long_variants:
        return (
            "\n".join(lines) + "\n\nNo long variant has both accuracy and a 4,096-token step cost."
        )
    best_variant = max(long_variants, key=lambda v: long_variants[v][0])
    best_mean, best_std, _ = long_variants[best_variant]
    eligible = [
        v
        for v, (mean, _, _) in long_variants.items()
        if mean >= best_mean - max(best_std, long_variants[v][1])
    ]
    default = min(eligible, key=lambda v: long_variants[v][2]["seconds"])
    long_models = {v: x for v, x in summary.items() if v in COST_NAME or v == "frozen_long"}
    best_model = max(long_models, key=lambda v: long_models[v][0])
    short = {v: x for v, x in summary.items() if v not in long_models}
    best_short = max(short, key=lambda v: short[v][0]) if short else None
    text = "\n".join(lines)
    text += (
        f"\n\nBest long variant on notes > 512 tokens: **{best_variant}** ({best_mean:.3f}); default by the rule in "
        f"`_verdict` (cheapest 4,096-token step within one std of the best): **{default}**."
    )
    if best_short:
        verdict = "beats" if long_models[best_model][0] > short[best_short][0] else "does not beat"
        text += f" The best long model ({best_model}, {long_models[best_model][0]:.3f}) {verdict} the best short baseline ({best_short}, {short[best_short][0]:.3f}) on notes > 512 tokens (macro-F1)."
    return text


SESSION1_RECIPE = "cls, 3 ep, lr 8e-05"  # MTSamples rows written before rows carried a recipe


QA_NOTE = (
    " Only runs with the QA windows cut by `QAModel` itself (rows carrying a window count) are"
    " shown: in the earlier calls the tokenizer's overflow windows on the device (transformers"
    " 5.17, tokenizers 0.23.2, whose truncation early exit drops overflow: huggingface/tokenizers"
    " issue 2091) came back as at most two per question (2,256 windows for 1,128 training"
    " questions at 512 tokens, against 21,655 now), so most answers were out of reach and every"
    " model sat at F1 ≈ 0.05; those rows measured the defect, not the models."
)


QA_ALIAS_NOTE = (
    " `long` is full attention over tiled positions: every token sees the copies of each position"
    " 512, 1,024, ... tokens away, and heads that attend by position spread their mass over them;"
    " `long_local` is the same encoder with a band |i - j| < 256 plus the global question (SDPA,"
    " banded mask), which sees each position once."
)


def _qa_checks(folder: str | None) -> str:
    """Overfit check (``overfit.json``) and the 4,096-token step cost of full vs local
    (``costs.json``, rows of the same call) from ``folder``, as a paragraph for the COVID-QA section."""
    if not folder:
        return ""
    folder = Path(folder)
    text = ""
    overfit_path = folder / "overfit.json"
    if overfit_path.exists():
        overfit = json.loads(overfit_path.read_text())
        settings = overfit["settings"]
        runs = "; ".join(
            f"{r['variant']}: loss {r['losses'][0]:.2f} → {r['losses'][-1]:.3f}, training F1 "
            f"{r['train_f1']:.3f} (EM {r['train_em']:.3f}), {r['windows']['kept']} windows"
            for r in overfit["runs"]
        )
        text += (
            f"\n\nOverfit check ({overfit['device']}, `benchmarks/clinical_longdoc_overfit.py`): "
            f"{overfit['questions']} training questions with the answer at tokens 512–"
            f"{settings['max_length'] - 100}, {settings['epochs']} epochs, lr {settings['lr']:g} / head "
            f"{settings['head_lr']:g}, scored on themselves — {runs}."
        )
    alias_path = folder / "alias.json"
    if alias_path.exists():
        alias = json.loads(alias_path.read_text())
        text += (
            f"\n\nAliasing (`benchmarks/clinical_longdoc_overfit.py --alias-length`, CPU, longified "
            f"MiniLM, full attention, one {alias['length']}-token training article): the most "
            f"aliased head of each layer puts {', '.join(f'{x:.2f}' for x in alias['per_layer_max_head_share'])} "
            f"of its attention on keys 512·k ± 2 tokens away (uniform: {alias['uniform_share']:.3f})."
        )
    costs_path = folder / "costs.json"
    if costs_path.exists():
        rows = json.loads(costs_path.read_text())
        cells = ", ".join(
            f"{r['variant']} {r['peak_gib']:.2f} GiB / {1000 * r['seconds']:.1f} ms"
            for r in rows
            if "seconds" in r
        )
        text += f" One forward + backward step at {rows[0]['length']} tokens, batch 2 (same call): {cells}."
    return text


def _beyond_512_f1(row: dict) -> float | None:
    """F1 over the test questions whose answer starts past token 512 (the two far buckets)."""
    parts = [(row.get(f"{b}_n", 0), row.get(f"{b}_f1")) for b in ("512to4096", "gt4096")]
    parts = [(n, f1) for n, f1 in parts if n and f1 is not None]
    total = sum(n for n, _ in parts)
    return sum(n * f1 for n, f1 in parts) / total if total else None


def _qa_verdict(rows: list[dict]) -> str:
    """The issue's target on COVID-QA: the best long model against the best short one beyond 512."""
    scores = {
        label: [_beyond_512_f1(r) for r in runs if _beyond_512_f1(r) is not None]
        for label, runs in _by_variant(rows).items()
    }
    means = {label: statistics.fmean(v) for label, v in scores.items() if v}
    long_labels = [label for label in means if label.startswith("long")]
    short_labels = [label for label in means if not label.startswith("long")]
    if not long_labels or not short_labels:
        return ""
    best_long = max(long_labels, key=means.get)
    best_short = max(short_labels, key=means.get)
    verdict = "met" if means[best_long] > means[best_short] else "missed"
    counts = next((r for r in reversed(rows) if "gt4096_n" in r), {})
    buckets = ", ".join(
        f"{name} {counts[f'{key}_n']}"
        for key, name in (("lt512", "< 512"), ("512to4096", "512–4096"), ("gt4096", "> 4096"))
        if f"{key}_n" in counts
    )
    return (
        f"\n\nTest questions by answer start token: {buckets}."
        f"\n\nF1 on answers past token 512 (both far buckets): best long {best_long.split(' (')[0]}"
        f" {_mean_std(scores[best_long])}, best short {best_short.split(' (')[0]} "
        f'{_mean_std(scores[best_short])}. Target "the best long model beats the best short'
        f' baseline on answers beyond 512 tokens": **{verdict}**.'
    )


def _merge_runs(runs: list[dict]) -> dict:
    """Sections of several device calls, each row tagged with its card.

    Task rows accumulate (skipped ones dropped); costs and MLM come from the latest call that has
    them, and ``step_costs`` keeps the latest measurement of each (variant, length) for the verdict; MTSamples rows of session 2's recipe and later are marked ``latest`` (the verdict's);
    COVID-QA rows from before the windowing fix (they carry no ``windows``) are dropped: the
    device's tokenizer cut at most two windows per question then.
    """
    merged: dict = {}
    for run in runs:
        for name, section in run["sections"].items():
            rows = [{**r, "card": run["device"]} for r in section["rows"]]
            if name == "mtsamples":
                for row in rows:
                    row.setdefault("recipe", SESSION1_RECIPE)
                    row["latest"] = row["recipe"] != SESSION1_RECIPE
            if name == "covid_qa":  # rows from before the QA windows were cut here (no "windows")
                rows = [r for r in rows if "windows" in r or "skipped" in r or "error" in r]
            if name == "costs":  # per (variant, length), the latest call's measurement
                for row in rows:
                    if "seconds" in row:
                        merged.setdefault("step_costs", {})[(row["variant"], row["length"])] = row
            if name in ("costs", "mlm"):
                merged[name] = {"rows": rows}
            else:
                kept = [r for r in merged.get(name, {"rows": []})["rows"] if "skipped" not in r]
                merged[name] = {"rows": kept + rows}
    return merged


def record(args) -> None:
    from nlprec.core.bench import record_section

    runs = [json.loads((Path(d) / "gpu_results.json").read_text()) for d in args.results]
    sections = _merge_runs(runs)
    results = runs[-1]
    device = results["device"]
    command = args.command or (
        "(device) PYTHONPATH=packages/clinical-longdoc/src:.carry/longdoc/site python "
        "benchmarks/clinical_longdoc_gpu.py run --model .carry/minilm-fp16 --data .carry/longdoc/data "
        f"--out $OUT --budget {results['budget_s']:.0f}; (here) python benchmarks/clinical_longdoc_gpu.py record --results DIR"
    )
    calls = "; ".join(
        f"call {i + 1}: {r['device']}, torch {r['torch']}, transformers {r['transformers']}"
        for i, r in enumerate(runs)
    )
    versions = f"Cards: {calls}. MiniLM weights from the fp16 copy, run in fp32 with bf16 autocast; the card column says which card ran each row."
    if "costs" in sections and len({r["length"] for r in sections["costs"]["rows"]}) >= 4:
        rows = sections["costs"]["rows"]
        table, checks = _cost_table(rows)
        figure = _cost_figure(rows, device)
        text = f"{versions}\n\nPeak memory (`torch.cuda.max_memory_allocated`, weights included) and median time of one forward + backward step, batch 2.\n\n{table}\n\n{checks}"
        if figure:
            text += f"\n\nFigure: `packages/clinical-longdoc/figures/{figure.name}`."
        record_section(
            "clinical-longdoc: step cost by length (GPU)", text + _problems(rows), command
        )
    tasks = {
        "mtsamples": (
            "clinical-longdoc: MTSamples specialty (GPU)",
            ["macro_f1", "micro_f1", "long_notes_macro_f1", "long_notes_micro_f1"],
        ),
        "covid_qa": (
            "clinical-longdoc: COVID-QA (GPU)",
            ["em", "f1", "lt512_f1", "512to4096_f1", "gt4096_f1"],
        ),
        "ner": ("clinical-longdoc: NCBI-disease NER (GPU)", ["f1", "precision", "recall"]),
    }
    notes = {"covid_qa": QA_NOTE + QA_ALIAS_NOTE + _qa_checks(args.qa_checks)}
    for key, (title, metrics) in tasks.items():
        if key in sections:
            rows = sections[key]["rows"]
            note = notes.get(key, "")
            record_section(
                title,
                f"{versions}\n\nTest split; mean ± std over seeds.{note}\n\n{_task_table(rows, metrics)}"
                + (_qa_verdict(rows) if key == "covid_qa" else "")
                + _problems(rows),
                command,
            )
    if "costs" in sections and "mtsamples" in sections:
        record_section(
            "clinical-longdoc: which long variant (GPU)",
            f"{versions}\n\n" + _verdict(sections),
            command,
        )
    if "mlm" in sections:
        row = sections["mlm"]["rows"][0]
        if "error" in row:
            text = f"{versions}\n\nMLM run failed: {row['error']}"
        else:
            text = (
                f"{versions}\n\nContinued MLM of the longified MiniLM (Longformer, window 512, 4,096 tokens, batch 2, "
                f"gradient checkpointing) on {row['corpus_texts']} training-only texts packed into {row['n_blocks']} blocks: "
                f"{row['steps']} steps in {row['seconds']:.0f} s; loss {row['first_loss']:.3f} (first steps) -> {row['last_loss']:.3f} (last steps); "
                f"peak {row.get('peak_gib') or 0:.2f} GiB."
            )
        record_section("clinical-longdoc: continued MLM (GPU)", text, command)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run")
    run_parser.add_argument("--model", required=True)
    run_parser.add_argument("--data", required=True)
    run_parser.add_argument("--out", required=True)
    run_parser.add_argument("--budget", type=float, default=230.0)
    run_parser.add_argument("--sections", default="")
    run_parser.add_argument("--tiny", action="store_true")
    run_parser.add_argument(
        "--plan",
        default="",
        help="JSON {section: [[variant, seed], ...]} overriding the default runs",
    )
    run_parser.add_argument("--qa-epochs", type=int, default=4)
    run_parser.add_argument(
        "--qa-long-variant",
        default="long_local",
        help="the long QA model (long_local: banded attention, no tiled-position aliases)",
    )
    run_parser.add_argument(
        "--qa-long-epochs", type=int, default=0, help="epochs of the long QA model (0: --qa-epochs)"
    )
    run_parser.add_argument(
        "--shares", default="", help="section=share,... overriding the default time shares"
    )
    run_parser.add_argument("--qa-lr", type=float, default=1e-4)
    run_parser.add_argument("--qa-head-lr", type=float, default=1e-3)
    run_parser.add_argument(
        "--qa-negative-keep", type=float, default=0.1, help="share of answer-less windows kept"
    )
    run_parser.add_argument("--qa-max-tokens", type=int, default=16384)
    run_parser.add_argument(
        "--qa-no-dev", action="store_true", help="last epoch instead of the best on dev"
    )
    run_parser.add_argument("--cost-lengths", default="512,1024,2048,4096")
    run_parser.add_argument("--cost-variants", default="", help="comma list (default: all)")
    run_parser.add_argument("--cls-epochs", type=int, default=8)
    run_parser.add_argument("--cls-lr", type=float, default=5e-5)
    run_parser.add_argument("--cls-head-lr", type=float, default=1e-4)
    run_parser.add_argument("--cls-pooling", choices=("cls", "mean"), default="mean")
    run_parser.add_argument(
        "--no-probe", action="store_true", help="random head instead of a linear probe (LP-FT)"
    )
    record_parser = sub.add_parser("record")
    record_parser.add_argument(
        "--command", default="", help="the exact device command(s), for RESULTS.md"
    )
    record_parser.add_argument(
        "--qa-checks",
        default="",
        help="folder with overfit.json / costs.json for the COVID-QA section (optional)",
    )
    record_parser.add_argument(
        "--results",
        required=True,
        action="append",
        help="folder with gpu_results.json (repeatable)",
    )
    args = parser.parse_args(argv)
    (run if args.command == "run" else record)(args)


if __name__ == "__main__":
    main(sys.argv[1:])

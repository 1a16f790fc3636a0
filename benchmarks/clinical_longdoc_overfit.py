# make bench: skip a defect check that trains a QA model (needs --model, --data and --out)
"""Can a long QA model overfit a handful of COVID-QA questions?  A defect check, not a benchmark.

A model that cannot fit 20 training questions (answers beyond the first 512 tokens) in 30 epochs
has a defect, not a budget problem.  Session 3's long model (full attention over tiled positions)
sat at F1 0.05 on test; this runs it beside the ``long_local`` variant on the same questions:

    PYTHONPATH=packages/clinical-longdoc/src python benchmarks/clinical_longdoc_overfit.py \\
        --model <minilm dir> --data <data root> --out OUT [--variants long,long_local]

Writes ``OUT/overfit.json``: per variant the loss per epoch and EM/F1 on the training questions.

``--alias-length N`` (CPU is enough) instead measures why full attention over tiled positions
struggles: on the longest of the first 200 training articles, cut to N tokens, the share of each
head's attention (queries past the first tile) that falls on keys 512·k ± 2 tokens away (k >= 1:
the tiled copies of the nearest positions), against the share a uniform head would put there.
Writes ``OUT/alias.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch


def pick_questions(tokenizer, examples, n: int, max_length: int) -> list:
    """Every 7th training question whose answer starts at token 512 .. max_length - 100."""
    from nlprec.clinical_longdoc.qa import answer_token_position

    picked = []
    for example in examples[::7]:
        if 512 <= answer_token_position(tokenizer, example) < max_length - 100:
            picked.append(example)
        if len(picked) == n:
            break
    return picked


def overfit(variant_name: str, questions, source, tokenizer, args, device: str) -> dict:
    from nlprec.clinical_longdoc.qa import QAModel
    from nlprec.clinical_longdoc.training import TrainSettings
    from nlprec.clinical_longdoc.variants import build_encoder, get_variant

    variant = get_variant(variant_name)
    encoder = build_encoder(variant, source, max_length=args.max_length)
    length = args.max_length if variant.attention else 512
    model = QAModel(encoder, tokenizer, max_length=length, stride=length // 4, max_answer_tokens=96)
    settings = TrainSettings(
        epochs=args.epochs,
        lr=args.lr,
        head_lr=args.head_lr,
        max_tokens=max(2 * length, 8192),
        max_batch=32,
        device=device,
        seed=0,
        progress=False,
    )
    started = time.perf_counter()
    history = model.fit(questions, None, settings, negative_keep=0.0)
    scores = model.evaluate(questions, settings)
    return {
        "variant": variant_name,
        "losses": [round(x, 4) for x in history["loss"]],
        "windows": history["windows"],
        "train_em": scores["em"],
        "train_f1": scores["f1"],
        "seconds": time.perf_counter() - started,
    }


def alias_mass(source, tokenizer, examples, length: int, period: int = 512) -> dict:
    """Per layer, the largest share of a head's attention on tiled aliases (see the module doc)."""
    from nlprec.clinical_longdoc.longify import longify

    model = longify(source, max_length=length, attention="full", attn_implementation="eager")
    context = max({e.context for e in examples[:200]}, key=len)
    batch = tokenizer(context, max_length=length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        attentions = model.eval()(**batch, output_attentions=True).attentions
    n = batch["input_ids"].shape[1]
    index = torch.arange(n)
    distance = (index[:, None] - index[None, :]).abs()
    near_copy = (distance % period <= 2) | (distance % period >= period - 2)
    alias = (distance >= period - 2) & near_copy  # (n, n)
    queries = index >= period
    per_layer = []
    for layer in attentions:  # (1, heads, n, n)
        probs = layer[0][:, queries]  # (heads, Q, n)
        per_layer.append((probs * alias[queries]).sum(-1).mean(-1).max().item())
    return {
        "length": n,
        "per_layer_max_head_share": [round(x, 3) for x in per_layer],
        "uniform_share": round(alias[queries].float().sum(-1).mean().item() / n, 4),
    }


def main(argv: list[str] | None = None) -> None:
    from nlprec.clinical_longdoc.data import load_covid_qa
    from transformers import AutoModel, AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--variants", default="long,long_local")
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--max-length", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--alias-length", type=int, default=0, help="> 0: the alias measure only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    source = AutoModel.from_pretrained(args.model, dtype=torch.float32).base_model
    train = load_covid_qa(args.data)["train"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.alias_length:
        result = alias_mass(source, tokenizer, train, args.alias_length)
        (out / "alias.json").write_text(json.dumps(result, indent=1))
        logging.info("alias %s", result)
        return
    questions = pick_questions(tokenizer, train, args.questions, args.max_length)
    result = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "questions": len(questions),
        "settings": vars(args),
        "runs": [],
    }
    for name in args.variants.split(","):
        result["runs"].append(overfit(name, questions, source, tokenizer, args, device))
        logging.info("overfit %s", result["runs"][-1])
        (out / "overfit.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""The clinical distillation table on a GPU: adapt the teacher, distil the students (layer subset,
small random, factorised), train the MLM-only and random-init baselines, fine-tune every model on
the three tasks over three seeds (NER over --ner-seeds).

Calls the package's functions directly (no MLflow, no nlprec.core), so it runs on the device
machine, where only torch/transformers/pydantic are installed. Two sub-commands:

  run     --data DATA_ROOT --teacher MODEL_DIR --out OUT [--tiny] [--models a,b]   (writes OUT/rows.json)
  record  --rows OUT/rows.json [--speed speed.json]    (CPU columns measured here; writes RESULTS.md)

Work is split over processes (the GPU is mostly idle with one small model) and bounded by
--budget seconds: what is finished by then is written; unfinished jobs are reported as missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import active_children, get_context
from pathlib import Path

STUDENT_SMALL = {
    "kind": "random",
    "num_layers": 4,
    "hidden_size": 192,
    "num_heads": 12,
    "intermediate_size": 512,
}
STUDENT_LAYERS = {"kind": "layer_subset"}
# factorised (ALBERT layout): word embeddings at E, teacher layers copied at full width; both <= 1/3 of MiniLM
STUDENT_FACT = {"kind": "factorised", "num_layers": 2, "embedding_size": 120}
STUDENT_FACT3 = {"kind": "factorised", "num_layers": 3, "embedding_size": 64}

# name -> how it is trained. `adapted`: built from the adapted teacher (so it waits for adaptation);
# `steps`: "student" or "long" (the factorised students distil longer). Listed in evaluation priority.
MODELS = {
    "teacher": {},
    "student_fact": {
        "mode": "distill",
        "student": STUDENT_FACT,
        "steps": "long",
        "lr": 2e-4,
        "hidden_loss": "cosine",
        "adapted": True,
    },
    "mlm_only_fact": {
        "mode": "mlm",
        "student": STUDENT_FACT,
        "steps": "long",
        "lr": 2e-4,
        "adapted": True,
    },
    "student_fact3": {
        "mode": "distill",
        "student": STUDENT_FACT3,
        "steps": "long",
        "lr": 2e-4,
        "hidden_loss": "cosine",
        "adapted": True,
    },
    "student_layers": {
        "mode": "distill",
        "student": STUDENT_LAYERS,
        "steps": "student",
        "lr": 1e-4,
        "hidden_loss": "cosine",
        "adapted": True,
    },
    "student_small": {
        "mode": "distill",
        "student": STUDENT_SMALL,
        "steps": "student",
        "lr": 5e-4,
        "hidden_loss": "mse",
        "attention": 1.0,
        "adapted": True,
    },
    "mlm_only": {
        "mode": "mlm",
        "student": STUDENT_SMALL,
        "steps": "student",
        "lr": 5e-4,
        "adapted": False,
    },
    "random_init": {
        "mode": "none",
        "student": STUDENT_SMALL,
        "steps": "student",
        "lr": 5e-4,
        "adapted": False,
    },
}


# Fine-tuning settings of the earlier runs, where --task-settings does not replace them
BASE_TASK_SETTINGS = {"ner": {"epochs": 2}, "section": {}, "nli": {}}


def _settings(args) -> dict:
    """Step counts, batch, and per-task fine-tuning settings (DEFAULT_SETTINGS updated by --task-settings)."""
    if args.ner_seeds < 1:
        raise SystemExit(f"--ner-seeds must be at least 1, got {args.ner_seeds}")
    overrides = json.loads(args.task_settings)
    unknown = set(overrides) - set(BASE_TASK_SETTINGS)
    if unknown:
        raise SystemExit(
            f"--task-settings: unknown tasks {sorted(unknown)} (expected ner, section, nli)"
        )
    tasks = {task: {**base, **overrides.get(task, {})} for task, base in BASE_TASK_SETTINGS.items()}
    if args.tiny:
        tiny_task = {"epochs": 1, "max_len": 64, "max_train": 32, "max_test": 16}
        return {
            "teacher_steps": 3,
            "student_steps": 3,
            "long_steps": 4,
            "batch": 8,
            "max_len": 64,
            "seeds": [0],
            "ner_seeds": list(range(min(args.ner_seeds, 2))),
            "max_texts": 200,
            "tasks": {task: {**v, **tiny_task} for task, v in tasks.items()},
        }
    return {
        "teacher_steps": args.teacher_steps,
        "student_steps": args.student_steps,
        "long_steps": args.long_steps,
        "batch": 64,
        "max_len": 128,
        "seeds": [0, 1, 2],
        "ner_seeds": list(range(args.ner_seeds)),
        "tasks": tasks,
        "max_texts": None,
    }


def _task_seeds(s: dict) -> dict[str, list[int]]:
    """Seeds per task: NER may have more (its differences between models are small); older reports have one list."""
    return {"ner": s.get("ner_seeds", s["seeds"]), "section": s["seeds"], "nli": s["seeds"]}


def _model_specs(args) -> dict:
    """MODELS with the factorised pair's lr (both) and student_fact's attention weight from the command line."""
    specs = {name: dict(spec) for name, spec in MODELS.items()}
    for name in ("student_fact", "mlm_only_fact", "student_fact3"):
        specs[name]["lr"] = args.fact_lr
    for name in ("student_fact", "student_fact3"):
        specs[name]["attention"] = args.fact_attention
    return specs


def _corpus(data: Path, limit: int | None = None) -> dict:
    """Adaptation/distillation texts and held-out texts; `limit` caps both (tiny CPU smoke runs)."""
    from nlprec.clinical_distill import data as real_data

    corpus = real_data.clinical_corpus(data / "clinical")
    return {"train": corpus["train"][:limit], "heldout": corpus["heldout"][: limit and limit // 10]}


def _adapt_teacher(args, s: dict, corpus: dict, out: Path) -> dict:
    from nlprec.clinical_distill.mlm import MLMConfig, evaluate_mlm, train_mlm
    from nlprec.clinical_distill.models import load_masked_lm, load_tokenizer

    tokenizer = load_tokenizer(args.teacher)
    teacher = load_masked_lm(args.teacher)
    cfg = MLMConfig(steps=s["teacher_steps"], batch_size=s["batch"], max_len=s["max_len"], lr=1e-4)
    before = evaluate_mlm(teacher, tokenizer, corpus["heldout"], s["max_len"], args.device)
    train_mlm(teacher, tokenizer, corpus["train"], cfg, args.device, show_progress=False)
    after = evaluate_mlm(teacher, tokenizer, corpus["heldout"], s["max_len"], args.device)
    teacher.cpu().save_pretrained(out / "teacher")
    tokenizer.save_pretrained(out / "teacher")
    return {
        "teacher_mlm_acc_before": before["accuracy"],
        "teacher_mlm_acc_after": after["accuracy"],
    }


def _student_job(job: dict) -> dict:
    """One student-side model: distilled, MLM-only, or untrained (random_init)."""
    sys.path[:0] = job["sys_path"]
    import torch
    from nlprec.clinical_distill.distill import DistillConfig, copied_layer_maps, distill
    from nlprec.clinical_distill.factorised import token_counts
    from nlprec.clinical_distill.mlm import MLMConfig, train_mlm
    from nlprec.clinical_distill.models import (
        encoder_parameters,
        load_masked_lm,
        load_tokenizer,
    )
    from nlprec.clinical_distill.students import StudentConfig, build_student, student_layers
    from nlprec.core.threads import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    start = time.time()
    attention = job["mode"] == "distill" and job.get("attention", 0) > 0
    teacher = load_masked_lm(job["teacher_dir"], attention_outputs=attention)
    tokenizer = load_tokenizer(job["teacher_dir"])
    student_cfg = StudentConfig(**job["student"])
    texts = job["texts"]
    counts = (
        token_counts(tokenizer, texts, teacher.config.vocab_size)
        if student_cfg.kind == "factorised"
        else None
    )
    student = build_student(teacher, student_cfg, counts)
    common = {
        "steps": job["steps"],
        "batch_size": job["batch"],
        "max_len": job["max_len"],
        "lr": job["lr"],
    }
    if job["mode"] == "distill":
        cfg = DistillConfig(
            **common,
            kd_weight=1.0,
            hidden_weight=1.0,
            hidden_loss=job["hidden_loss"],
            attention_weight=job.get("attention", 0.0),
            attention_loss="kl",
        )
        cfg = copied_layer_maps(cfg, student_layers(teacher, student_cfg))
        history = distill(
            teacher, student, tokenizer, texts, cfg, job["device"], show_progress=False
        )
        last = history[-1]
    elif job["mode"] == "mlm":
        last = {
            "mlm": train_mlm(
                student, tokenizer, texts, MLMConfig(**common), job["device"], show_progress=False
            )[-1]
        }
    else:
        last = {}
    student.cpu().save_pretrained(job["out_dir"])
    tokenizer.save_pretrained(job["out_dir"])
    return {
        "name": job["name"],
        "seconds": time.time() - start,
        "last_loss": last,
        "steps": job["steps"],
        "params": encoder_parameters(student),
        "kind": student_cfg.kind,
    }


def _eval_job(job: dict) -> dict:
    sys.path[:0] = job.pop("sys_path")
    import torch
    from nlprec.clinical_distill.harness import _run_job
    from nlprec.core.threads import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(2)
    start = time.time()
    return {**_run_job(job), "seconds": time.time() - start}


def _eval_jobs(name: str, s: dict, args, models_dir: Path, tasks: dict) -> list[dict]:
    """Fine-tuning jobs of one model, longest first (NER, then section, then NLI), so the model's last
    job to start is a short one; a budget cut drops the last section/NLI seeds first."""
    from nlprec.clinical_distill.harness import DEFAULT_SETTINGS

    jobs = []
    for task, seeds in _task_seeds(s).items():
        for seed in seeds:
            settings = DEFAULT_SETTINGS[task].model_copy(update=s["tasks"][task])
            jobs.append(
                {
                    "model": name,
                    "path": str(models_dir / name),
                    "task": task,
                    "data": tasks[task],
                    "seed": seed,
                    "device": args.device,
                    "settings": settings.model_dump(),
                    "sys_path": sys.path[:3],
                }
            )
    return jobs


def _training_job(
    name: str, spec: dict, s: dict, base: dict, models_dir: Path, teacher: str
) -> dict:
    return {
        **base,
        "teacher_dir": teacher,
        "name": name,
        "mode": spec["mode"],
        "student": spec["student"],
        "steps": s["long_steps"] if spec["steps"] == "long" else s["student_steps"],
        "lr": spec["lr"],
        "hidden_loss": spec.get("hidden_loss", "cosine"),
        "attention": spec.get("attention", 0.0),
        "out_dir": str(models_dir / name),
    }


def run(args) -> None:
    from nlprec.clinical_distill.data import load_tasks
    from nlprec.core.threads import quiet_libraries

    quiet_libraries()
    t0 = time.time()
    out = Path(args.out)
    models_dir = Path(args.work)
    models_dir.mkdir(parents=True, exist_ok=True)
    s = _settings(args)
    specs = _model_specs(args)
    names = [name for name in MODELS if name in args.models.split(",")]
    report = {
        "settings": s,
        "device": _device_name(args.device),
        "workers": args.workers,
        "phases": {},
        "students": [],
        "rows": [],
        "models": names,
        "specs": specs,
        "command": "python " + " ".join(sys.argv),
    }

    def save():
        report["elapsed_s"] = time.time() - t0
        (out / "rows.json").write_text(json.dumps(report, indent=1))

    corpus = _corpus(Path(args.data), s.get("max_texts"))
    tasks = load_tasks(Path(args.data) / "clinical")
    report["corpus_texts"] = len(corpus["train"])
    base = {
        "sys_path": sys.path[:3],
        "device": args.device,
        "batch": s["batch"],
        "max_len": s["max_len"],
        "texts": corpus["train"],
    }
    adapted = str(models_dir / "teacher")
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        # Models that need only the teacher's vocabulary/config start from the unadapted checkpoint
        # while the teacher adapts here; the others, and every model's fine-tuning, start as soon as
        # what they need exists, so the card is never waiting on one phase. Student training is
        # submitted before the teacher's fine-tuning: the pool starts jobs in submission order, and
        # the longest distillation is the run's critical path.
        pending = {
            pool.submit(
                _student_job, _training_job(n, specs[n], s, base, models_dir, args.teacher)
            ): n
            for n in names
            if n != "teacher" and not specs[n]["adapted"]
        }
        report["phases"]["teacher"] = _adapt_teacher(args, s, corpus, models_dir)
        report["phases"]["teacher_done_s"] = time.time() - t0
        save()
        pending.update(
            {
                pool.submit(
                    _student_job, _training_job(n, specs[n], s, base, models_dir, adapted)
                ): n
                for n in names
                if n != "teacher" and specs[n]["adapted"]
            }
        )
        evals = {}
        if "teacher" in names:
            evals.update(
                {
                    pool.submit(_eval_job, job): job
                    for job in _eval_jobs("teacher", s, args, models_dir, tasks)
                }
            )
        n_jobs = len(evals) + len(pending) * len(_eval_jobs("x", s, args, models_dir, tasks))
        while pending or evals:
            left = max(
                1.0, args.budget - (time.time() - t0)
            )  # wake up at the budget even if nothing finishes
            done, _ = wait(list(pending) + list(evals), timeout=left, return_when=FIRST_COMPLETED)
            for future in done:
                if future in pending:
                    name = pending.pop(future)
                    report["students"].append(future.result())
                    evals.update(
                        {
                            pool.submit(_eval_job, job): job
                            for job in _eval_jobs(name, s, args, models_dir, tasks)
                        }
                    )
                else:
                    evals.pop(future)
                    report["rows"].append(future.result())
            save()
            if time.time() - t0 > args.budget:
                report["stopped"] = (
                    f"budget of {args.budget}s reached; {n_jobs - len(report['rows'])} fine-tuning jobs not finished"
                )
                save()
                # Running jobs are abandoned (the finished rows are what counts); the workers are ended
                # too, or they would hold the command's output open until the call's time limit.
                for child in active_children():
                    child.kill()
                os._exit(0)
    report["phases"]["eval_done_s"] = time.time() - t0
    save()


def _device_name(device: str) -> str:
    import torch

    return (
        torch.cuda.get_device_name(0)
        if device.startswith("cuda")
        else f"CPU ({os.cpu_count()} cores)"
    )


def _describe(name: str, report: dict) -> str:
    spec, s = report.get("specs", MODELS)[name], report["settings"]
    steps = s["long_steps"] if spec.get("steps") == "long" else s["student_steps"]
    shape = {
        "random": "4 layers x 192 (12 heads, FFN 512), random init",
        "layer_subset": "teacher layers 1,3,5 copied",
        "factorised": "ALBERT layout: embeddings {embedding_size} wide (frequency-weighted SVD of the teacher's), "
        "teacher layers {layers} copied at width 384",
    }[spec["student"]["kind"]]
    if spec["student"]["kind"] == "factorised":
        from nlprec.clinical_distill.factorised import evenly_spaced_layers

        layers = ",".join(map(str, evenly_spaced_layers(6, spec["student"]["num_layers"])))
        shape = shape.format(embedding_size=spec["student"]["embedding_size"], layers=layers)
    losses = {
        "distill": "MLM + KD (T=2) + hidden "
        + spec.get("hidden_loss", "cosine")
        + (" + attention KL" if spec.get("attention") else ""),
        "mlm": "MLM only",
        "none": "not trained",
    }[spec["mode"]]
    training = f"{steps} steps, lr {spec['lr']:g}, {losses}" if spec["mode"] != "none" else losses
    return f"| {name} | {shape} | {training} |"


def _unfinished(report: dict) -> str:
    """Which (model, task, seed) fine-tuning runs have no row, grouped by model."""
    expected = [
        (task, seed) for task, seeds in _task_seeds(report["settings"]).items() for seed in seeds
    ]
    done = {(r["model"], r["task"], r["seed"]) for r in report["rows"]}
    missing = []
    for name in report.get("models", []):
        jobs = [(task, seed) for task, seed in expected if (name, task, seed) not in done]
        if len(jobs) == len(expected):
            missing.append(f"{name} (none of its {len(jobs)} runs)")
        elif jobs:
            missing.append(f"{name} ({', '.join(f'{task} seed {seed}' for task, seed in jobs)})")
    return "; ".join(missing) or "none"


def _task_settings_text(s: dict) -> str:
    from nlprec.clinical_distill.harness import DEFAULT_SETTINGS

    if "tasks" not in s:  # reports written before --task-settings
        return "NER 2 epochs, section 6, NLI 4, lr 1e-4, batch 32"
    parts = []
    for task, update in s["tasks"].items():
        t = DEFAULT_SETTINGS[task].model_copy(update=update)
        parts.append(
            f"{task} {t.epochs} epochs at lr {t.lr:g} (batch {t.batch_size}, {t.max_len} tokens)"
        )
    return "; ".join(parts)


def record(args) -> None:
    """Turn rows.json (GPU) and the CPU speed JSON (this machine) into the RESULTS.md section."""
    from nlprec.clinical_distill.harness import aggregate
    from nlprec.clinical_distill.report import results_table
    from nlprec.core.bench import record_section

    report = json.loads(Path(args.rows).read_text())
    speed = json.loads(Path(args.speed).read_text())["figures"] if args.speed else {}
    s, phases = report["settings"], report["phases"]
    teacher = phases["teacher"]
    lines = [
        f"Card: {report['device']} ({report.get('workers', 7)} worker processes). Teacher: all-MiniLM-L6-v2 + fresh MLM head, "
        f"adapted by {s['teacher_steps']} MLM steps (batch {s['batch']}, {s['max_len']} tokens) on {report['corpus_texts']} "
        "clinical texts (MTSamples minus a held-out 5%, MTS-Dialog train, NCBI-disease train, NLI4CT trials cited "
        f"only by training statements). Held-out MTSamples masked-token accuracy {teacher['teacher_mlm_acc_before']:.3f} "
        f"(fresh head) -> {teacher['teacher_mlm_acc_after']:.3f}; adaptation finished at {phases['teacher_done_s']:.0f} s.",
        "",
        f"Every model is trained on the same corpus with batch {s['batch']}; mlm_only_fact is student_fact's architecture "
        "and initialisation trained with MLM alone for the same steps (the distillation-vs-MLM comparison at equal "
        "size and steps for the new student); mlm_only is the same for student_small.",
        "",
        "Fine-tuning (every model the same): " + _task_settings_text(s) + ".",
        "",
        "| model | architecture | training |",
        "|---|---|---|",
        *(_describe(n, report) for n in report.get("models", []) if n != "teacher"),
        "",
        "| model | train seconds | last loss parts |",
        "|---|---|---|",
    ]
    for student in sorted(report["students"], key=lambda x: x["name"]):
        parts = (
            ", ".join(f"{k} {v:.3f}" for k, v in student["last_loss"].items()) or "(not trained)"
        )
        lines.append(f"| {student['name']} | {student['seconds']:.1f} | {parts} |")
    lines.append("")
    if report["rows"]:
        lines.append(results_table(aggregate(report["rows"]), speed))
        if speed:
            lines.append(f"CPU columns: {json.loads(Path(args.speed).read_text())['note']}")
    else:
        lines.append(
            "**No fine-tuning run finished** inside the call's time limit, so this run gives no task scores."
        )
    if report.get("stopped"):
        lines.append(f"\n{report['stopped']}: {_unfinished(report)}.")
    if args.note:
        lines.append(f"\n{args.note}")
    lines.append(f"\nElapsed on the device: {report['elapsed_s']:.0f} s (script clock).")
    text = "\n".join(lines)
    command = report.get("command", "") + (
        f"; CPU columns: python benchmarks/clinical_distill_speed.py --json {args.speed}"
        if args.speed
        else ""
    )
    machine = f"{report['device']} device machine (training, fine-tuning)" + (
        "; CPU columns on this machine" if speed else ""
    )
    record_section(args.section, text, command=command, path=args.results, machine=machine)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--data", required=True, help="data root holding clinical/ (and text/)")
    r.add_argument("--teacher", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--work", default="/tmp/distill-models")
    r.add_argument("--device", default="cuda")
    r.add_argument("--workers", type=int, default=7)
    r.add_argument("--budget", type=float, default=110.0)
    r.add_argument("--tiny", action="store_true")
    r.add_argument(
        "--models", default=",".join(MODELS), help="comma-separated subset of: " + ", ".join(MODELS)
    )
    r.add_argument("--teacher-steps", type=int, default=400)
    r.add_argument(
        "--student-steps",
        type=int,
        default=800,
        help="steps of student_layers, student_small and the small mlm_only baseline",
    )
    r.add_argument(
        "--long-steps",
        type=int,
        default=1200,
        help="steps of the factorised students and mlm_only_fact",
    )
    r.add_argument(
        "--fact-lr",
        type=float,
        default=2e-4,
        help="lr of the factorised students and mlm_only_fact",
    )
    r.add_argument(
        "--fact-attention",
        type=float,
        default=0.0,
        help="attention-KL weight of the factorised students",
    )
    r.add_argument(
        "--ner-seeds", type=int, default=3, help="NER fine-tuning seeds (section and NLI: 3)"
    )
    r.add_argument(
        "--task-settings",
        default="{}",
        help='JSON {task: TaskSettings fields}, e.g. {"ner": {"epochs": 6, "lr": 3e-4}} (default: ner 2 epochs)',
    )
    c = sub.add_parser("record")
    c.add_argument("--rows", required=True)
    c.add_argument(
        "--speed", help="JSON written by benchmarks/clinical_distill_speed.py --json (CPU columns)"
    )
    c.add_argument(
        "--note",
        help="a paragraph added under the table (e.g. figures carried over from an earlier run)",
    )
    c.add_argument(
        "--section",
        default="clinical-distill: GPU run (teacher adaptation, students, baselines)",
        help="RESULTS section to (re)write",
    )
    c.add_argument(
        "--results", type=Path, help="RESULTS file to write (default: benchmarks/RESULTS.md)"
    )
    args = parser.parse_args()
    run(args) if args.command == "run" else record(args)


if __name__ == "__main__":
    main()

"""The clinical distillation table on a GPU: adapt the teacher, distil two students, train the
MLM-only and random-init baselines, fine-tune all five on the three tasks over three seeds.

Calls the package's functions directly (no MLflow, no nlprec.core), so it runs on the device
machine, where only torch/transformers/pydantic are installed. Two sub-commands:

  run     --data DATA_ROOT --teacher MODEL_DIR --out OUT [--tiny]   (writes OUT/rows.json, OUT/table.md)
  record  --rows OUT/rows.json                                       (adds CPU speed here, writes RESULTS.md)

Work is split over processes (the GPU is mostly idle with one small model) and bounded by
--budget seconds: what is finished by then is written; unfinished jobs are reported as missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

STUDENT_SMALL = {"kind": "random", "num_layers": 4, "hidden_size": 192, "num_heads": 12, "intermediate_size": 512}
STUDENT_LAYERS = {"kind": "layer_subset"}


def _settings(tiny: bool) -> dict:
    if tiny:
        return {"teacher_steps": 3, "student_steps": 3, "batch": 8, "max_len": 64, "seeds": [0],
                "task": {"epochs": 1, "max_len": 64, "max_train": 32, "max_test": 16}}
    return {"teacher_steps": 400, "student_steps": 800, "batch": 64, "max_len": 128, "seeds": [0, 1, 2],
            "task": {}}


def _corpus(data: Path) -> dict:
    from nlprec.clinical_distill import data as real_data

    corpus = real_data.clinical_corpus(data / "clinical")
    return {"train": corpus["train"], "heldout": corpus["heldout"]}


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
    return {"teacher_mlm_acc_before": before["accuracy"], "teacher_mlm_acc_after": after["accuracy"]}


def _student_job(job: dict) -> dict:
    """One student-side model: distilled (layer subset / small) or MLM-only or untrained."""
    sys.path[:0] = job["sys_path"]
    import torch
    from nlprec.clinical_distill.distill import DistillConfig, distill, layer_subset_map
    from nlprec.clinical_distill.mlm import MLMConfig, train_mlm
    from nlprec.clinical_distill.models import load_masked_lm, load_tokenizer, quiet_transformers
    from nlprec.clinical_distill.students import StudentConfig, build_student, default_layer_subset

    quiet_transformers()
    torch.manual_seed(0)
    start = time.time()
    attention = job["mode"] == "distill" and job.get("attention", 0) > 0
    teacher = load_masked_lm(job["teacher_dir"], attention_outputs=attention)
    tokenizer = load_tokenizer(job["teacher_dir"])
    student_cfg = StudentConfig(**job["student"])
    student = build_student(teacher, student_cfg)
    texts = job["texts"]
    common = {"steps": job["steps"], "batch_size": job["batch"], "max_len": job["max_len"], "lr": job["lr"]}
    if job["mode"] == "distill":
        extra = {}
        if student_cfg.kind == "layer_subset":
            extra["layer_map"] = layer_subset_map(default_layer_subset(teacher.config.num_hidden_layers))
        cfg = DistillConfig(**common, kd_weight=1.0, hidden_weight=1.0, hidden_loss=job["hidden_loss"],
                            attention_weight=job.get("attention", 0.0), attention_loss="kl", **extra)
        history = distill(teacher, student, tokenizer, texts, cfg, job["device"], show_progress=False)
        last = history[-1]
    elif job["mode"] == "mlm":
        last = {"mlm": train_mlm(student, tokenizer, texts, MLMConfig(**common), job["device"], show_progress=False)[-1]}
    else:
        last = {}
    student.cpu().save_pretrained(job["out_dir"])
    tokenizer.save_pretrained(job["out_dir"])
    return {"name": job["name"], "seconds": time.time() - start, "last_loss": last}


def _eval_job(job: dict) -> dict:
    sys.path[:0] = job.pop("sys_path")
    from nlprec.clinical_distill.harness import _run_job
    from nlprec.clinical_distill.models import quiet_transformers

    quiet_transformers()
    start = time.time()
    return {**_run_job(job), "seconds": time.time() - start}


def run(args) -> None:
    from nlprec.clinical_distill.data import load_tasks
    from nlprec.clinical_distill.harness import DEFAULT_SETTINGS, TaskSettings
    from nlprec.clinical_distill.models import quiet_transformers

    quiet_transformers()
    t0 = time.time()
    out = Path(args.out)
    models_dir = Path(args.work)
    models_dir.mkdir(parents=True, exist_ok=True)
    s = _settings(args.tiny)
    report = {"settings": s, "device": _device_name(args.device), "phases": {}, "students": [], "rows": [],
              "command": "python " + " ".join(sys.argv)}

    def save():
        report["elapsed_s"] = time.time() - t0
        (out / "rows.json").write_text(json.dumps(report, indent=1))

    corpus = _corpus(Path(args.data))
    tasks = load_tasks(Path(args.data) / "clinical")
    report["corpus_texts"] = len(corpus["train"])
    ctx = get_context("spawn")
    base = {"sys_path": sys.path[:3], "device": args.device, "batch": s["batch"], "max_len": s["max_len"],
            "texts": corpus["train"], "teacher_dir": str(models_dir / "teacher")}
    with ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
        # phase 1: teacher adaptation here; the MLM-only baseline and random init need only the
        # teacher's vocabulary/config, so they start from the unadapted checkpoint in parallel.
        base_plain = {**base, "teacher_dir": args.teacher}
        early = [pool.submit(_student_job, {**base_plain, "name": "mlm_only", "mode": "mlm", "student": STUDENT_SMALL,
                                            "steps": s["student_steps"], "lr": 5e-4, "out_dir": str(models_dir / "mlm_only")}),
                 pool.submit(_student_job, {**base_plain, "name": "random_init", "mode": "none", "student": STUDENT_SMALL,
                                            "steps": 1, "lr": 5e-4, "out_dir": str(models_dir / "random_init")})]
        report["phases"]["teacher"] = _adapt_teacher(args, s, corpus, models_dir)
        report["phases"]["teacher_done_s"] = time.time() - t0
        save()
        # phase 2: the two distilled students, in parallel
        late = [pool.submit(_student_job, {**base, "name": "student_small", "mode": "distill", "student": STUDENT_SMALL,
                                           "steps": s["student_steps"], "lr": 5e-4, "hidden_loss": "mse",
                                           "attention": 1.0, "out_dir": str(models_dir / "student_small")}),
                pool.submit(_student_job, {**base, "name": "student_layers", "mode": "distill", "student": STUDENT_LAYERS,
                                           "steps": s["student_steps"], "lr": 1e-4, "hidden_loss": "cosine",
                                           "out_dir": str(models_dir / "student_layers")})]
        for future in as_completed(early + late):
            report["students"].append(future.result())
            save()
        report["phases"]["students_done_s"] = time.time() - t0
        # phase 3: fine-tune every model on every task and seed
        names = ["teacher", "student_layers", "student_small", "mlm_only", "random_init"]
        jobs = []
        for seed in s["seeds"]:
            for task in ("ner", "nli", "section"):
                settings = DEFAULT_SETTINGS[task].model_copy(update=s["task"])
                if task == "ner" and not args.tiny:
                    settings = settings.model_copy(update={"epochs": 2})
                for name in names:
                    jobs.append({"model": name, "path": str(models_dir / name), "task": task, "data": tasks[task],
                                 "seed": seed, "device": args.device, "settings": TaskSettings(**settings.model_dump()).model_dump(),
                                 "sys_path": sys.path[:3]})
        speed = pool.submit(_speed_job, str(models_dir), names, sys.path[:3]) if args.speed else None
        futures = [pool.submit(_eval_job, job) for job in jobs]
        for future in as_completed(futures):
            report["rows"].append(future.result())
            if speed is not None and speed.done() and "speed" not in report:
                report["speed"] = speed.result()
            save()
            if time.time() - t0 > args.budget:
                report["stopped"] = f"budget of {args.budget}s reached; {len(jobs) - len(report['rows'])} jobs not run"
                save()
                os._exit(0)  # running fine-tunes are abandoned: the finished rows are what counts
        if speed is not None:
            report["speed"] = speed.result()
    report["phases"]["eval_done_s"] = time.time() - t0
    save()


def _speed_job(models_dir: str, names: list[str], path: list[str]) -> dict:
    """CPU size/speed of each encoder (2 threads), run beside the GPU jobs on the host's spare cores."""
    sys.path[:0] = path
    from nlprec.clinical_distill.efficiency import measure_cpu
    from nlprec.clinical_distill.models import quiet_transformers

    quiet_transformers()
    return {name: measure_cpu(f"{models_dir}/{name}", latency_repeats=10, throughput_repeats=2) for name in names}


def _device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU ({os.cpu_count()} cores)"


def record(args) -> None:
    """Turn rows.json into the RESULTS.md section: settings, timings, and the table of what finished."""
    from nlprec.clinical_distill.harness import aggregate
    from nlprec.clinical_distill.report import results_table
    from nlprec.core.bench import record_section

    report = json.loads(Path(args.rows).read_text())
    s, phases = report["settings"], report["phases"]
    teacher = phases["teacher"]
    lines = [
        f"Card: {report['device']} (7 worker processes). Teacher: all-MiniLM-L6-v2 + fresh MLM head, adapted by "
        f"{s['teacher_steps']} MLM steps (batch {s['batch']}, {s['max_len']} tokens) on {report['corpus_texts']} "
        "clinical texts (MTSamples minus a held-out 5%, MTS-Dialog train, NCBI-disease train, NLI4CT trials cited "
        f"only by training statements). Held-out MTSamples masked-token accuracy {teacher['teacher_mlm_acc_before']:.3f} "
        f"(fresh head) -> {teacher['teacher_mlm_acc_after']:.3f}; adaptation finished at {phases['teacher_done_s']:.0f} s.",
        "",
        f"Students, {s['student_steps']} steps each (batch {s['batch']}): student_small = 4 layers x 192 (12 heads, FFN 512), "
        "MLM + KD (T=2) + hidden MSE + attention KL; student_layers = teacher layers 1,3,5, MLM + KD + hidden cosine; "
        "mlm_only = student_small's shape, MLM only, same steps; random_init = same shape, untrained.",
        "",
        "| model | train seconds | last loss parts |",
        "|---|---|---|",
    ]
    for student in sorted(report["students"], key=lambda x: x["name"]):
        parts = ", ".join(f"{k} {v:.3f}" for k, v in student["last_loss"].items()) or "(not trained)"
        lines.append(f"| {student['name']} | {student['seconds']:.1f} | {parts} |")
    lines.append("")
    if report["rows"]:
        lines.append(results_table(aggregate(report["rows"]), report.get("speed") or {}))
    else:
        lines.append("**No fine-tuning run finished**: the evaluation phase (5 models x 3 tasks x 3 seeds) "
                     "did not complete any job inside the call's time limit, so this run gives no task scores.")
    if report.get("stopped"):
        lines.append(f"\n{report['stopped']}")
    lines.append(f"\nElapsed on the device: {report['elapsed_s']:.0f} s (script clock).")
    text = "\n".join(lines)
    record_section("clinical-distill: GPU run (teacher adaptation, students, baselines)", text,
                   command=report.get("command"))
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    r.add_argument("--speed", action="store_true", help="also measure CPU latency/throughput (2 threads)")
    c = sub.add_parser("record")
    c.add_argument("--rows", required=True)
    args = parser.parse_args()
    run(args) if args.command == "run" else record(args)


if __name__ == "__main__":
    main()

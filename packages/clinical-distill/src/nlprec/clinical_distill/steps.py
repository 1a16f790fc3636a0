"""Pipeline steps (nlprec runner contract): corpus, tasks, teacher, students, baselines, continual, evaluate, export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from nlprec.core.data import dataset_path
from nlprec.core.distributed import DistributedContext
from nlprec.core.launch import run_distributed
from nlprec.core.step import StepContext, across_seeds
from nlprec.core.threads import quiet_libraries
from pydantic import BaseModel, Field

from . import data as real_data
from . import generated
from .continual import ContinualConfig, continual_learning
from .distill import DistillConfig, copied_layer_maps, distill
from .efficiency import measure_cpu
from .export import export_hf, export_onnx, onnx_max_difference
from .factorised import token_counts
from .harness import (
    DEFAULT_SETTINGS,
    TaskName,
    TaskSettings,
    aggregate,
    run_harness,
    unit_scores,
)
from .mlm import MLMConfig, evaluate_mlm, train_mlm
from .models import load_masked_lm, load_tokenizer
from .report import results_table, summary_metrics
from .students import StudentConfig, build_student, check_same_tokenizer, student_layers

Source = Literal["generated", "clinical"]


def _write_lines(path: Path, texts: list[str]) -> str:
    path.write_text("\n".join(json.dumps(t) for t in texts) + "\n")
    return str(path)


def _read_lines(path: str) -> list[str]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


# ---------------------------------------------------------------------------------------- data


class CorpusConfig(BaseModel):
    model_config = {"extra": "forbid"}
    source: Source = "generated"
    clinical: str = "clinical"  # clinical folder, absolute or under NLPREC_DATA
    general: str = "."  # data root holding text/wikitext-2
    n_generated: int = Field(400, ge=10)


def build_corpus(ctx: StepContext, cfg: CorpusConfig) -> dict:
    """Texts for adaptation/distillation and held-out clinical and general text (JSON lines)."""
    if cfg.source == "generated":
        parts = {
            "train": generated.clinical_notes(cfg.n_generated, ctx.seed),
            "heldout": generated.clinical_notes(max(10, cfg.n_generated // 10), ctx.seed + 1),
            "general_replay": generated.general_text(cfg.n_generated, ctx.seed),
            "general_heldout": generated.general_text(max(10, cfg.n_generated // 10), ctx.seed + 1),
        }
    else:
        clinical_root = dataset_path(
            cfg.clinical, must_contain=("mtsamples", "mts_dialog", "nli4ct")
        )
        corpus = real_data.clinical_corpus(clinical_root)
        general = real_data.general_corpus(dataset_path(cfg.general))
        parts = {
            "train": corpus["train"],
            "heldout": corpus["heldout"],
            "general_replay": general["replay"],
            "general_heldout": general["heldout"],
        }
        ctx.log_input(name="clinical", source=clinical_root, context="adaptation corpus")
    ctx.log_metrics({f"corpus.n_{k}": len(v) for k, v in parts.items()})
    return {k: _write_lines(ctx.output_dir / f"{k}.jsonl", v) for k, v in parts.items()}


class TasksConfig(BaseModel):
    model_config = {"extra": "forbid"}
    source: Source = "generated"
    clinical: str = "clinical"
    n_generated_train: int = Field(96, ge=4)
    n_generated_test: int = Field(48, ge=4)
    # the user's own data in place of a task's: an IOB2 folder (train/dev/test .tsv, devel.tsv
    # accepted) or a datasets folder for NER; JSONL text/label files or a datasets folder for section
    ner: str | None = None
    section: str | None = None


@across_seeds
def load_eval_tasks(ctx: StepContext, cfg: TasksConfig) -> dict:
    """The evaluation tasks as one JSON file {task: {split: [examples]}}; every task has a dev
    split for selection (the user's data without one: 10 % of train, logged as `tasks.<t>.dev_carved`)."""
    if cfg.source == "generated":
        makers = {
            "ner": generated.ner_examples,
            "section": generated.section_examples,
            "nli": generated.nli_examples,
        }
        # (size, generator seed) per split: train and test as before dev existed
        sizes = {
            "train": (cfg.n_generated_train, 0),
            "dev": (max(4, cfg.n_generated_test // 2), 2),
            "test": (cfg.n_generated_test, 1),
        }
        tasks = {
            name: {split: make(n, seed) for split, (n, seed) in sizes.items()}
            for name, make in makers.items()
        }
    else:
        root = dataset_path(cfg.clinical, must_contain=("ncbi_disease", "mts_dialog", "nli4ct"))
        tasks = real_data.load_tasks(root)
        ctx.log_input(name="clinical-tasks", source=root, context="evaluation")
    carved = {}
    for task, folder in (("ner", cfg.ner), ("section", cfg.section)):
        if folder:
            path = dataset_path(folder)
            tasks[task], carved[task] = real_data.load_user_task(path, task)
            ctx.log_input(name=f"{task}-{path.name}", source=path, context="evaluation")
    path = ctx.output_dir / "tasks.json"
    path.write_text(json.dumps(tasks))
    ctx.log_metrics(
        {f"tasks.{t}.n_{s}": len(v) for t, splits in tasks.items() for s, v in splits.items()}
        | {f"tasks.{t}.dev_carved": float(c) for t, c in carved.items()}
    )
    return {"tasks": str(path)}


# ---------------------------------------------------------------------------------------- models


class TeacherConfig(BaseModel):
    model_config = {"extra": "forbid"}
    model: str = "minilm"
    mlm: MLMConfig = MLMConfig()
    # load with eager attention (needed by attention-transfer students)
    attention_outputs: bool = False


def adapt_teacher(ctx: StepContext, cfg: TeacherConfig) -> dict:
    """Teacher = encoder + MLM head, adapted to clinical text by continued MLM (never on evaluation text)."""
    quiet_libraries()
    corpus = ctx.inputs["corpus"]
    tokenizer = load_tokenizer(cfg.model)
    teacher = load_masked_lm(cfg.model, attention_outputs=cfg.attention_outputs)
    heldout = _read_lines(corpus["heldout"])
    before = evaluate_mlm(teacher, tokenizer, heldout, cfg.mlm.max_len, ctx.device)
    losses = train_mlm(
        teacher, tokenizer, _read_lines(corpus["train"]), cfg.mlm, ctx.device, desc="adapt teacher"
    )
    after = evaluate_mlm(teacher, tokenizer, heldout, cfg.mlm.max_len, ctx.device)
    ctx.log_params(cfg.model_dump())
    ctx.log_metrics(
        {
            "teacher.mlm_acc_before": before["accuracy"],
            "teacher.mlm_acc_after": after["accuracy"],
            "teacher.train_loss_last": losses[-1],
        }
    )
    model_dir = export_hf(teacher.cpu(), tokenizer, ctx.output_dir / "model")
    return {"model_dir": str(model_dir)}


class DistillStepConfig(BaseModel):
    model_config = {"extra": "forbid"}
    name: str = "student"
    student: StudentConfig = StudentConfig()
    distill: DistillConfig = DistillConfig()
    # > 1: distil under `torchrun --nproc-per-node N` with DDP (gloo on CPU, NCCL on GPUs; distill_worker)
    nproc_per_node: int = Field(1, ge=1)
    threads: int = Field(1, ge=1)  # torch threads per process under torchrun


def _distill_with_torchrun(
    ctx: StepContext, cfg: DistillStepConfig, teacher_dir: str
) -> tuple[str, list[dict]]:
    """Run :func:`distill_worker` in `cfg.nproc_per_node` processes; rank 0 writes the student."""
    out = ctx.output_dir / "ddp"
    settings = {
        "student": cfg.student.model_dump(),
        "distill": cfg.distill.model_dump(),
        "seed": ctx.seed,
    }
    inputs = {"teacher": teacher_dir, "texts": ctx.inputs["corpus"]["train"]}
    result = run_distributed("nlprec.clinical_distill.steps:distill_worker", settings, inputs, out,
                             cfg.nproc_per_node, threads=cfg.threads)  # fmt: skip
    return str(out / "model"), result["history"]


def distill_worker(dist_ctx: DistributedContext, config: dict, inputs: dict, out: Path) -> dict:
    """One torchrun rank of a distillation (``nlprec.core.launch``). Every rank loads the same
    teacher and corpus, builds the same student (same seed) and draws and masks the same global
    batches (``distill.batch_size``); each trains on its block of rows, the losses normalised by
    the item counts of the whole global batch. Rank 0 writes the student to ``out/model``."""
    quiet_libraries()
    student_cfg = StudentConfig(**config["student"])
    distill_cfg = DistillConfig(**config["distill"])
    teacher = load_masked_lm(inputs["teacher"], attention_outputs=distill_cfg.attention_weight > 0)
    tokenizer = load_tokenizer(inputs["teacher"])
    texts = _read_lines(inputs["texts"])
    torch.manual_seed(config["seed"])
    student = new_student(teacher, tokenizer, student_cfg, texts)
    distill_cfg = copied_layer_maps(distill_cfg, student_layers(teacher, student_cfg))
    history = distill(teacher, student, tokenizer, texts, distill_cfg, dist_ctx.device,
                      show_progress=dist_ctx.is_main, dist_ctx=dist_ctx)  # fmt: skip
    if dist_ctx.is_main:
        export_hf(student.cpu(), tokenizer, out / "model")
    return {"history": history}


def new_student(teacher, tokenizer, cfg: StudentConfig, texts: list[str]):
    """build_student, with the corpus token counts a factorised student's embedding SVD is weighted by."""
    counts = (
        token_counts(tokenizer, texts, teacher.config.vocab_size)
        if cfg.kind == "factorised"
        else None
    )
    return build_student(teacher, cfg, counts)


def distill_student(ctx: StepContext, cfg: DistillStepConfig) -> dict:
    """Build a student from the adapted teacher and distil it on the corpus (in one or N processes)."""
    quiet_libraries()
    needs_attention = cfg.distill.attention_weight > 0
    teacher_dir = ctx.inputs["teacher"]["model_dir"]
    teacher = load_masked_lm(teacher_dir, attention_outputs=needs_attention)
    tokenizer = load_tokenizer(teacher_dir)
    if cfg.student.kind == "pretrained":
        check_same_tokenizer(tokenizer, load_tokenizer(cfg.student.path))
    distill_cfg = copied_layer_maps(cfg.distill, student_layers(teacher, cfg.student))
    ctx.log_params(cfg.model_dump())
    if cfg.nproc_per_node > 1:
        model_dir, history = _distill_with_torchrun(ctx, cfg, teacher_dir)
        _log_history(ctx, cfg.name, history)
        return {"model_dir": model_dir}
    texts = _read_lines(ctx.inputs["corpus"]["train"])
    torch.manual_seed(ctx.seed)
    student = new_student(teacher, tokenizer, cfg.student, texts)
    history = distill(
        teacher, student, tokenizer, texts, distill_cfg, ctx.device, desc=f"distill {cfg.name}"
    )
    _log_history(ctx, cfg.name, history)
    model_dir = export_hf(student.cpu(), tokenizer, ctx.output_dir / "model")
    return {"model_dir": str(model_dir)}


def _log_history(ctx: StepContext, name: str, history: list[dict]) -> None:
    """About 50 points of the loss curves, and the last step."""
    for step in range(0, len(history), max(1, len(history) // 50)):
        ctx.log_metrics({f"{name}.loss_{k}": v for k, v in history[step].items()}, step=step)
    ctx.log_metrics({f"{name}.loss_{k}": v for k, v in history[-1].items()}, step=len(history) - 1)


class MLMStudentConfig(BaseModel):
    model_config = {"extra": "forbid"}
    name: str = "mlm_only"
    student: StudentConfig = StudentConfig()
    mlm: MLMConfig = MLMConfig()
    train: bool = True  # False: the untrained random-init baseline


def train_mlm_student(ctx: StepContext, cfg: MLMStudentConfig) -> dict:
    """Baselines with the student's architecture: MLM-only training (same steps), or no training at all."""
    quiet_libraries()
    teacher_dir = ctx.inputs["teacher"]["model_dir"]
    teacher = load_masked_lm(teacher_dir)
    tokenizer = load_tokenizer(teacher_dir)
    texts = _read_lines(ctx.inputs["corpus"]["train"])
    student = new_student(teacher, tokenizer, cfg.student, texts)
    if cfg.train:
        losses = train_mlm(student, tokenizer, texts, cfg.mlm, ctx.device, desc=cfg.name)
        ctx.log_metrics({f"{cfg.name}.train_loss_last": losses[-1]})
    ctx.log_params(cfg.model_dump())
    return {"model_dir": str(export_hf(student.cpu(), tokenizer, ctx.output_dir / "model"))}


class ContinualStepConfig(ContinualConfig):
    name: str = "continual"
    model: str = "minilm"  # any masked-LM encoder, or an upstream one: ${steps.<step>.model_dir}


def continual(ctx: StepContext, cfg: ContinualStepConfig) -> dict:
    """Continued MLM of a compact model on clinical text with and without replay; forgetting measured."""
    quiet_libraries()
    model_ref = cfg.model
    corpus = ctx.inputs["corpus"]
    tokenizer = load_tokenizer(model_ref)
    scores, models = continual_learning(
        load_masked_lm(model_ref),
        tokenizer,
        _read_lines(corpus["train"]),
        _read_lines(corpus["general_replay"]),
        _read_lines(corpus["heldout"]),
        _read_lines(corpus["general_heldout"]),
        cfg,
        ctx.device,
    )
    ctx.log_params(cfg.model_dump())
    ctx.log_metrics(
        {f"{cfg.name}.{run}.{k}": v for run, values in scores.items() for k, v in values.items()}
    )
    ctx.log_dict(scores, "continual.json")
    last_ratio = cfg.replay_ratios[-1]
    model_dir = export_hf(models[last_ratio].cpu(), tokenizer, ctx.output_dir / "model")
    return {"model_dir": str(model_dir), "scores": scores}


# ---------------------------------------------------------------------------------------- evaluation


class EvaluateConfig(BaseModel):
    model_config = {"extra": "forbid"}
    models: dict[str, str]  # table name -> model folder to evaluate: ${steps.<step>.model_dir}
    # fine-tuning seeds; None: the run's seed (the pipeline's `seeds:` repeat distillation and all)
    seeds: list[int] | None = Field(None, min_length=1)
    task_seeds: dict[TaskName, list[int]] = Field(
        default_factory=dict
    )  # per-task override of `seeds`
    settings: dict[str, TaskSettings] = Field(default_factory=lambda: dict(DEFAULT_SETTINGS))
    workers: int = Field(1, ge=1)
    measure_speed: bool = True
    teacher: str = "teacher"
    mlm_only: str = "mlm_only"


def evaluate_models(ctx: StepContext, cfg: EvaluateConfig) -> dict:
    """Fine-tune each model on each task over the seeds; log `<model>.<metric>` and the size/speed columns."""
    quiet_libraries()
    model_dirs = dict(cfg.models)
    tasks = json.loads(Path(ctx.inputs["tasks"]["tasks"]).read_text())
    settings = {task: cfg.settings.get(task, DEFAULT_SETTINGS[task]) for task in tasks}
    rows = run_harness(
        model_dirs,
        tasks,
        cfg.seeds or [ctx.seed],
        ctx.device,
        settings,
        cfg.workers,
        save_root=str(ctx.output_dir / "finetuned"),
        task_seeds=cfg.task_seeds,
        split="dev" if ctx.split == "validation" else "test",
        work_dir=str(ctx.output_dir),
        log_metrics=ctx.log_metrics,
    )
    for (model, metric), scores in unit_scores(rows).items():
        ctx.log_unit_scores(model, metric, scores)
    speed = (
        {name: measure_cpu(path) for name, path in model_dirs.items()} if cfg.measure_speed else {}
    )
    scores = aggregate(rows)
    metrics = summary_metrics(scores, speed)
    ctx.log_metrics(metrics)
    table = results_table(scores, speed, teacher=cfg.teacher, mlm_only=cfg.mlm_only)
    (ctx.output_dir / "table.md").write_text(table)
    (ctx.output_dir / "rows.json").write_text(json.dumps({"rows": rows, "speed": speed}, indent=1))
    ctx.log_text(table, "table.md")
    return {
        "table": str(ctx.output_dir / "table.md"),
        "rows": str(ctx.output_dir / "rows.json"),
        "finetuned": str(ctx.output_dir / "finetuned"),
    }


class ExportConfig(BaseModel):
    model_config = {"extra": "forbid"}
    models: dict[str, str]  # student name -> its model folder: ${steps.<step>.model_dir}
    register_models: bool = True


def export_students(ctx: StepContext, cfg: ExportConfig) -> dict:
    """Each student as a Hugging Face directory and an ONNX encoder; checks ONNX agrees with PyTorch."""
    quiet_libraries()
    probe = ["The patient denies chest pain.", "Metformin 500 mg twice daily for type 2 diabetes."]
    exported = {}
    for step, model_dir in cfg.models.items():
        hf_dir = ctx.output_dir / step / "hf"
        tokenizer = load_tokenizer(model_dir)
        export_hf(load_masked_lm(model_dir), tokenizer, hf_dir)
        onnx_path = export_onnx(hf_dir, ctx.output_dir / step / "encoder.onnx")
        ctx.log_metrics(
            {f"{step}.onnx_max_abs_diff": onnx_max_difference(hf_dir, onnx_path, probe)}
        )
        if cfg.register_models:
            ctx.log_model(str(hf_dir), name=f"clinical-distill-{step}", flavor="dir")
        exported[step] = {"hf": str(hf_dir), "onnx": str(onnx_path)}
    return exported

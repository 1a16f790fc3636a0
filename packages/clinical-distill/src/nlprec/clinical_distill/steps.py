"""Pipeline steps (nlprec runner contract): corpus, tasks, teacher, students, baselines, continual,
evaluate (which registers the fine-tuned task models), promote, export.

Steps exchange typed outputs (`CorpusOutput`, `TasksOutput`, `ModelOutput`, ...); a step names what
it reads from an earlier one with a `${steps.<step>.<field>}` reference in its config (docs/steps.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from nlprec.core.data import dataset_path
from nlprec.core.distributed import DistributedContext
from nlprec.core.hashing import hash_file
from nlprec.core.launch import run_distributed
from nlprec.core.registry import PromoteConfig, promote
from nlprec.core.step import StepContext, StepOutput, StepSkipped, across_seeds
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
    TASK_KIND,
    TaskName,
    TaskSettings,
    aggregate,
    dev_metric,
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


def _read_lines(path: str | Path) -> list[str]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


# ---------------------------------------------------------------------------------------- data


class CorpusConfig(BaseModel):
    model_config = {"extra": "forbid"}
    source: Source = "generated"
    clinical: str = "clinical"  # clinical folder, absolute or under NLPREC_DATA
    general: str = "."  # data root holding text/wikitext-2
    n_generated: int = Field(400, ge=10)


class CorpusOutput(StepOutput):
    """JSON-lines files of texts: adaptation/distillation text, held-out clinical text, general text
    to replay and held-out general text."""

    train: Path
    heldout: Path
    general_replay: Path
    general_heldout: Path


def build_corpus(ctx: StepContext, cfg: CorpusConfig) -> CorpusOutput:
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
    return CorpusOutput(
        **{k: _write_lines(ctx.output_dir / f"{k}.jsonl", v) for k, v in parts.items()}
    )


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


class TasksOutput(StepOutput):
    tasks: Path  # JSON {task: {split: [examples]}}


@across_seeds
def load_eval_tasks(ctx: StepContext, cfg: TasksConfig) -> TasksOutput:
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
    return TasksOutput(tasks=path)


# ---------------------------------------------------------------------------------------- models


class ModelOutput(StepOutput):
    model_dir: Path  # a Hugging Face masked-LM folder with its tokenizer


class TeacherConfig(BaseModel):
    model_config = {"extra": "forbid"}
    corpus: CorpusOutput = Field(description="${steps.<corpus step>}")
    model: str = "minilm"
    mlm: MLMConfig = MLMConfig()
    # load with eager attention (needed by attention-transfer students)
    attention_outputs: bool = False


def adapt_teacher(ctx: StepContext, cfg: TeacherConfig) -> ModelOutput:
    """Teacher = encoder + MLM head, adapted to clinical text by continued MLM (never on evaluation text)."""
    quiet_libraries()
    corpus = cfg.corpus
    tokenizer = load_tokenizer(cfg.model)
    teacher = load_masked_lm(cfg.model, attention_outputs=cfg.attention_outputs)
    heldout = _read_lines(corpus.heldout)
    before = evaluate_mlm(teacher, tokenizer, heldout, cfg.mlm.max_len, ctx.device)
    losses = train_mlm(
        teacher, tokenizer, _read_lines(corpus.train), cfg.mlm, ctx.device, desc="adapt teacher"
    )
    after = evaluate_mlm(teacher, tokenizer, heldout, cfg.mlm.max_len, ctx.device)
    ctx.log_params(cfg.model_dump(exclude={"corpus"}))
    ctx.log_metrics(
        {
            "teacher.mlm_acc_before": before["accuracy"],
            "teacher.mlm_acc_after": after["accuracy"],
            "teacher.train_loss_last": losses[-1],
        }
    )
    return ModelOutput(model_dir=export_hf(teacher.cpu(), tokenizer, ctx.output_dir / "model"))


class DistillStepConfig(BaseModel):
    model_config = {"extra": "forbid"}
    teacher: Path = Field(description="the adapted teacher: ${steps.<teacher step>.model_dir}")
    texts: Path = Field(description="distillation text (JSON lines): ${steps.<corpus step>.train}")
    name: str = "student"
    student: StudentConfig = StudentConfig()
    distill: DistillConfig = DistillConfig()
    # > 1: distil under `torchrun --nproc-per-node N` with DDP (gloo on CPU, NCCL on GPUs; distill_worker)
    nproc_per_node: int = Field(1, ge=1)
    threads: int = Field(1, ge=1)  # torch threads per process under torchrun


def _distill_with_torchrun(ctx: StepContext, cfg: DistillStepConfig) -> tuple[Path, list[dict]]:
    """Run :func:`distill_worker` in `cfg.nproc_per_node` processes; rank 0 writes the student."""
    out = ctx.output_dir / "ddp"
    settings = {
        "student": cfg.student.model_dump(),
        "distill": cfg.distill.model_dump(),
        "seed": ctx.seed,
    }
    inputs = {"teacher": str(cfg.teacher), "texts": str(cfg.texts)}
    result = run_distributed("nlprec.clinical_distill.steps:distill_worker", settings, inputs, out,
                             cfg.nproc_per_node, threads=cfg.threads)  # fmt: skip
    return out / "model", result["history"]


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


def distill_student(ctx: StepContext, cfg: DistillStepConfig) -> ModelOutput:
    """Build a student from the adapted teacher and distil it on the corpus (in one or N processes)."""
    quiet_libraries()
    needs_attention = cfg.distill.attention_weight > 0
    teacher = load_masked_lm(str(cfg.teacher), attention_outputs=needs_attention)
    tokenizer = load_tokenizer(str(cfg.teacher))
    if cfg.student.kind == "pretrained":
        check_same_tokenizer(tokenizer, load_tokenizer(cfg.student.path))
    distill_cfg = copied_layer_maps(cfg.distill, student_layers(teacher, cfg.student))
    ctx.log_params(cfg.model_dump(exclude={"teacher", "texts"}))
    if cfg.nproc_per_node > 1:
        model_dir, history = _distill_with_torchrun(ctx, cfg)
        _log_history(ctx, cfg.name, history)
        return ModelOutput(model_dir=model_dir)
    texts = _read_lines(cfg.texts)
    torch.manual_seed(ctx.seed)
    student = new_student(teacher, tokenizer, cfg.student, texts)
    history = distill(
        teacher, student, tokenizer, texts, distill_cfg, ctx.device, desc=f"distill {cfg.name}"
    )
    _log_history(ctx, cfg.name, history)
    return ModelOutput(model_dir=export_hf(student.cpu(), tokenizer, ctx.output_dir / "model"))


def _log_history(ctx: StepContext, name: str, history: list[dict]) -> None:
    """About 50 points of the loss curves, and the last step."""
    for step in range(0, len(history), max(1, len(history) // 50)):
        ctx.log_metrics({f"{name}.loss_{k}": v for k, v in history[step].items()}, step=step)
    ctx.log_metrics({f"{name}.loss_{k}": v for k, v in history[-1].items()}, step=len(history) - 1)


class MLMStudentConfig(BaseModel):
    model_config = {"extra": "forbid"}
    teacher: Path = Field(
        description="the adapted teacher (the student's init): ${steps.<teacher step>.model_dir}"
    )
    texts: Path = Field(description="training text (JSON lines): ${steps.<corpus step>.train}")
    name: str = "mlm_only"
    student: StudentConfig = StudentConfig()
    mlm: MLMConfig = MLMConfig()
    train: bool = True  # False: the untrained random-init baseline


def train_mlm_student(ctx: StepContext, cfg: MLMStudentConfig) -> ModelOutput:
    """Baselines with the student's architecture: MLM-only training (same steps), or no training at all."""
    quiet_libraries()
    teacher = load_masked_lm(str(cfg.teacher))
    tokenizer = load_tokenizer(str(cfg.teacher))
    texts = _read_lines(cfg.texts)
    student = new_student(teacher, tokenizer, cfg.student, texts)
    if cfg.train:
        losses = train_mlm(student, tokenizer, texts, cfg.mlm, ctx.device, desc=cfg.name)
        ctx.log_metrics({f"{cfg.name}.train_loss_last": losses[-1]})
    ctx.log_params(cfg.model_dump(exclude={"teacher", "texts"}))
    return ModelOutput(model_dir=export_hf(student.cpu(), tokenizer, ctx.output_dir / "model"))


class ContinualStepConfig(ContinualConfig):
    corpus: CorpusOutput = Field(description="${steps.<corpus step>}")
    name: str = "continual"
    model: str = "minilm"  # any masked-LM encoder, or an upstream one: ${steps.<step>.model_dir}


class ContinualOutput(ModelOutput):
    """The model trained with the last replay ratio, and every run's scores."""

    scores: dict[str, dict[str, float]]


def continual(ctx: StepContext, cfg: ContinualStepConfig) -> ContinualOutput:
    """Continued MLM of a compact model on clinical text with and without replay; forgetting measured."""
    quiet_libraries()
    corpus = cfg.corpus
    tokenizer = load_tokenizer(cfg.model)
    scores, models = continual_learning(
        load_masked_lm(cfg.model),
        tokenizer,
        _read_lines(corpus.train),
        _read_lines(corpus.general_replay),
        _read_lines(corpus.heldout),
        _read_lines(corpus.general_heldout),
        cfg,
        ctx.device,
    )
    ctx.log_params(cfg.model_dump(exclude={"corpus"}))
    ctx.log_metrics(
        {f"{cfg.name}.{run}.{k}": v for run, values in scores.items() for k, v in values.items()}
    )
    ctx.log_dict(scores, "continual.json")
    last_ratio = cfg.replay_ratios[-1]
    model_dir = export_hf(models[last_ratio].cpu(), tokenizer, ctx.output_dir / "model")
    return ContinualOutput(model_dir=model_dir, scores=scores)


# ---------------------------------------------------------------------------------------- evaluation


class EvaluateConfig(BaseModel):
    model_config = {"extra": "forbid"}
    tasks: Path = Field(description="the evaluation tasks: ${steps.<tasks step>.tasks}")
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


class EvaluateOutput(StepOutput):
    table: Path
    rows: Path
    finetuned: Path  # <model>-<task>/: each model's first-seed fine-tuned model (best dev epoch)
    evaluation: str  # fingerprint of the tasks file: the data the metrics were measured on


def evaluate_models(ctx: StepContext, cfg: EvaluateConfig) -> EvaluateOutput:
    """Fine-tune each model on each task over the seeds; log `<model>.<metric>` and the size/speed
    columns; keep each model's fine-tuned task models (`finetuned/<model>-<task>`)."""
    quiet_libraries()
    model_dirs = dict(cfg.models)
    tasks = json.loads(cfg.tasks.read_text())
    settings = {task: cfg.settings.get(task, DEFAULT_SETTINGS[task]) for task in tasks}
    finetuned = ctx.output_dir / "finetuned"
    rows = run_harness(
        model_dirs,
        tasks,
        cfg.seeds or [ctx.seed],
        ctx.device,
        settings,
        cfg.workers,
        save_root=str(finetuned),
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
    return EvaluateOutput(
        table=ctx.output_dir / "table.md",
        rows=ctx.output_dir / "rows.json",
        finetuned=finetuned,
        evaluation=hash_file(cfg.tasks, length=16),
    )


# ---------------------------------------------------------------------------------------- registry

PIPELINE_TASKS = {"token": "token-classification", "sequence": "text-classification"}


class RegisterConfig(BaseModel):
    model_config = {"extra": "forbid"}
    name: str = Field(min_length=1, description="prefix of the registered names: the pipeline's name")
    finetuned: Path = Field(description="${steps.<evaluate step>.finetuned}")
    evaluation: str = Field(description="${steps.<evaluate step>.evaluation}")
    student: str = Field("student_fact", description="the model registered as <name>-<task>")
    teacher: str = Field("teacher", description="the model registered as <name>-<task>-teacher")
    tasks: list[TaskName] = Field(["ner", "section", "nli"], min_length=1)
    min_gain: float = Field(0.0, ge=0, description="least dev-score gain over the champion to promote")


class RegisteredModels(StepOutput):
    models: dict[str, str]  # registered name -> models:/name@alias (the local folder when untracked)
    promoted: dict[str, bool]  # empty without an MLflow registry


@across_seeds  # one version per pipeline run, and one decision on the mean over the seeds
def register_task_models(ctx: StepContext, cfg: RegisterConfig) -> RegisteredModels:
    """Register each task's fine-tuned student as `<name>-<task>` and teacher as
    `<name>-<task>-teacher` (MLflow transformers flavor, a new `@challenger` version: the first
    seed's fine-tuning run, best dev epoch), then move `@champion` where the mean best-epoch dev
    score over the seeds beats the champion's on the same tasks by `min_gain`
    (`nlprec.core.registry.promote`; never in a smoke run; an exported run registers on import)."""
    models, metrics = {}, {}
    for task in cfg.tasks:
        for model, name in ((cfg.student, f"{cfg.name}-{task}"), (cfg.teacher, f"{cfg.name}-{task}-teacher")):
            folder = cfg.finetuned / f"{model}-{task}"
            if not folder.is_dir():
                raise ValueError(f"{folder}: no fine-tuned {model!r} for {task!r} (not an evaluated model?)")
            flavor_task = PIPELINE_TASKS[TASK_KIND[task]]
            models[name] = ctx.log_model(str(folder), name=name, flavor="transformers", task=flavor_task)
            metrics[name] = f"{model}.{dev_metric(task)}"
    return RegisteredModels(models=models, promoted=_promote(ctx, metrics, cfg))


def _promote(ctx: StepContext, metrics: dict[str, str], cfg: RegisterConfig) -> dict[str, bool]:
    promoted = {}
    for name, metric in metrics.items():
        rule = PromoteConfig(name=name, metric=metric, min_gain=cfg.min_gain, evaluation=cfg.evaluation)
        try:
            promoted[name] = promote(ctx, rule)["promoted"]
        except StepSkipped as skip:  # untracked or exported: nothing to promote here
            ctx.logger.info("registered, not promoted: %s", skip.reason)
            return {}
    return promoted


# ---------------------------------------------------------------------------------------- export


class ExportConfig(BaseModel):
    model_config = {"extra": "forbid"}
    models: dict[str, str]  # student name -> its model folder: ${steps.<step>.model_dir}


class ExportedStudent(BaseModel):
    hf: Path
    onnx: Path


class ExportOutput(StepOutput):
    students: dict[str, ExportedStudent]


def export_students(ctx: StepContext, cfg: ExportConfig) -> ExportOutput:
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
        exported[step] = ExportedStudent(hf=hf_dir, onnx=onnx_path)
    return ExportOutput(students=exported)

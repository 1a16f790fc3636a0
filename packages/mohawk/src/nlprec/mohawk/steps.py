"""Pipeline steps: corpus → teacher → distilled students / scratch baseline → report.

Each step returns a typed output (``CorpusOutput``, ``TeacherOutput``, ``StudentOutput``,
``ScratchOutput``); the next steps take them through ``${steps.<step>}`` references in their
config (docs/steps.md), so a misspelt step fails validation before anything runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from nlprec.core.data import data_root
from nlprec.core.distributed import DistributedContext
from nlprec.core.launch import run_distributed
from nlprec.core.step import StepContext, StepOutput, across_seeds
from nlprec.core.threads import limited_threads
from nlprec.mohawk.evaluate import perplexity
from nlprec.mohawk.stages import DistillConfig, stage3_distillation
from nlprec.mohawk.student import StudentConfig, load_student, save_student
from nlprec.mohawk.teacher import TeacherConfig, load_teacher
from nlprec.mohawk.training import OptimConfig
from nlprec.mohawk.transfer import student_config_for
from nlprec.mohawk.workflow import (
    EvalConfig,
    distill_student,
    eval_windows,
    evaluate_against_teacher,
    per_layer_table,
    prepare_corpus,
    stage_summary,
    train_from_scratch,
    train_teacher,
    window_scores,
)
from pydantic import BaseModel, Field
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerFast

TOKENS_FILE = "tokens.safetensors"  # train and validation streams
TEST_TOKENS_FILE = "test_tokens.safetensors"


class CorpusOutput(StepOutput):
    tokenizer_dir: Path
    tokens: Path  # train and validation streams
    test_tokens: Path | None = None  # None in search trials
    vocab_size: int
    train_tokens: int


class TeacherOutput(StepOutput):
    teacher_dir: Path
    ppl: float
    train_tokens: int


def _tokens(ctx: StepContext, corpus: CorpusOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """(training tokens, evaluation tokens of ``ctx.split``): the validation stream in search
    trials, the test stream otherwise (a trial's corpus output holds no ``test_tokens``)."""
    tensors = load_file(corpus.tokens)
    if ctx.split == "validation":
        return tensors["train"], tensors["validation"]
    return tensors["train"], load_file(corpus.test_tokens)["test"]


def _log_window_nll(
    ctx: StepContext, system: str, teacher, model, windows, cfg: EvalConfig
) -> float:
    """Log the per-window NLL of ``model`` (the teacher when None) as unit scores; their mean."""
    scores = window_scores(teacher, model, windows, cfg, ctx.device)
    ctx.log_unit_scores(system, "nll", scores)
    return sum(scores.values()) / len(scores)


def _loss_figure(curves: dict[str, list[float]], title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, losses in curves.items():
        ax.plot(losses, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- corpus


class CorpusConfig(BaseModel):
    model_config = {"extra": "forbid"}

    corpus: str = Field(
        "stdlib", description="stdlib | tinyshakespeare | wikitext-2 | path to a .txt"
    )
    vocab_size: int = Field(512, ge=260)
    max_chars: int | None = Field(None, ge=1000)
    tokenizer: str | None = Field(
        None,
        description="a saved Hugging Face tokenizer (a pretrained teacher's folder) to use "
        "instead of fitting one; vocab_size is then ignored",
    )


@across_seeds
def corpus(ctx: StepContext, cfg: CorpusConfig) -> CorpusOutput:
    """Fit the tokenizer (or load the given one) and tokenize the training and held-out text."""
    root = None if cfg.corpus == "stdlib" else data_root()
    tokenizer, train_ids, validation_ids, test_ids = prepare_corpus(
        cfg.corpus, root, cfg.vocab_size, cfg.max_chars, cfg.tokenizer
    )
    tokenizer.save_pretrained(ctx.output_dir / "tokenizer")
    save_file({"train": train_ids, "validation": validation_ids}, ctx.output_dir / TOKENS_FILE)
    save_file({"test": test_ids}, ctx.output_dir / TEST_TOKENS_FILE)
    if root is not None:
        ctx.log_input(cfg.corpus, root / "text" / cfg.corpus, context="train")
    ctx.log_params(cfg.model_dump())
    ctx.log_metrics(
        {
            "corpus.train_tokens": train_ids.numel(),
            "corpus.validation_tokens": validation_ids.numel(),
            "corpus.test_tokens": test_ids.numel(),
        }
    )
    return CorpusOutput(
        tokenizer_dir=ctx.output_dir / "tokenizer",
        tokens=ctx.output_dir / TOKENS_FILE,
        test_tokens=ctx.output_dir / TEST_TOKENS_FILE,
        vocab_size=len(tokenizer),
        train_tokens=train_ids.numel(),
    )


# --------------------------------------------------------------------------- teacher


class TeacherStepConfig(BaseModel):
    model_config = {"extra": "forbid"}

    corpus: CorpusOutput = Field(description="${steps.<corpus step>}")
    path: str | None = Field(None, description="a saved Hugging Face causal LM; else train one")
    size: TeacherConfig = TeacherConfig()
    optim: OptimConfig = OptimConfig(lr=2e-3, warmup_fraction=0.05, decay_fraction=0.3)
    train_tokens: int = Field(500_000, ge=1)
    eval: EvalConfig = EvalConfig()
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads for this step (1 is fastest on a shared machine)"
    )


@across_seeds
def teacher(ctx: StepContext, cfg: TeacherStepConfig) -> TeacherOutput:
    """Train (or load) the teacher once per pipeline run: the seeds vary the students."""
    with limited_threads(cfg.threads):
        return _teacher(ctx, cfg)


def _teacher(ctx: StepContext, cfg: TeacherStepConfig) -> TeacherOutput:
    train_ids, eval_ids = _tokens(ctx, cfg.corpus)
    vocab_size = cfg.corpus.vocab_size
    trained_tokens = 0
    if cfg.path:
        model = load_teacher(cfg.path, ctx.device)
    else:
        model, losses = train_teacher(
            vocab_size, train_ids, cfg.size, cfg.optim, cfg.train_tokens, ctx.seed, ctx.device
        )
        trained_tokens = cfg.train_tokens
        ctx.log_figure(_loss_figure({"teacher": losses}, "teacher training"), "teacher_loss.png")
    if model.config.vocab_size < vocab_size:  # pretrained models often pad their vocabulary
        raise ValueError(
            f"teacher vocabulary {model.config.vocab_size} is smaller than the corpus tokenizer's "
            f"{vocab_size}; give the corpus step the teacher's tokenizer (with.tokenizer)"
        )
    windows = eval_windows(eval_ids, cfg.eval)
    metrics = evaluate_against_teacher(model, None, windows, cfg.eval, ctx.device)
    nll = _log_window_nll(ctx, "teacher", model, None, windows, cfg.eval)
    ctx.log_params({"teacher": cfg.model_dump(exclude={"corpus"})})
    ctx.log_metrics(
        {"teacher.ppl": metrics["ppl"], "teacher.nll": nll, "teacher.train_tokens": trained_tokens}
    )
    model.save_pretrained(ctx.output_dir / "teacher")
    return TeacherOutput(
        teacher_dir=ctx.output_dir / "teacher", ppl=metrics["ppl"], train_tokens=trained_tokens
    )


# --------------------------------------------------------------------------- students


class DistillStepConfig(BaseModel):
    model_config = {"extra": "forbid"}

    corpus: CorpusOutput = Field(description="${steps.<corpus step>}")
    teacher: TeacherOutput = Field(description="${steps.<teacher step>}")
    name: str = Field("student", description="metric prefix: student, hybrid, ablation.s3, ...")
    attention_layers: list[int] = []
    from_attention: bool = True
    normalized_mixer: bool = Field(
        False, description="row-normalised SSD mixers (positive B, C; rows sum to one: mixer.py)"
    )
    chunk_size: int = Field(64, ge=1)
    distill: DistillConfig
    eval: EvalConfig = EvalConfig()
    report_stages: bool = Field(
        False, description="also log stage1.matrix_dist / stage2.hidden_dist"
    )
    also_log_as: list[str] = Field(
        [], description="extra prefixes for <prefix>.ppl, e.g. ablation.s123"
    )
    register_as: str | None = None
    nproc_per_node: int = Field(
        1, ge=1, description="> 1: Stage 3 runs under torchrun with DDP (stage3_worker)"
    )
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads for this step and each torchrun process"
    )


def torchrun_stage3(ctx: StepContext, cfg: DistillStepConfig):
    """A Stage-3 runner for ``run_mohawk``: the student goes to disk, ``cfg.nproc_per_node``
    processes distil it (:func:`stage3_worker`), rank 0's result comes back into it."""

    def run(student, budget: int, seed: int) -> list[float]:
        work = ctx.output_dir / "stage3_ddp"
        save_student(student, work / "start")
        settings = {
            "budget": budget,
            "optim": cfg.distill.stage3.model_dump(),
            "temperature": cfg.distill.temperature,
            "seed": seed,
        }
        inputs = {
            "teacher": str(cfg.teacher.teacher_dir),
            "student": str(work / "start"),
            "tokens": str(cfg.corpus.tokens),
        }
        result = run_distributed(
            "nlprec.mohawk.steps:stage3_worker", settings, inputs, work / "end",
            cfg.nproc_per_node, threads=cfg.threads or 1,
        )  # fmt: skip
        student.load_state_dict(load_student(work / "end").state_dict())
        return result["rank0_losses"]

    return run


def stage3_worker(dist_ctx: DistributedContext, config: dict, inputs: dict, out: Path) -> dict:
    """One torchrun rank of Stage 3 (``nlprec.core.launch``): every rank loads the same teacher,
    student and tokens and draws the same global batches (``optim.batch_size``); rank 0 saves the
    distilled student to ``out`` and returns its losses."""
    torch.manual_seed(config["seed"])
    teacher = load_teacher(inputs["teacher"], dist_ctx.device)
    student = load_student(inputs["student"], dist_ctx.device).train()
    tokens = load_file(inputs["tokens"])["train"]
    optim = OptimConfig(**config["optim"])
    losses = stage3_distillation(student, teacher, tokens, config["budget"], optim,
                                 config["temperature"], config["seed"], dist_ctx)  # fmt: skip
    if dist_ctx.is_main:
        save_student(student.eval(), out)
    return {"rank0_losses": losses}


class StudentOutput(StepOutput):
    student_dir: Path
    ppl: float
    metrics: dict[str, float]  # ppl, ppl_ratio, nll, kl, ... and the per-stage summaries
    budgets: dict[int, int]  # tokens per stage


def distill(ctx: StepContext, cfg: DistillStepConfig) -> StudentOutput:
    """MOHAWK: initialise from the teacher, run the configured stages, evaluate, save."""
    with limited_threads(cfg.threads):
        return _distill(ctx, cfg)


def _distill(ctx: StepContext, cfg: DistillStepConfig) -> StudentOutput:
    train_ids, eval_ids = _tokens(ctx, cfg.corpus)
    model = load_teacher(cfg.teacher.teacher_dir, ctx.device)
    windows = eval_windows(eval_ids, cfg.eval)
    teacher_ppl = evaluate_against_teacher(model, None, windows, cfg.eval, ctx.device)["ppl"]
    student, history = distill_student(
        model,
        train_ids,
        windows[: cfg.eval.probe_batch],
        cfg.distill.model_copy(update={"seed": ctx.seed}),
        cfg.attention_layers,
        cfg.from_attention,
        cfg.chunk_size,
        stage3_runner=torchrun_stage3(ctx, cfg) if cfg.nproc_per_node > 1 else None,
        normalized_mixer=cfg.normalized_mixer,
    )
    metrics = evaluate_against_teacher(model, student, windows, cfg.eval, ctx.device)
    metrics["ppl_ratio"] = metrics["ppl"] / teacher_ppl
    metrics["nll"] = _log_window_nll(ctx, cfg.name, model, student, windows, cfg.eval)
    stages = stage_summary(history)
    logged = {f"{cfg.name}.{k}": v for k, v in {**metrics, **stages}.items()}
    logged.update({f"{prefix}.ppl": metrics["ppl"] for prefix in cfg.also_log_as})
    if cfg.report_stages:
        logged.update({k: v for k, v in stages.items() if k.startswith(("stage1.", "stage2."))})
    ctx.log_params({cfg.name: cfg.model_dump(exclude={"corpus", "teacher"})})
    ctx.log_metrics(logged)
    per_layer = {k: v for k, v in history.items() if k != "budgets"}
    per_layer = {
        stage: (v["alignment"] if "alignment" in v else v) for stage, v in per_layer.items()
    }
    ctx.log_dict(
        {"budgets": history["budgets"], "alignment": per_layer}, f"{cfg.name}_alignment.json"
    )
    table = per_layer_table(history)
    (ctx.output_dir / "per_layer.md").write_text(table)
    ctx.log_text(table, f"{cfg.name}_per_layer.md")
    curves = {f"stage {s[-1]}": history[s]["losses"] for s in history if s.startswith("stage")}
    ctx.log_figure(_loss_figure(curves, f"{cfg.name}: MOHAWK stages"), f"{cfg.name}_stages.png")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(cfg.corpus.tokenizer_dir)
    out = save_student(student, ctx.output_dir / "student", tokenizer)
    (ctx.output_dir / "alignment.json").write_text(json.dumps(per_layer, indent=1))
    if cfg.register_as:
        ctx.log_model(out, name=cfg.register_as, flavor="dir")
    if ctx.split == "test":  # in a search trial the headline ppl is already on validation
        ctx.log_metrics({f"{cfg.name}.val_ppl": _validation_ppl(cfg, student, ctx.device)})
    return StudentOutput(
        student_dir=out, ppl=metrics["ppl"], metrics={**metrics, **stages}, budgets=history["budgets"]
    )


def _validation_ppl(cfg: DistillStepConfig, student, device: str) -> float:
    """Perplexity on the validation stream (the windows a search trial evaluates): the evidence a
    promote rule compares, since choosing the model to serve is a selection."""
    windows = eval_windows(load_file(cfg.corpus.tokens)["validation"], cfg.eval)
    return perplexity(student, windows, cfg.eval.batch_size, device)


class ScratchStepConfig(BaseModel):
    model_config = {"extra": "forbid"}

    corpus: CorpusOutput = Field(description="${steps.<corpus step>}")
    teacher: TeacherOutput = Field(description="${steps.<teacher step>}: its size and evaluation")
    name: str = "scratch"
    total_tokens: int = Field(ge=1)
    normalized_mixer: bool = Field(False, description="the same mixer as the student's")
    optim: OptimConfig = OptimConfig(lr=2e-3, decay_fraction=0.3)
    eval: EvalConfig = EvalConfig()
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads for this step (1 is fastest on a shared machine)"
    )


class ScratchOutput(StepOutput):
    ppl: float
    metrics: dict[str, float]


def scratch(ctx: StepContext, cfg: ScratchStepConfig) -> ScratchOutput:
    """The same-size SSM trained from random weights on the same budget as the student."""
    with limited_threads(cfg.threads):
        return _scratch(ctx, cfg)


def _scratch(ctx: StepContext, cfg: ScratchStepConfig) -> ScratchOutput:
    train_ids, eval_ids = _tokens(ctx, cfg.corpus)
    model = load_teacher(cfg.teacher.teacher_dir, ctx.device)
    config: StudentConfig = student_config_for(model.config, normalized_mixer=cfg.normalized_mixer)
    ssm, losses = train_from_scratch(
        config, train_ids, cfg.optim, cfg.total_tokens, ctx.seed, ctx.device
    )
    windows = eval_windows(eval_ids, cfg.eval)
    metrics = evaluate_against_teacher(model, ssm, windows, cfg.eval, ctx.device)
    metrics["nll"] = _log_window_nll(ctx, cfg.name, model, ssm, windows, cfg.eval)
    ctx.log_metrics({f"{cfg.name}.{k}": v for k, v in metrics.items()})
    ctx.log_figure(_loss_figure({cfg.name: losses}, "SSM from scratch"), f"{cfg.name}_loss.png")
    return ScratchOutput(ppl=metrics["ppl"], metrics=metrics)


# --------------------------------------------------------------------------- report


class ReportConfig(BaseModel):
    model_config = {"extra": "forbid"}

    teacher_ppl: float = Field(description="${steps.<teacher step>.ppl}")
    models: dict[str, float] = Field(
        description="row name -> held-out perplexity: ${steps.<step>.ppl}; the targets read the "
        "rows student, hybrid and ablation_s3"
    )
    ppl_ratio_target: float = Field(1.10, gt=1)


def report(ctx: StepContext, cfg: ReportConfig) -> dict:
    """One table of every model's perplexity, the targets checked, and a bar chart."""
    rows = {"teacher": cfg.teacher_ppl, **cfg.models}
    lines = ["| model | held-out ppl | × teacher |", "|---|---|---|"]
    lines += [f"| {n} | {p:.3f} | {p / rows['teacher']:.3f} |" for n, p in rows.items()]
    table = "\n".join(lines)
    (ctx.output_dir / "results.md").write_text(table + "\n")
    ctx.log_text(table, "results.md")
    checks = {}
    if "student" in rows:
        checks["targets.student_within_ratio"] = float(
            rows["student"] <= cfg.ppl_ratio_target * rows["teacher"]
        )
    if "student" in rows and "ablation_s3" in rows:
        checks["targets.s123_beats_s3"] = float(rows["student"] < rows["ablation_s3"])
    if "hybrid" in rows and "student" in rows:
        checks["targets.hybrid_closer"] = float(rows["hybrid"] <= rows["student"])
    ctx.log_metrics(checks)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(list(rows), list(rows.values()))
    ax.axhline(cfg.ppl_ratio_target * rows["teacher"], color="k", ls="--", label="target")
    ax.set_ylabel("held-out perplexity")
    ax.legend()
    plt.setp(ax.get_xticklabels(), rotation=20)
    fig.tight_layout()
    ctx.log_figure(fig, "perplexity.png")
    return {"table": str(ctx.output_dir / "results.md"), **checks}

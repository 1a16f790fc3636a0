"""The experiment as plain functions: corpus → teacher → students (MOHAWK, hybrid, ablation,
from scratch) → evaluation. The pipeline steps (steps.py) call these.
"""

from __future__ import annotations

import logging

import torch
from nlprec.mohawk.data import (
    encode,
    heldout_windows,
    load_corpus,
    load_tokenizer,
    train_tokenizer,
)
from nlprec.mohawk.evaluate import hf_logits, mean_kl, perplexity, window_nll
from nlprec.mohawk.stages import DistillConfig, run_mohawk, train_causal_lm
from nlprec.mohawk.student import StudentConfig, StudentLM
from nlprec.mohawk.teacher import TeacherConfig, build_teacher, prepare_teacher
from nlprec.mohawk.training import OptimConfig
from nlprec.mohawk.transfer import init_student_from_teacher, student_config_for
from pydantic import BaseModel, Field
from transformers import PreTrainedModel

log = logging.getLogger(__name__)

VALIDATION_FRACTION = 0.1


class EvalConfig(BaseModel):
    model_config = {"extra": "forbid"}

    seq_len: int = Field(128, ge=2)
    max_windows: int = Field(64, ge=1)
    batch_size: int = Field(16, ge=1)
    probe_batch: int = Field(4, ge=1)  # windows used for the per-layer distances


def prepare_corpus(
    corpus: str, data_root, vocab_size: int, max_chars: int | None, tokenizer_path=None
):
    """Tokenizer fitted on the training text (or loaded from ``tokenizer_path``); token streams
    (1-D) for train, validation and test. The validation text is carved from the end of the
    training text (``VALIDATION_FRACTION``; none of the corpora has its own): settings are chosen
    on it, and the held-out text is the test, scored only for the chosen setting."""
    fit_text, heldout_text = load_corpus(corpus, data_root, max_chars)
    cut = int(len(fit_text) * (1 - VALIDATION_FRACTION))
    train_text, validation_text = fit_text[:cut], fit_text[cut:]
    if tokenizer_path is None:
        tokenizer = train_tokenizer(train_text, vocab_size)
    else:
        tokenizer = load_tokenizer(tokenizer_path)
    streams = (encode(tokenizer, text) for text in (train_text, validation_text, heldout_text))
    return tokenizer, *streams


def train_teacher(
    vocab_size: int,
    train_ids: torch.Tensor,
    size: TeacherConfig,
    optim: OptimConfig,
    tokens: int,
    seed: int,
    device: str,
) -> tuple[PreTrainedModel, list[float]]:
    torch.manual_seed(seed)
    teacher = build_teacher(size, vocab_size).to(device).train()
    losses = train_causal_lm(
        lambda ids: teacher(ids, use_cache=False).logits,
        teacher.parameters(),
        train_ids,
        tokens,
        optim,
        seed,
        device,
        "teacher (next-token)",
    )
    return prepare_teacher(teacher), losses


def distill_student(
    teacher: PreTrainedModel,
    train_ids: torch.Tensor,
    probe: torch.Tensor,
    cfg: DistillConfig,
    attention_layers: list[int],
    from_attention: bool = True,
    chunk_size: int = 64,
    scan_backend: str = "auto",
    stage3_runner=None,
    normalized_mixer: bool = False,
) -> tuple[StudentLM, dict]:
    """Initialise a student from the teacher and run the configured MOHAWK stages."""
    torch.manual_seed(cfg.seed)
    config = student_config_for(
        teacher.config, attention_layers, chunk_size=chunk_size, normalized_mixer=normalized_mixer
    )
    student = init_student_from_teacher(teacher, config, from_attention=from_attention).train()
    student.set_scan_backend(scan_backend)
    history = run_mohawk(student, teacher, train_ids, cfg, probe.to(teacher.device), stage3_runner)
    return student.eval(), history


def train_from_scratch(
    config: StudentConfig,
    train_ids: torch.Tensor,
    optim: OptimConfig,
    tokens: int,
    seed: int,
    device: str,
    scan_backend: str = "auto",
) -> tuple[StudentLM, list[float]]:
    """The same-size SSM trained with next-token loss on the same token budget (the baseline)."""
    torch.manual_seed(seed)
    model = StudentLM(config.model_copy(update={"attention_layers": []})).to(device).train()
    model.set_scan_backend(scan_backend)
    losses = train_causal_lm(
        model, model.parameters(), train_ids, tokens, optim, seed, device, "scratch SSM"
    )
    return model.eval(), losses


def evaluate_against_teacher(
    teacher: PreTrainedModel,
    model: StudentLM | None,
    windows: torch.Tensor,
    cfg: EvalConfig,
    device: str,
) -> dict[str, float]:
    """Held-out perplexity (and KL to the teacher) of ``model``; of the teacher when model is None."""
    if model is None:
        return {"ppl": perplexity(hf_logits(teacher), windows, cfg.batch_size, device)}
    return {
        "ppl": perplexity(model, windows, cfg.batch_size, device),
        "kl": mean_kl(hf_logits(teacher), model, windows, cfg.batch_size, device),
    }


def window_scores(
    teacher: PreTrainedModel,
    model: StudentLM | None,
    windows: torch.Tensor,
    cfg: EvalConfig,
    device: str,
) -> dict[str, float]:
    """Per evaluation window (the unit of paired tests): mean next-token NLL of ``model``, or of
    the teacher when model is None. Keys name the window's position in the evaluation stream."""
    logits_fn = hf_logits(teacher) if model is None else model
    scores = window_nll(logits_fn, windows, cfg.batch_size, device)
    return {f"window{i:05d}": score for i, score in enumerate(scores)}


def eval_windows(heldout_ids: torch.Tensor, cfg: EvalConfig) -> torch.Tensor:
    return heldout_windows(heldout_ids, cfg.seq_len, cfg.max_windows)


def per_layer_table(history: dict) -> str:
    """Markdown: per SSD layer, the relative matrix distance ‖M − A‖_F / ‖A‖_F and the relative
    block-output error at initialisation and after each stage that ran (as the paper tabulates)."""
    points = ["init"] + [f"stage{s}" for s in sorted(history["budgets"])]
    alignments = {p: history[p] if p == "init" else history[p]["alignment"] for p in points}
    header = " | ".join(f"{kind} {p}" for kind in ("matrix_rel", "hidden_rel") for p in points)
    lines = [f"| layer | {header} |", "|---" * (1 + 2 * len(points)) + "|"]
    for layer in alignments["init"]["matrix_rel"]:
        cells = [
            f"{alignments[p][kind][layer]:.3f}"
            for kind in ("matrix_rel", "hidden_rel")
            for p in points
        ]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def stage_summary(history: dict) -> dict[str, float]:
    """The headline distances: mean over layers after Stage 1 (matrix) and Stage 2 (hidden),
    absolute and relative; falls back to the final state when a stage did not run."""
    final = history[f"stage{max(k for k in history['budgets'])}"]["alignment"]
    after1 = history.get("stage1", {}).get("alignment", final)
    after2 = history.get("stage2", {}).get("alignment", final)

    def mean(values: dict[int, float]) -> float:
        return sum(values.values()) / max(1, len(values))

    return {
        "stage1.matrix_dist": mean(after1["matrix_dist"]),
        "stage1.matrix_rel": mean(after1["matrix_rel"]),
        "stage2.hidden_dist": mean(after2["hidden_dist"]),
        "stage2.hidden_rel": mean(after2["hidden_rel"]),
        "init.matrix_rel": mean(history["init"]["matrix_rel"]),
        "init.hidden_rel": mean(history["init"]["hidden_rel"]),
    }

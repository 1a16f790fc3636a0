"""The experiment as plain functions: corpus → teacher → students (MOHAWK, hybrid, ablation,
from scratch) → evaluation. Pipeline steps (steps.py) and the GPU script
(benchmarks/mohawk_gpu.py) both call these, so the two cannot drift apart.
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
from nlprec.mohawk.evaluate import hf_logits, mean_kl, perplexity
from nlprec.mohawk.stages import DistillConfig, run_mohawk, train_causal_lm
from nlprec.mohawk.student import StudentConfig, StudentLM
from nlprec.mohawk.teacher import TeacherConfig, build_teacher, prepare_teacher
from nlprec.mohawk.training import OptimConfig
from nlprec.mohawk.transfer import init_student_from_teacher, student_config_for
from pydantic import BaseModel, Field
from transformers import PreTrainedModel

log = logging.getLogger(__name__)


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
    (1-D) for train and held-out text."""
    train_text, heldout_text = load_corpus(corpus, data_root, max_chars)
    if tokenizer_path is None:
        tokenizer = train_tokenizer(train_text, vocab_size)
    else:
        tokenizer = load_tokenizer(tokenizer_path)
    return tokenizer, encode(tokenizer, train_text), encode(tokenizer, heldout_text)


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


def eval_windows(heldout_ids: torch.Tensor, cfg: EvalConfig) -> torch.Tensor:
    return heldout_windows(heldout_ids, cfg.seq_len, cfg.max_windows)


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

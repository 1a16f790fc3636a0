"""The three MOHAWK stages, each with its own AdamW and WSD schedule.

Stage 1, matrix orientation: per SSD layer, the teacher's input to that layer goes through the
student's (copied) LayerNorm and mixer; loss = ‖M_student − A_teacher‖_F averaged over batch and
heads, summed over layers. Layers share no parameters, so the sum trains them independently.
Only mixer parameters move.

Stage 2, hidden-state alignment: per SSD layer, the student block on the teacher's layer input
against the teacher's layer output; loss = mean over tokens of the L2 norm of the difference.
Only mixer parameters move (norms and MLPs are the teacher's).

Stage 3, end-to-end distillation: soft cross-entropy on the teacher's logits with a
temperature; every parameter trains. It also runs data-parallel under torchrun
(``nlprec.mohawk.steps.stage3_worker`` under ``nlprec.core.launch``): every process draws the same global batches and takes its own rows.
"""

from __future__ import annotations

import torch
from nlprec.core.distributed import DistributedContext, per_rank_batch_size, wrap_model
from nlprec.mohawk.data import num_steps, token_batches
from nlprec.mohawk.student import StudentLM
from nlprec.mohawk.teacher import teacher_layer_io
from nlprec.mohawk.training import (
    OptimConfig,
    next_token_loss,
    optimise,
    soft_cross_entropy,
)
from pydantic import BaseModel, Field, model_validator
from transformers import PreTrainedModel


class DistillConfig(BaseModel):
    model_config = {"extra": "forbid"}

    total_tokens: int = Field(ge=1)
    # Shares of the token budget for Stages 1, 2, 3 (the paper: 80M / 160M / 2.76B ≈ 3/5/92%).
    split: tuple[float, float, float] = (0.03, 0.05, 0.92)
    stages: list[int] = [1, 2, 3]
    # Stages 1-2 move the mixers only: small batches give their few percent of the tokens enough
    # optimiser steps (with batches of 8-16 windows Stage 1 took 5-14 steps and did not align)
    stage1: OptimConfig = OptimConfig(lr=1e-2, batch_size=1, seq_len=64)
    stage2: OptimConfig = OptimConfig(lr=1e-2, batch_size=2)
    stage3: OptimConfig = OptimConfig(lr=5e-4)
    temperature: float = Field(1.0, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> DistillConfig:
        if not self.stages or any(s not in (1, 2, 3) for s in self.stages):
            raise ValueError(f"stages must be a non-empty subset of [1, 2, 3], got {self.stages}")
        if sorted(set(self.stages)) != self.stages:
            raise ValueError(f"stages must be sorted and unique, got {self.stages}")
        if any(share < 0 for share in self.split) or sum(self.split) <= 0:
            raise ValueError(f"split must be non-negative shares, got {self.split}")
        return self

    def budgets(self) -> dict[int, int]:
        """Tokens per selected stage; the last selected stage takes what the others leave, so
        every stage subset spends the same total (the ablation is at equal tokens)."""
        total_share = sum(self.split)
        budgets = {s: int(self.total_tokens * self.split[s - 1] / total_share) for s in self.stages}
        last = self.stages[-1]
        budgets[last] = self.total_tokens - sum(v for s, v in budgets.items() if s != last)
        return budgets


def _ssd_blocks(student: StudentLM) -> list[tuple[int, torch.nn.Module]]:
    return [(i, b) for i, b in enumerate(student.blocks) if not b.is_attention]


def _mixer_params(student: StudentLM) -> list[torch.nn.Parameter]:
    return [p for _, block in _ssd_blocks(student) for p in block.mixer.parameters()]


def matrix_distances(
    student: StudentLM, inputs: list[torch.Tensor], attentions: list[torch.Tensor]
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per SSD layer: (‖M − A‖_F, ‖A‖_F), each (b, h)."""
    result = {}
    for i, block in _ssd_blocks(student):
        M = block.mixer.mixing_matrix(block.norm(inputs[i]))  # (b, h, l, l)
        A = attentions[i].to(M.dtype)
        result[i] = (torch.linalg.matrix_norm(M - A), torch.linalg.matrix_norm(A))
    return result


def hidden_distances(
    student: StudentLM, inputs: list[torch.Tensor], outputs: list[torch.Tensor]
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per SSD layer: (‖student block(x) − teacher block(x)‖₂, ‖teacher block(x)‖₂), each (b, l)."""
    result = {}
    for i, block in _ssd_blocks(student):
        out, _ = block(inputs[i])
        result[i] = (torch.linalg.vector_norm(out - outputs[i], dim=-1), outputs[i].norm(dim=-1))
    return result


def _align_mixers(
    student: StudentLM,
    teacher: PreTrainedModel,
    tokens: torch.Tensor,
    budget: int,
    cfg: OptimConfig,
    seed: int,
    layer_distances,
    desc: str,
) -> list[float]:
    """Stages 1 and 2: train only the SSD mixers to shrink per-layer distances to the teacher.

    ``layer_distances(student, inputs, outputs, attentions)`` returns {layer: (distance, norm)}.
    """
    student.requires_grad_(False)
    params = _mixer_params(student)
    for p in params:
        p.requires_grad_(True)
    device = student.embed.weight.device

    def loss_fn(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            inputs, outputs, attentions, _ = teacher_layer_io(teacher, batch.to(device))
        distances = layer_distances(student, inputs, outputs, attentions)
        return sum(dist.mean() for dist, _ in distances.values())

    steps = num_steps(budget, cfg.batch_size, cfg.seq_len)
    batches = token_batches(tokens, cfg.batch_size, cfg.seq_len, budget, seed)
    return optimise(params, loss_fn, batches, steps, cfg, desc)


def stage1_matrix_orientation(student, teacher, tokens, budget, cfg, seed) -> list[float]:
    return _align_mixers(
        student, teacher, tokens, budget, cfg, seed,
        lambda s, inputs, _outputs, attentions: matrix_distances(s, inputs, attentions),
        "stage 1: matrix orientation",
    )  # fmt: skip


def stage2_hidden_alignment(student, teacher, tokens, budget, cfg, seed) -> list[float]:
    return _align_mixers(
        student, teacher, tokens, budget, cfg, seed,
        lambda s, inputs, outputs, _attentions: hidden_distances(s, inputs, outputs),
        "stage 2: hidden-state alignment",
    )  # fmt: skip


def stage3_distillation(
    student: StudentLM,
    teacher: PreTrainedModel,
    tokens: torch.Tensor,
    budget: int,
    cfg: OptimConfig,
    temperature: float,
    seed: int,
    dist_ctx: DistributedContext | None = None,
) -> list[float]:
    """End-to-end distillation. With a distributed ``dist_ctx`` the student trains under DDP:
    each of the N processes takes its 1/N of every global batch of ``cfg.batch_size`` rows, and
    DDP's averaged gradients equal one process's on the whole batch. Losses are this rank's."""
    student.requires_grad_(True)
    device = student.embed.weight.device
    dist_ctx = dist_ctx or DistributedContext(device=str(device))
    model = wrap_model(student, dist_ctx)
    rows = per_rank_batch_size(cfg.batch_size, dist_ctx)

    def loss_fn(batch: torch.Tensor) -> torch.Tensor:
        batch = batch[dist_ctx.rank * rows : (dist_ctx.rank + 1) * rows].to(device)
        with torch.no_grad():
            teacher_logits = teacher(batch, use_cache=False).logits
        return soft_cross_entropy(model(batch), teacher_logits, temperature)

    steps = num_steps(budget, cfg.batch_size, cfg.seq_len)
    batches = token_batches(tokens, cfg.batch_size, cfg.seq_len, budget, seed)
    return optimise(student.parameters(), loss_fn, batches, steps, cfg, "stage 3: distillation")


def train_causal_lm(
    forward,
    params,
    tokens: torch.Tensor,
    budget: int,
    cfg: OptimConfig,
    seed: int,
    device: str,
    desc: str,
) -> list[float]:
    """Plain next-token training (the teacher, and the from-scratch baseline)."""

    def loss_fn(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(device)
        return next_token_loss(forward(batch), batch)

    steps = num_steps(budget, cfg.batch_size, cfg.seq_len)
    batches = token_batches(tokens, cfg.batch_size, cfg.seq_len, budget, seed)
    return optimise(params, loss_fn, batches, steps, cfg, desc)


@torch.no_grad()
def alignment_report(
    student: StudentLM, teacher: PreTrainedModel, probe: torch.Tensor
) -> dict[str, dict[int, float]]:
    """Stage-1 and Stage-2 distances per SSD layer on a probe batch (b, l), absolute and
    relative to the teacher's norms."""
    inputs, outputs, attentions, _ = teacher_layer_io(teacher, probe)
    matrix = matrix_distances(student, inputs, attentions)
    hidden = hidden_distances(student, inputs, outputs)
    return {
        "matrix_dist": {i: d.mean().item() for i, (d, _) in matrix.items()},
        "matrix_rel": {i: (d / n).mean().item() for i, (d, n) in matrix.items()},
        "hidden_dist": {i: d.mean().item() for i, (d, _) in hidden.items()},
        "hidden_rel": {i: (d / n).mean().item() for i, (d, n) in hidden.items()},
    }


def run_mohawk(
    student: StudentLM,
    teacher: PreTrainedModel,
    tokens: torch.Tensor,
    cfg: DistillConfig,
    probe: torch.Tensor,
    stage3_runner=None,
) -> dict:
    """Run the selected stages in order; return losses and the alignment after each stage.

    ``stage3_runner(student, budget, seed) -> losses``, when given, runs Stage 3 instead (e.g. in
    torchrun processes, see steps.py) and leaves the distilled weights in ``student``."""
    history: dict = {"budgets": cfg.budgets(), "init": alignment_report(student, teacher, probe)}
    for stage, budget in cfg.budgets().items():
        seed = cfg.seed + stage
        if stage == 1:
            losses = stage1_matrix_orientation(student, teacher, tokens, budget, cfg.stage1, seed)
        elif stage == 2:
            losses = stage2_hidden_alignment(student, teacher, tokens, budget, cfg.stage2, seed)
        elif stage3_runner is not None:
            losses = stage3_runner(student, budget, seed)
        else:
            losses = stage3_distillation(
                student, teacher, tokens, budget, cfg.stage3, cfg.temperature, seed
            )
        history[f"stage{stage}"] = {
            "losses": losses,
            "alignment": alignment_report(student, teacher, probe),
        }
    student.requires_grad_(True)
    return history

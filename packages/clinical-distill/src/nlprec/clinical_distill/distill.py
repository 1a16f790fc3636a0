"""Knowledge distillation of a masked-LM teacher into a student, with combinable losses.

total = w_mlm * CE(student, masked labels)
      + w_kd * T^2 * KL(p_t^T || p_s^T)                       on masked positions
      + w_hidden * sum_{(i, j) in layer_map} D(W_i h_s^i, h_t^j)  D = 1 - cos or MSE, W_i learned
      + w_attn * sum_{(i, j) in attention_layer_map} D(A_s^i, A_t^j)   D = MSE or KL
Hidden-state indices count the embedding output as 0 (as `output_hidden_states` does); attention
indices count transformer layers from 1.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import torch
from nlprec.core.distributed import (
    DistributedContext,
    all_reduce_mean,
    global_sum,
    per_rank_batch_size,
    wrap_model,
)
from nlprec.core.training import autocast
from pydantic import Field
from torch import nn
from transformers import PreTrainedModel

from . import losses
from .mlm import MLMConfig, collate, mixed_batches, mlm_collator, tokenize_chunks
from .models import num_layers
from .students import StudentError, check_student_fits
from .training import apply_update, make_optimizer, progress

LayerMap = list[tuple[int, int]]


class DistillConfig(MLMConfig):
    """Training settings (from MLMConfig) plus the loss mixture. A weight of 0 turns a loss off."""

    mlm_weight: float = Field(1.0, ge=0)
    kd_weight: float = Field(1.0, ge=0)
    temperature: float = Field(2.0, gt=0)
    hidden_weight: float = Field(1.0, ge=0)
    hidden_loss: Literal["cosine", "mse"] = "cosine"
    layer_map: LayerMap | None = None  # (student hidden index, teacher hidden index); None: uniform
    attention_weight: float = Field(0.0, ge=0)
    attention_loss: Literal["mse", "kl"] = "kl"
    # (student layer, teacher layer), from 1; None: uniform
    attention_layer_map: LayerMap | None = None


def uniform_layer_map(n_student: int, n_teacher: int, start: int) -> LayerMap:
    """Student layer i <-> teacher layer round(i * n_teacher / n_student), for i from `start`."""
    return [(i, round(i * n_teacher / n_student)) for i in range(start, n_student + 1)]


def layer_subset_map(layers: list[int]) -> LayerMap:
    """Hidden-state map for a layer-subset student: embeddings to embeddings, copy j to its source."""
    return [(0, 0)] + [(j + 1, t + 1) for j, t in enumerate(layers)]


def copied_layer_maps(cfg: DistillConfig, layers: list[int] | None) -> DistillConfig:
    """Default maps for a student whose layers are copies of teacher `layers`: each copy to its source.

    Maps given in `cfg` are kept; with `layers` None (random students) `cfg` is returned unchanged.
    """
    if layers is None:
        return cfg
    update = {}
    if cfg.layer_map is None:
        update["layer_map"] = layer_subset_map(layers)
    if cfg.attention_layer_map is None:
        update["attention_layer_map"] = layer_subset_map(layers)[1:]
    return cfg.model_copy(update=update)


def validate_layer_map(
    layer_map: LayerMap, n_student: int, n_teacher: int, start: int, what: str
) -> None:
    for s, t in layer_map:
        if not start <= s <= n_student:
            raise StudentError(f"{what}: student index {s} out of range [{start}, {n_student}]")
        if not start <= t <= n_teacher:
            raise StudentError(f"{what}: teacher index {t} out of range [{start}, {n_teacher}]")


class DistillationObjective(nn.Module):
    """Holds the learned projections W_i (student width -> teacher width) and computes the loss mixture."""

    def __init__(self, teacher: PreTrainedModel, student: PreTrainedModel, cfg: DistillConfig):
        super().__init__()
        check_student_fits(teacher, student)
        n_s, n_t = num_layers(student.config), num_layers(teacher.config)
        self.cfg = cfg
        self.layer_map = cfg.layer_map or uniform_layer_map(n_s, n_t, start=0)
        self.attention_layer_map = cfg.attention_layer_map or uniform_layer_map(n_s, n_t, start=1)
        validate_layer_map(self.layer_map, n_s, n_t, 0, "layer_map")
        validate_layer_map(self.attention_layer_map, n_s, n_t, 1, "attention_layer_map")
        d_s, d_t = student.config.hidden_size, teacher.config.hidden_size
        self.projections = nn.ModuleList(_projection(d_s, d_t) for _ in self.layer_map)

    @property
    def needs_hidden(self) -> bool:
        return self.cfg.hidden_weight > 0

    @property
    def needs_attention(self) -> bool:
        return self.cfg.attention_weight > 0

    def forward(
        self,
        student_out,
        teacher_out,
        batch: dict[str, torch.Tensor],
        dist_ctx: DistributedContext | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss parts and their weighted `total`, each a mean over the items of the whole (global) batch.

        Under data parallelism each rank holds a share of the batch: its sums are divided by the item
        counts over every rank and multiplied by the world size, so the gradients DDP averages are
        exactly those of one process on the whole batch (masked tokens differ per rank).
        """
        cfg = self.cfg
        terms = self._loss_terms(student_out, teacher_out, batch)  # part -> [(sum, count)]
        counts = torch.stack([count for part in terms.values() for _, count in part]).float()
        dist_ctx = dist_ctx or DistributedContext()
        counts, world = global_sum(counts, dist_ctx), dist_ctx.world_size
        parts: dict[str, torch.Tensor] = {}
        index = 0
        for name, part in terms.items():  # a part over several layers is the mean of their losses
            parts[name] = (
                sum(total / counts[index + i].clamp_min(1) for i, (total, _) in enumerate(part))
                * world
                / len(part)
            )
            index += len(part)
        weights = {
            "mlm": cfg.mlm_weight,
            "kd": cfg.kd_weight,
            "hidden": cfg.hidden_weight,
            "attention": cfg.attention_weight,
        }
        parts["total"] = sum(weights[k] * v for k, v in parts.items())
        return parts

    def _loss_terms(self, student_out, teacher_out, batch) -> dict[str, list[losses.Term]]:
        cfg = self.cfg
        token_mask = batch["attention_mask"]  # (B, L)
        masked = batch["labels"] != -100  # (B, L)
        terms: dict[str, list[losses.Term]] = {}
        # logits (N, V) come for the N masked positions alone (forward_masked)
        if cfg.mlm_weight > 0:
            terms["mlm"] = [
                losses.mlm_loss_sum(student_out.logits.float(), batch["labels"][masked])
            ]
        if cfg.kd_weight > 0:
            every = torch.ones(
                len(student_out.logits), dtype=torch.bool, device=masked.device
            )  # (N,)
            terms["kd"] = [
                losses.soft_target_kl_sum(
                    student_out.logits.float(), teacher_out.logits.float(), every, cfg.temperature
                )
            ]
        if self.needs_hidden:
            terms["hidden"] = [
                losses.hidden_state_loss_sum(
                    proj(student_out.hidden_states[s].float()),
                    teacher_out.hidden_states[t].float(),
                    token_mask,
                    cfg.hidden_loss,
                )
                for proj, (s, t) in zip(self.projections, self.layer_map)
            ]
        if self.needs_attention:
            terms["attention"] = [
                losses.attention_loss_sum(
                    student_out.attentions[s - 1].float(),
                    teacher_out.attentions[t - 1].float(),
                    token_mask,
                    cfg.attention_loss,
                )
                for s, t in self.attention_layer_map
            ]
        return terms


@dataclass
class MaskedLMOutput:
    """Encoder states and attentions of the whole batch; MLM logits (N, V) of the N masked positions only."""

    logits: torch.Tensor
    hidden_states: tuple | None
    attentions: tuple | None


def mlm_head(model: PreTrainedModel) -> nn.Module | None:
    """The module mapping encoder states to vocabulary logits (BERT: cls, ALBERT: predictions), or None."""
    for name in ("cls", "predictions"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            return head
    return None


def forward_masked(
    model: PreTrainedModel, inputs: dict, masked: torch.Tensor, outputs: dict
) -> MaskedLMOutput:
    """The model's MLM logits at `masked` (B, L) positions only, plus its hidden states and attentions.

    Only about 15% of positions are masked, and the V-wide output layer dominates a small model's
    step, so the head runs on those rows alone (same values as the full forward's logits[masked]).
    Models whose head is not a known submodule fall back to the full forward.
    """
    head = mlm_head(model)
    if head is None:
        out = model(**inputs, **outputs)
        return MaskedLMOutput(out.logits[masked], out.hidden_states, out.attentions)
    out = model.base_model(**inputs, **outputs)
    return MaskedLMOutput(head(out.last_hidden_state[masked]), out.hidden_states, out.attentions)


class StudentWithObjective(nn.Module):
    """The student and the learned projections as one module, so DDP synchronises both."""

    def __init__(self, student: PreTrainedModel, objective: DistillationObjective):
        super().__init__()
        self.student = student
        self.objective = objective

    def forward(
        self,
        inputs: dict,
        teacher_out: MaskedLMOutput,
        batch: dict,
        outputs: dict,
        dist_ctx: DistributedContext | None = None,
    ) -> dict[str, torch.Tensor]:
        student_out = forward_masked(self.student, inputs, batch["labels"] != -100, outputs)
        return self.objective(student_out, teacher_out, batch, dist_ctx)


def _projection(d_in: int, d_out: int) -> nn.Linear:
    """Linear map student -> teacher width; identity at start when the widths agree."""
    layer = nn.Linear(d_in, d_out)
    if d_in == d_out:
        with torch.no_grad():
            layer.weight.copy_(torch.eye(d_in))
            layer.bias.zero_()
    return layer


def rank_share(
    batch: dict[str, torch.Tensor], dist_ctx: DistributedContext | None
) -> dict[str, torch.Tensor]:
    """This rank's contiguous block of rows of a global batch (all of it in a single process)."""
    if dist_ctx is None or not dist_ctx.is_distributed:
        return batch
    rows = per_rank_batch_size(len(batch["input_ids"]), dist_ctx)
    start = dist_ctx.rank * rows
    return {k: v[start : start + rows] for k, v in batch.items()}


def distill(
    teacher: PreTrainedModel,
    student: PreTrainedModel,
    tokenizer,
    texts: list[str],
    cfg: DistillConfig,
    device: str = "cpu",
    show_progress: bool = True,
    desc: str = "distill",
    dist_ctx: DistributedContext | None = None,
) -> list[dict[str, float]]:
    """Train `student` in place against the frozen `teacher`; returns each step's loss parts.

    Every shape and index check (vocabulary, size, layer maps, attention outputs) runs before the
    first step, so bad settings fail before any compute is spent.

    With a distributed `dist_ctx` (torchrun, see steps.distill_worker) every rank draws and masks the same global
    batch of `cfg.batch_size` chunks (same seeds), trains on its block of rows under DDP, and the
    returned losses are global-batch means (the same on every rank).
    """
    if cfg.mlm_weight + cfg.kd_weight + cfg.hidden_weight + cfg.attention_weight == 0:
        raise ValueError("all loss weights are 0: nothing to train")
    objective = DistillationObjective(teacher, student, cfg)
    if objective.needs_attention:
        for name, model in (("teacher", teacher), ("student", student)):
            if model.config._attn_implementation != "eager":
                raise StudentError(
                    f"attention loss needs the {name} loaded with attn_implementation='eager'"
                )
    if dist_ctx is not None:
        per_rank_batch_size(
            cfg.batch_size, dist_ctx
        )  # fails early when the batch does not split evenly
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    chunks = tokenize_chunks(tokenizer, texts, cfg.max_len)
    collator = mlm_collator(tokenizer, cfg.mlm_probability)
    teacher.to(device).eval().requires_grad_(False)
    student.to(device).train()
    objective.to(device)
    # parts of the student a loss mixture leaves untouched (e.g. the MLM head without mlm/kd) get no
    # gradient; DDP must be told to look for them
    unused = cfg.mlm_weight + cfg.kd_weight == 0 or cfg.hidden_weight == 0
    trainable = wrap_model(
        StudentWithObjective(student, objective),
        dist_ctx or DistributedContext(),
        find_unused_parameters=unused,
    )
    params = list(trainable.parameters())
    optimizer, schedule = make_optimizer(params, cfg, cfg.steps)
    batches = mixed_batches(chunks, [], cfg.batch_size, 0.0, rng)
    outputs = {
        "output_hidden_states": objective.needs_hidden,
        "output_attentions": objective.needs_attention,
    }
    history = []
    for _ in progress(range(cfg.steps), desc=desc, enabled=show_progress):
        batch = rank_share(collate(collator, next(batches)), dist_ctx)
        batch = {k: v.to(device) for k, v in batch.items()}
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        with autocast(device):
            with torch.no_grad():
                teacher_out = forward_masked(teacher, inputs, batch["labels"] != -100, outputs)
            parts = trainable(inputs, teacher_out, batch, outputs, dist_ctx)
        apply_update(parts["total"], params, optimizer, schedule)
        values = torch.stack([v.detach().float() for v in parts.values()])
        values = all_reduce_mean(values, dist_ctx) if dist_ctx is not None else values
        history.append(dict(zip(parts, values.tolist(), strict=True)))
    return history

"""Teachers: Hugging Face causal LMs (Phi, GPT-2, Llama families) that can return their
attention probabilities.

No pretrained causal LM is available offline, so ``build_teacher`` makes a small model that
``stages.train_causal_lm`` trains: Phi-style by default (parallel attention/MLP block, partial
RoPE), or GPT-2 or Llama (``TeacherConfig.family``).
A teacher from a path is loaded with eager attention (the only kind that returns attention
probabilities); ``prepare_teacher`` switches or refuses any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from nlprec.mohawk.families import SUPPORTED_FAMILIES, decoder_layers, family_of
from pydantic import BaseModel, Field, model_validator
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    PreTrainedModel,
)


class TeacherConfig(BaseModel):
    """Family and size of a teacher trained from scratch (Phi-style unless told otherwise)."""

    model_config = {"extra": "forbid"}

    family: Literal["phi", "gpt2", "llama"] = "phi"
    num_kv_heads: int | None = Field(None, ge=1, description="llama only: grouped-query K/V heads")
    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(512, ge=8)
    partial_rotary_factor: float = Field(0.5, gt=0, le=1)
    rope_theta: float = 10000.0
    max_position_embeddings: int = Field(16384, ge=16)

    @model_validator(mode="after")
    def _check(self) -> TeacherConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} not divisible by num_heads {self.num_heads}"
            )
        if self.num_kv_heads not in (None, self.num_heads):
            if self.family != "llama":
                raise ValueError(f"num_kv_heads is for llama teachers ({self.family} has none)")
            if self.num_heads % self.num_kv_heads:
                raise ValueError(
                    f"num_heads {self.num_heads} not a multiple of num_kv_heads {self.num_kv_heads}"
                )
        return self


def build_phi_teacher(cfg: TeacherConfig, vocab_size: int) -> PhiForCausalLM:
    config = PhiConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        partial_rotary_factor=cfg.partial_rotary_factor,
        rope_theta=cfg.rope_theta,
        max_position_embeddings=cfg.max_position_embeddings,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attention_dropout=0.0,
        tie_word_embeddings=False,
    )
    return PhiForCausalLM._from_config(config, attn_implementation="eager")


def build_teacher(cfg: TeacherConfig, vocab_size: int) -> PreTrainedModel:
    """A randomly initialised teacher of ``cfg.family`` (eager attention, no dropout)."""
    if cfg.family == "phi":
        return build_phi_teacher(cfg, vocab_size)
    if cfg.family == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size,
            n_positions=cfg.max_position_embeddings,
            n_embd=cfg.hidden_size,
            n_layer=cfg.num_layers,
            n_head=cfg.num_heads,
            n_inner=cfg.intermediate_size,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=0,
            eos_token_id=0,
        )
        return GPT2LMHeadModel._from_config(config, attn_implementation="eager")
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads or cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
    )
    return LlamaForCausalLM._from_config(config, attn_implementation="eager")


def prepare_teacher(model: PreTrainedModel) -> PreTrainedModel:
    """Check the family and make attention probabilities available (eager attention), frozen."""
    family_of(model.config)
    if model.config._attn_implementation != "eager":
        try:
            model.set_attn_implementation("eager")
        except Exception as err:  # noqa: BLE001 - any failure means we cannot get probabilities
            raise ValueError(
                f"teacher uses {model.config._attn_implementation!r} attention, which cannot return "
                "attention probabilities, and could not be switched to 'eager'"
            ) from err
    model.eval().requires_grad_(False)
    return model


def load_teacher(path: str | Path, device: str = "cpu") -> PreTrainedModel:
    """Load a saved causal LM as a teacher (eager attention, frozen)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no Hugging Face model at {path} (config.json missing)")
    family = AutoConfig.from_pretrained(path).model_type
    if family not in SUPPORTED_FAMILIES:
        raise ValueError(
            f"teacher at {path} is a {family!r} model; supported: {SUPPORTED_FAMILIES}"
        )
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager")
    return prepare_teacher(model).to(device)


@torch.no_grad()
def teacher_layer_io(
    teacher: PreTrainedModel, input_ids: torch.Tensor
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Run the teacher once and collect, per decoder layer, its input, its output and its
    attention probabilities; also the logits.

    Inputs/outputs are captured with forward hooks on the decoder layers (what the
    ``hidden_states`` tuple holds at its ends differs between models and versions).
    Returns inputs[i], outputs[i]: (b, l, d); attentions[i]: (b, h, l, l); logits (b, l, vocab).
    """
    layers = decoder_layers(teacher)
    inputs: list[torch.Tensor] = [None] * len(layers)  # type: ignore[list-item]
    outputs: list[torch.Tensor] = [None] * len(layers)  # type: ignore[list-item]

    def hook(index):
        def record(module, args, kwargs, output):
            inputs[index] = args[0] if args else kwargs["hidden_states"]
            outputs[index] = output[0] if isinstance(output, tuple) else output

        return record

    handles = [
        layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)
    ]
    try:
        result = teacher(input_ids, output_attentions=True, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    if result.attentions is None or any(a is None for a in result.attentions):
        raise RuntimeError("teacher returned no attention probabilities; is attention eager?")
    return inputs, outputs, list(result.attentions), result.logits

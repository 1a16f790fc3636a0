"""Teacher families: where each Hugging Face causal LM keeps what the student copies.

A student mirrors its teacher's block, so each family says

* its **layout** (the ``StudentConfig`` fields that describe the block):
  Phi: one LayerNorm, attention and MLP in parallel, partial RoPE, biases everywhere;
  GPT-2: LayerNorm → attention, LayerNorm → MLP in sequence, learned absolute positions,
  ``Conv1D`` weights (stored input × output, the transpose of ``nn.Linear``), head tied to the
  embedding; Llama: RMSNorm, sequential block, gated SiLU MLP (SwiGLU), RoPE, grouped-query
  attention, no biases by default;
* its **weights**, renamed to the student's parameter names (``copied_weights``), and each
  layer's attention projections in ``nn.Linear`` form (``attention_weights``), from which SSD
  mixers are initialised (C ← Q, B ← K, x ← V, out ← O).

Only these three families are known; any other model type is refused with the list.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

SUPPORTED_FAMILIES = ("phi", "gpt2", "llama")


@dataclass
class AttentionWeights:
    """One layer's attention projections as ``nn.Linear`` weights (out × in) and biases (or None).

    q: (heads · head_dim, d); k, v: (kv_heads · head_dim, d); o: (d, heads · head_dim).
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor
    q_bias: torch.Tensor | None
    k_bias: torch.Tensor | None
    v_bias: torch.Tensor | None
    o_bias: torch.Tensor | None


def family_of(config: PretrainedConfig) -> str:
    family = config.model_type
    if family not in SUPPORTED_FAMILIES:
        raise ValueError(
            f"teacher family {family!r} is not supported for student initialisation; "
            f"supported: {SUPPORTED_FAMILIES}"
        )
    return family


def unsupported_features(config: PretrainedConfig) -> list[str]:
    """Teacher options the student cannot mirror (each a reason to refuse the teacher)."""
    problems = []
    if getattr(config, "qk_layernorm", False):
        problems.append("qk_layernorm (a LayerNorm on queries and keys)")
    if getattr(config, "scale_attn_by_inverse_layer_idx", False):
        problems.append("scale_attn_by_inverse_layer_idx")
    if not getattr(config, "scale_attn_weights", True):
        problems.append("scale_attn_weights=False (unscaled attention)")
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    if heads % kv_heads:
        problems.append(f"{heads} query heads not a multiple of {kv_heads} key/value heads")
    return problems


def _rope(config: PretrainedConfig) -> dict:
    return getattr(config, "rope_parameters", None) or {}


def rope_type(config: PretrainedConfig) -> str:
    """ "default" for plain RoPE (what the hybrid's attention layers implement), else its variant."""
    return _rope(config).get("rope_type", "default")


def layout(config: PretrainedConfig) -> dict:
    """The StudentConfig fields that make a student of this teacher's shape and block."""
    family = family_of(config)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = _rope(config)
    common = {
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_layers": config.num_hidden_layers,
        "num_heads": heads,
        "num_kv_heads": getattr(config, "num_key_value_heads", None) or heads,
        "head_dim": head_dim,
        "state_size": head_dim,
        "rope_theta": rope.get("rope_theta", 10000.0),
        "family": family,
    }
    if family == "phi":
        return common | {
            "intermediate_size": config.intermediate_size,
            "hidden_act": config.hidden_act,
            "layer_norm_eps": config.layer_norm_eps,
            "rotary_dim": int(head_dim * rope.get("partial_rotary_factor", 1.0)),
        }
    if family == "gpt2":
        return common | {
            "intermediate_size": config.n_inner or 4 * config.hidden_size,
            "hidden_act": config.activation_function,
            "layer_norm_eps": config.layer_norm_epsilon,
            "block": "sequential",
            "rotary_dim": 0,
            "max_positions": config.n_positions,
            "lm_head_bias": False,
        }
    return common | {  # llama
        "intermediate_size": config.intermediate_size,
        "hidden_act": config.hidden_act,
        "layer_norm_eps": config.rms_norm_eps,
        "block": "sequential",
        "norm": "rmsnorm",
        "mlp": "gated",
        "mlp_bias": config.mlp_bias,
        "attention_bias": config.attention_bias,
        "rotary_dim": int(head_dim * rope.get("partial_rotary_factor", 1.0)),
        "lm_head_bias": False,
    }


def decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    if family_of(model.config) == "gpt2":
        return model.transformer.h
    return model.model.layers


def _linear(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """nn.Linear parameters under the student's name ``prefix``."""
    out = {f"{prefix}.weight": module.weight}
    if module.bias is not None:
        out[f"{prefix}.bias"] = module.bias
    return out


def _conv1d(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """GPT-2's Conv1D (y = x W + b, W stored in × out) as nn.Linear parameters."""
    return {f"{prefix}.weight": module.weight.t(), f"{prefix}.bias": module.bias}


def _norm(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{name}": p for name, p in module.named_parameters()}


def copied_weights(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """Every weight the student takes as it is: embeddings, norms, MLPs, final norm, LM head,
    under the student's parameter names (attention is handled per layer, see transfer.py)."""
    family = family_of(model.config)
    weights: dict[str, torch.Tensor] = {"lm_head.weight": model.lm_head.weight}
    if model.lm_head.bias is not None:
        weights["lm_head.bias"] = model.lm_head.bias
    if family == "gpt2":
        body = model.transformer
        weights |= {"embed.weight": body.wte.weight, "positions.weight": body.wpe.weight}
        weights |= _norm(body.ln_f, "final_norm")
        for i, layer in enumerate(body.h):
            weights |= _norm(layer.ln_1, f"blocks.{i}.norm")
            weights |= _norm(layer.ln_2, f"blocks.{i}.norm2")
            weights |= _conv1d(layer.mlp.c_fc, f"blocks.{i}.mlp.fc1")
            weights |= _conv1d(layer.mlp.c_proj, f"blocks.{i}.mlp.fc2")
        return weights
    body = model.model
    weights["embed.weight"] = body.embed_tokens.weight
    if family == "phi":
        weights |= _norm(body.final_layernorm, "final_norm")
        for i, layer in enumerate(body.layers):
            weights |= _norm(layer.input_layernorm, f"blocks.{i}.norm")
            weights |= _linear(layer.mlp.fc1, f"blocks.{i}.mlp.fc1")
            weights |= _linear(layer.mlp.fc2, f"blocks.{i}.mlp.fc2")
        return weights
    weights |= _norm(body.norm, "final_norm")  # llama
    for i, layer in enumerate(body.layers):
        weights |= _norm(layer.input_layernorm, f"blocks.{i}.norm")
        weights |= _norm(layer.post_attention_layernorm, f"blocks.{i}.norm2")
        for name in ("gate_proj", "up_proj", "down_proj"):
            weights |= _linear(getattr(layer.mlp, name), f"blocks.{i}.mlp.{name}")
    return weights


def attention_weights(model: PreTrainedModel, index: int) -> AttentionWeights:
    """Layer ``index``'s attention projections in nn.Linear form."""
    layer = decoder_layers(model)[index]
    if family_of(model.config) == "gpt2":
        attention = layer.attn
        q, k, v = attention.c_attn.weight.t().chunk(3, dim=0)
        q_bias, k_bias, v_bias = attention.c_attn.bias.chunk(3)
        o, o_bias = attention.c_proj.weight.t(), attention.c_proj.bias
        return AttentionWeights(q, k, v, o, q_bias, k_bias, v_bias, o_bias)
    attention = layer.self_attn
    out = attention.dense if hasattr(attention, "dense") else attention.o_proj  # phi | llama
    projections = (attention.q_proj, attention.k_proj, attention.v_proj, out)
    return AttentionWeights(*(p.weight for p in projections), *(p.bias for p in projections))

"""Student initialisation from a teacher (MOHAWK Stage 3's weight transfer, done up front).

Copied as they are: token embedding, per-layer LayerNorm and MLP, final LayerNorm, LM head,
and, in hybrid attention layers, the attention itself. In SSD layers the heads map one to one:

    C ← Q,  B ← K,  x ← V,  out_proj ← O          (weights and biases)

when ``from_attention`` is set; the convolution then starts as the identity, the A_log
projection as a constant decay, and the gate open: z-projection zero and z_bias = silu⁻¹(1),
so silu(z + z_bias) = 1 (the paper's student starts ungated, the gate is learned later).
"""

from __future__ import annotations

import torch
from nlprec.mohawk.mixer import OPEN_GATE_BIAS, SSDMixer
from nlprec.mohawk.student import StudentConfig, StudentLM
from nlprec.mohawk.teacher import SUPPORTED_FAMILIES
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

# exp(-softplus(INITIAL_A_LOG)) ≈ 0.98: a long memory to start from (attention sees everything).
INITIAL_A_LOG = -4.0


def teacher_dimensions(config: PretrainedConfig) -> dict[str, int]:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_layers": config.num_hidden_layers,
        "num_heads": heads,
        "head_dim": head_dim,
        "state_size": head_dim,
    }


def student_config_for(
    teacher_config: PretrainedConfig,
    attention_layers: list[int] | tuple[int, ...] = (),
    chunk_size: int = 64,
    conv_kernel: int = 4,
) -> StudentConfig:
    """The student that matches a teacher head for head."""
    if teacher_config.model_type not in SUPPORTED_FAMILIES:
        raise ValueError(
            f"teacher family {teacher_config.model_type!r} not in {SUPPORTED_FAMILIES}"
        )
    dims = teacher_dimensions(teacher_config)
    rope = teacher_config.rope_parameters
    return StudentConfig(
        **dims,
        conv_kernel=conv_kernel,
        chunk_size=chunk_size,
        hidden_act=teacher_config.hidden_act,
        layer_norm_eps=teacher_config.layer_norm_eps,
        rope_theta=rope["rope_theta"],
        rotary_dim=int(dims["head_dim"] * rope.get("partial_rotary_factor", 1.0)),
        attention_layers=list(attention_layers),
    )


def check_compatible(student: StudentConfig, teacher_config: PretrainedConfig) -> None:
    """Raise one clear error listing every dimension where student and teacher disagree."""
    if getattr(teacher_config, "num_key_value_heads", teacher_config.num_attention_heads) != (
        teacher_config.num_attention_heads
    ):
        raise ValueError(
            "teachers with grouped-query attention are not supported (K/V heads ≠ Q heads)"
        )
    if getattr(teacher_config, "qk_layernorm", False):
        raise ValueError("teachers with qk_layernorm are not supported")
    expected = teacher_dimensions(teacher_config)
    mismatches = [
        f"{name}: student {getattr(student, name)} vs teacher {value}"
        for name, value in expected.items()
        if name != "state_size" and getattr(student, name) != value
    ]
    if student.state_size != expected["head_dim"]:
        mismatches.append(
            f"state_size: student {student.state_size} vs teacher head_dim {expected['head_dim']} "
            "(B and C take the teacher's K and Q per head)"
        )
    if mismatches:
        raise ValueError("student and teacher configs disagree: " + "; ".join(mismatches))


def _copy(dst: nn.Module, src: nn.Module) -> None:
    dst.load_state_dict(src.state_dict())


@torch.no_grad()
def _init_mixer_from_attention(mixer: SSDMixer, attention: nn.Module) -> None:
    inner, qk = mixer.inner_size, mixer.qk_size
    rows = {  # slices of in_proj's output: x | B | C | z | A_log
        "x": slice(0, inner),
        "B": slice(inner, inner + qk),
        "C": slice(inner + qk, inner + 2 * qk),
        "z": slice(inner + 2 * qk, 2 * inner + 2 * qk),
        "A_log": slice(2 * inner + 2 * qk, None),
    }
    for name, source in (("x", attention.v_proj), ("B", attention.k_proj), ("C", attention.q_proj)):
        mixer.in_proj.weight[rows[name]] = source.weight
        mixer.in_proj.bias[rows[name]] = source.bias
    mixer.in_proj.weight[rows["z"]] = 0.0
    mixer.in_proj.bias[rows["z"]] = 0.0
    mixer.z_bias.fill_(OPEN_GATE_BIAS)
    mixer.in_proj.weight[rows["A_log"]] = 0.0
    mixer.in_proj.bias[rows["A_log"]] = INITIAL_A_LOG
    mixer.conv1d.weight.zero_()
    mixer.conv1d.weight[:, 0, -1] = 1.0  # identity: each channel passes its current input
    mixer.conv1d.bias.zero_()
    mixer.out_proj.weight.copy_(attention.dense.weight)
    mixer.out_proj.bias.copy_(attention.dense.bias)


@torch.no_grad()
def init_student_from_teacher(
    teacher: PreTrainedModel, config: StudentConfig, from_attention: bool = True
) -> StudentLM:
    """A student whose every non-mixer weight is the teacher's (see module docstring)."""
    check_compatible(config, teacher.config)
    student = StudentLM(config).to(teacher.device)
    body = teacher.model
    _copy(student.embed, body.embed_tokens)
    _copy(student.final_norm, body.final_layernorm)
    _copy(student.lm_head, teacher.lm_head)
    for block, layer in zip(student.blocks, body.layers, strict=True):
        _copy(block.norm, layer.input_layernorm)
        block.mlp.fc1.load_state_dict(layer.mlp.fc1.state_dict())
        block.mlp.fc2.load_state_dict(layer.mlp.fc2.state_dict())
        attention = layer.self_attn
        if block.is_attention:
            for name in ("q_proj", "k_proj", "v_proj"):
                _copy(getattr(block.mixer, name), getattr(attention, name))
            _copy(block.mixer.out_proj, attention.dense)
        elif from_attention:
            _init_mixer_from_attention(block.mixer, attention)
    return student

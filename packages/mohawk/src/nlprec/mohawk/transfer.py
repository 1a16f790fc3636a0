"""Student initialisation from a teacher (MOHAWK Stage 3's weight transfer, done up front).

Copied as they are (families.py says where each family keeps them): token embedding, learned
positions (GPT-2), per-layer norms and MLP, final norm, LM head, and, in hybrid attention layers,
the attention itself. In SSD layers the heads map one to one:

    C ← Q,  B ← K,  x ← V,  out_proj ← O          (weights and biases; zero where the teacher has none)

when ``from_attention`` is set. With grouped-query attention (Llama: fewer K/V heads than Q
heads) each K head becomes one B group shared by the same query heads that shared it, so every
mixing matrix pairs C_h with the B of the key head that Q_h attended with; x keeps one head per
query head, each starting as a copy of its group's V (the teacher's output exactly, yet free to
diverge). The convolution then starts as the identity, the A_log projection as a constant decay,
and the gate open: z-projection zero and z_bias = silu⁻¹(1), so silu(z + z_bias) = 1 (the
paper's student starts ungated, the gate is learned later). The D skip starts at zero: attention
has no identity term, and D = 1 alone puts ‖I‖_F = √L into ‖M − A‖_F, several times ‖A‖_F.
"""

from __future__ import annotations

import torch
from nlprec.mohawk import families
from nlprec.mohawk.families import AttentionWeights
from nlprec.mohawk.mixer import OPEN_GATE_BIAS, SSDMixer
from nlprec.mohawk.student import StudentConfig, StudentLM
from transformers import PretrainedConfig, PreTrainedModel

# exp(-softplus(INITIAL_A_LOG)) ≈ 0.98: a long memory to start from (attention sees everything).
INITIAL_A_LOG = -4.0
# Fields that describe how the student runs, not which teacher it mirrors.
FREE_FIELDS = ("attention_layers", "chunk_size", "conv_kernel", "normalized_mixer")


def student_config_for(
    teacher_config: PretrainedConfig,
    attention_layers: list[int] | tuple[int, ...] = (),
    chunk_size: int = 64,
    conv_kernel: int = 4,
    normalized_mixer: bool = False,
) -> StudentConfig:
    """The student that matches a teacher head for head and block for block."""
    check_teacher(teacher_config, attention_layers)
    return StudentConfig(
        **families.layout(teacher_config),
        conv_kernel=conv_kernel,
        chunk_size=chunk_size,
        attention_layers=list(attention_layers),
        normalized_mixer=normalized_mixer,
    )


def check_teacher(teacher_config: PretrainedConfig, attention_layers=()) -> None:
    """Refuse teachers whose family or options the student cannot mirror (one error, every reason)."""
    families.family_of(teacher_config)
    problems = families.unsupported_features(teacher_config)
    if attention_layers and families.rope_type(teacher_config) != "default":
        problems.append(
            f"RoPE variant {families.rope_type(teacher_config)!r} in hybrid attention layers "
            "(only plain RoPE is implemented there)"
        )
    if problems:
        raise ValueError(
            f"teacher ({teacher_config.model_type}) not supported: " + "; ".join(problems)
        )


def check_compatible(student: StudentConfig, teacher_config: PretrainedConfig) -> None:
    """Raise one clear error listing every field where student and teacher disagree."""
    check_teacher(teacher_config, student.attention_layers)
    expected = families.layout(teacher_config)
    mismatches = [
        f"{name}: student {getattr(student, name)} vs teacher {value}"
        for name, value in expected.items()
        if name not in ("state_size", "num_kv_heads") and getattr(student, name) != value
    ]
    if student.kv_heads != expected["num_kv_heads"]:
        mismatches.append(
            f"num_kv_heads: student {student.kv_heads} vs teacher {expected['num_kv_heads']} "
            "(B groups take the teacher's K heads)"
        )
    if student.state_size != expected["head_dim"]:
        mismatches.append(
            f"state_size: student {student.state_size} vs teacher head_dim {expected['head_dim']} "
            "(B and C take the teacher's K and Q per head)"
        )
    if mismatches:
        raise ValueError("student and teacher configs disagree: " + "; ".join(mismatches))


def _zero_or(bias: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if bias is None else bias


def _repeat_heads(tensor: torch.Tensor, groups: int, repeats: int) -> torch.Tensor:
    """Rows (groups · p, ...) → (groups · repeats · p, ...): each group's rows repeated in place."""
    grouped = tensor.reshape(groups, -1, *tensor.shape[1:])
    return grouped.repeat_interleave(repeats, dim=0).reshape(-1, *tensor.shape[1:])


@torch.no_grad()
def _init_mixer_from_attention(mixer: SSDMixer, attention: AttentionWeights) -> None:
    inner, b_size, qk = mixer.inner_size, mixer.b_size, mixer.qk_size
    repeats = mixer.num_heads // mixer.num_groups
    rows = {  # slices of in_proj's output: x | B | C | z | A_log
        "x": slice(0, inner),
        "B": slice(inner, inner + b_size),
        "C": slice(inner + b_size, inner + b_size + qk),
        "z": slice(inner + b_size + qk, 2 * inner + b_size + qk),
        "A_log": slice(2 * inner + b_size + qk, None),
    }
    v_bias = _zero_or(attention.v_bias, attention.v[:, 0])
    sources = {
        "x": (
            _repeat_heads(attention.v, mixer.num_groups, repeats),
            _repeat_heads(v_bias, mixer.num_groups, repeats),
        ),
        "B": (attention.k, _zero_or(attention.k_bias, attention.k[:, 0])),
        "C": (attention.q, _zero_or(attention.q_bias, attention.q[:, 0])),
    }
    for name, (weight, bias) in sources.items():
        mixer.in_proj.weight[rows[name]] = weight
        mixer.in_proj.bias[rows[name]] = bias
    mixer.in_proj.weight[rows["z"]] = 0.0
    mixer.in_proj.bias[rows["z"]] = 0.0
    mixer.z_bias.fill_(OPEN_GATE_BIAS)
    mixer.in_proj.weight[rows["A_log"]] = 0.0
    mixer.in_proj.bias[rows["A_log"]] = INITIAL_A_LOG
    mixer.conv1d.weight.zero_()
    mixer.conv1d.weight[:, 0, -1] = 1.0  # identity: each channel passes its current input
    mixer.conv1d.bias.zero_()
    mixer.D.zero_()
    mixer.out_proj.weight.copy_(attention.o)
    mixer.out_proj.bias.copy_(_zero_or(attention.o_bias, attention.o[:, 0]))


def _attention_state(index: int, attention: AttentionWeights) -> dict[str, torch.Tensor]:
    """A hybrid attention layer's parameters under the student's names."""
    prefix = f"blocks.{index}.mixer"
    state = {}
    for name, weight, bias in (
        ("q_proj", attention.q, attention.q_bias),
        ("k_proj", attention.k, attention.k_bias),
        ("v_proj", attention.v, attention.v_bias),
        ("out_proj", attention.o, attention.o_bias),
    ):
        state[f"{prefix}.{name}.weight"] = weight
        if bias is not None:
            state[f"{prefix}.{name}.bias"] = bias
    return state


@torch.no_grad()
def init_student_from_teacher(
    teacher: PreTrainedModel, config: StudentConfig, from_attention: bool = True
) -> StudentLM:
    """A student whose every non-mixer weight is the teacher's (see module docstring)."""
    check_compatible(config, teacher.config)
    student = StudentLM(config).to(teacher.device)
    copied = families.copied_weights(teacher)
    for i, block in enumerate(student.blocks):
        attention = families.attention_weights(teacher, i)
        if block.is_attention:
            copied |= _attention_state(i, attention)
        elif from_attention:
            _init_mixer_from_attention(block.mixer, attention)
    own = student.state_dict()
    unknown = sorted(set(copied) - set(own))
    if unknown:
        raise RuntimeError(f"teacher weights with no place in the student: {unknown[:5]}")
    for name, tensor in copied.items():
        if own[name].shape != tensor.shape:
            raise RuntimeError(
                f"{name}: teacher shape {tuple(tensor.shape)} vs student {tuple(own[name].shape)}"
            )
        own[name].copy_(tensor)
    return student

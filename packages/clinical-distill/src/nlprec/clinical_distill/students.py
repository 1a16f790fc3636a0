"""Student construction: a layer subset of the teacher (DistilBERT), a small random encoder (TinyBERT),
or a factorised-embedding student with copied teacher layers (ALBERT layout, see factorised.py).

Both students share the teacher's tokenizer and vocabulary: the distillation losses compare
logits over the same vocabulary and states at the same token positions.
"""

from __future__ import annotations

import copy
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from transformers import AutoModelForMaskedLM, PreTrainedModel

from .factorised import FactorisedStudentError, evenly_spaced_layers, factorised_student
from .models import LAYER_KEY, encoder_parameters, load_masked_lm, num_layers


class StudentConfig(BaseModel):
    """How to build a student from a teacher.

    kind=layer_subset keeps the teacher's width and copies the listed teacher layers (default: every
    other layer). kind=random builds a fresh encoder of the given shape with the teacher's vocabulary.
    kind=pretrained starts from an existing masked-LM checkpoint at `path` (continual distillation).
    kind=factorised keeps the teacher's width and the listed layers (default: `num_layers` evenly
    spaced ones) and stores word embeddings at `embedding_size`, SVD-initialised from the teacher's.
    """

    model_config = {"extra": "forbid"}
    kind: Literal["layer_subset", "random", "pretrained", "factorised"] = "random"
    path: str | None = None  # pretrained: model directory or reference
    # layer_subset / factorised: teacher layer indices to keep, in order
    layers: list[int] | None = None
    num_layers: int = Field(4, ge=1)
    hidden_size: int = Field(192, ge=8)
    num_heads: int = Field(12, ge=1)
    intermediate_size: int = Field(512, ge=8)
    embedding_init: Literal["random", "teacher_svd"] = "random"
    embedding_size: int = Field(128, ge=1)  # factorised: width E of the stored word embeddings

    @model_validator(mode="after")
    def _heads_divide_width(self) -> StudentConfig:
        if self.kind == "pretrained" and not self.path:
            raise ValueError("kind=pretrained needs `path` (a masked-LM model directory)")
        if self.kind == "random" and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        return self


class StudentError(ValueError):
    """A student that cannot be built from or distilled from the given teacher."""


def default_layer_subset(teacher_layers: int) -> list[int]:
    """Every other layer, ending with the last one (DistilBERT keeps 0,2,4,... of 12; we keep the top)."""
    return list(range(teacher_layers - 1, -1, -2))[::-1]


def build_student(teacher: PreTrainedModel, cfg: StudentConfig, counts=None) -> PreTrainedModel:
    """A new masked-LM student for `teacher`; raises StudentError before any training on bad shapes.

    `counts` (V,) token frequencies of the training corpus (factorised students weight their
    embedding SVD by them; see factorised.token_counts).
    """
    if cfg.kind == "layer_subset":
        student = _layer_subset_student(teacher, cfg)
    elif cfg.kind == "random":
        student = _random_student(teacher, cfg)
    elif cfg.kind == "factorised":
        student = _factorised_student(teacher, cfg, counts)
    else:
        student = load_masked_lm(
            cfg.path, attention_outputs=teacher.config._attn_implementation == "eager"
        )
    check_student_fits(teacher, student)
    return student


def _layer_subset_student(teacher: PreTrainedModel, cfg: StudentConfig) -> PreTrainedModel:
    n_teacher = num_layers(teacher.config)
    layers = student_layers(teacher, cfg)
    bad = [i for i in layers if not 0 <= i < n_teacher]
    if bad:
        raise StudentError(
            f"layer subset {layers}: indices {bad} out of range for a {n_teacher}-layer teacher"
        )
    if not layers or len(set(layers)) != len(layers):
        raise StudentError(f"layer subset {layers} must be non-empty and without repeats")
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    student = AutoModelForMaskedLM.from_config(
        config, attn_implementation=teacher.config._attn_implementation
    )
    new_index = {old: new for new, old in enumerate(layers)}
    state = {}
    for key, value in teacher.state_dict().items():
        match = LAYER_KEY.search(key)
        if match is None:
            state[key] = value.clone()
        elif int(match.group(1)) in new_index:
            new_key = (
                key[: match.start()]
                + f".layer.{new_index[int(match.group(1))]}."
                + key[match.end() :]
            )
            state[new_key] = value.clone()
    missing, unexpected = student.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("decoder.weight")]:
        raise StudentError(
            f"layer copy did not line up: missing {missing}, unexpected {unexpected}"
        )
    student.tie_weights()
    return student


def student_layers(teacher: PreTrainedModel, cfg: StudentConfig) -> list[int] | None:
    """The teacher layers a layer-subset or factorised student copies (None for other kinds)."""
    n_teacher = num_layers(teacher.config)
    if cfg.kind == "layer_subset":
        return cfg.layers if cfg.layers is not None else default_layer_subset(n_teacher)
    if cfg.kind == "factorised":
        if cfg.layers is not None:
            return cfg.layers
        try:
            return evenly_spaced_layers(n_teacher, cfg.num_layers)
        except FactorisedStudentError as err:
            raise StudentError(str(err)) from err
    return None


def _factorised_student(teacher: PreTrainedModel, cfg: StudentConfig, counts) -> PreTrainedModel:
    try:
        return factorised_student(teacher, student_layers(teacher, cfg), cfg.embedding_size, counts)
    except FactorisedStudentError as err:
        raise StudentError(str(err)) from err


def _random_student(teacher: PreTrainedModel, cfg: StudentConfig) -> PreTrainedModel:
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = cfg.num_layers
    config.hidden_size = cfg.hidden_size
    config.num_attention_heads = cfg.num_heads
    config.intermediate_size = cfg.intermediate_size
    if hasattr(config, "embedding_size"):  # ELECTRA-style factorised embeddings
        config.embedding_size = cfg.hidden_size
    student = AutoModelForMaskedLM.from_config(
        config, attn_implementation=teacher.config._attn_implementation
    )
    if cfg.embedding_init == "teacher_svd":
        init_embeddings_from_teacher(teacher, student)
    return student


def init_embeddings_from_teacher(teacher: PreTrainedModel, student: PreTrainedModel) -> None:
    """Word embeddings from the teacher's, projected to the student width by a truncated SVD.

    E_t (V, d_t) = U S V^T; the student gets U[:, :d_s] S[:d_s] (V, d_s), the best rank-d_s
    approximation's coordinates, rescaled to the teacher's per-entry standard deviation.
    """
    import torch  # noqa: PLC0415

    teacher_emb = teacher.get_input_embeddings().weight.detach().float()  # (V, d_t)
    student_emb = student.get_input_embeddings().weight  # (V, d_s)
    d_s = student_emb.shape[1]
    u, s, _ = torch.linalg.svd(teacher_emb - teacher_emb.mean(0), full_matrices=False)
    coords = u[:, :d_s] * s[:d_s]  # (V, d_s)
    coords = coords * (teacher_emb.std() / coords.std())
    with torch.no_grad():
        student_emb.copy_(coords)
    student.tie_weights()


def check_same_tokenizer(teacher_tokenizer, student_tokenizer) -> None:
    """Distillation compares token by token: both sides must split text into the same ids."""
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise StudentError(
            f"vocabulary mismatch: the teacher's tokenizer ({len(teacher_tokenizer)} tokens) and the "
            f"student's ({len(student_tokenizer)} tokens) differ; distillation needs a shared tokenizer"
        )


def check_student_fits(teacher: PreTrainedModel, student: PreTrainedModel) -> None:
    """Same vocabulary, and no larger than the teacher: checked before training starts."""
    v_teacher, v_student = teacher.config.vocab_size, student.config.vocab_size
    if v_teacher != v_student:
        raise StudentError(
            f"vocabulary mismatch: teacher has {v_teacher} tokens, student {v_student}; "
            "distillation needs a shared tokenizer"
        )
    p_teacher, p_student = encoder_parameters(teacher), encoder_parameters(student)
    if p_student > p_teacher:
        raise StudentError(
            f"student has {p_student:,} encoder parameters, more than the teacher's {p_teacher:,}"
        )

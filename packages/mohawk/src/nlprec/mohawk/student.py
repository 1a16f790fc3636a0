"""The student: the teacher's language model with its attention replaced by SSD mixers.

The block mirrors the teacher's (families.py says which):
    parallel (Phi):             h ← h + mixer(N(h)) + MLP(N(h))
    sequential (GPT-2, Llama):  h ← h + mixer(N₁(h));  h ← h + MLP(N₂(h))
with N a LayerNorm or an RMSNorm, the MLP plain (fc1 → act → fc2) or gated (SwiGLU), and
learned absolute positions added to the embedding where the teacher has them (GPT-2).
Layers listed in ``attention_layers`` keep causal self-attention (the hybrid model).
Generation carries, per layer, a constant-size ``MixerState`` (or a ``KVCache`` for attention).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from nlprec.mohawk.attention import CausalSelfAttention, KVCache
from nlprec.mohawk.mixer import MixerState, SSDMixer
from pydantic import BaseModel, Field, model_validator
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.activations import ACT2FN

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"

LayerCache = MixerState | KVCache


class StudentConfig(BaseModel):
    model_config = {"extra": "forbid"}

    vocab_size: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    intermediate_size: int = Field(ge=1)
    num_layers: int = Field(ge=1)
    num_heads: int = Field(ge=1)
    # B heads (the teacher's K/V heads); None: num_heads
    num_kv_heads: int | None = Field(None, ge=1)
    head_dim: int = Field(ge=1)  # per-head size of x (the teacher's V)
    state_size: int = Field(ge=1)  # per-head size of B and C (the teacher's K and Q)
    conv_kernel: int = Field(4, ge=1)
    chunk_size: int = Field(64, ge=1)
    hidden_act: str = "gelu_new"
    layer_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rotary_dim: int = Field(0, ge=0)  # used by attention layers only
    attention_layers: list[int] = []
    # SSD mixers with positive B, C features and rows divided by their sums (mixer.py)
    normalized_mixer: bool = False
    # The block's layout (defaults: Phi's, which every student saved before these fields had)
    family: str = "phi"
    block: Literal["parallel", "sequential"] = "parallel"
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    mlp: Literal["plain", "gated"] = "plain"
    mlp_bias: bool = True
    attention_bias: bool = True  # q, k, v and output projections of attention layers
    lm_head_bias: bool = True
    max_positions: int = Field(0, ge=0)  # learned absolute positions (GPT-2); 0: none

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @model_validator(mode="after")
    def _check(self) -> StudentConfig:
        if self.num_heads % self.kv_heads:
            raise ValueError(
                f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.kv_heads}"
            )
        bad = [i for i in self.attention_layers if not 0 <= i < self.num_layers]
        if bad:
            raise ValueError(f"attention_layers {bad} outside 0..{self.num_layers - 1}")
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"unknown hidden_act {self.hidden_act!r}")
        if self.rotary_dim > self.head_dim or self.rotary_dim % 2:
            raise ValueError(f"rotary_dim {self.rotary_dim} must be even and ≤ head_dim")
        return self


class MLP(nn.Module):
    """fc2(act(fc1(h))), as in Phi and GPT-2."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.act = ACT2FN[cfg.hidden_act]
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(h)))


class GatedMLP(nn.Module):
    """down(act(gate(h)) · up(h)), as in Llama (SwiGLU with act = SiLU)."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        d, inner = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = nn.Linear(d, inner, bias=cfg.mlp_bias)
        self.up_proj = nn.Linear(d, inner, bias=cfg.mlp_bias)
        self.down_proj = nn.Linear(inner, d, bias=cfg.mlp_bias)
        self.act = ACT2FN[cfg.hidden_act]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(h)) * self.up_proj(h))


def make_norm(cfg: StudentConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
    return nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)


class StudentBlock(nn.Module):
    def __init__(self, cfg: StudentConfig, layer_idx: int) -> None:
        super().__init__()
        self.is_attention = layer_idx in cfg.attention_layers
        self.parallel = cfg.block == "parallel"
        self.norm = make_norm(cfg)
        self.norm2 = None if self.parallel else make_norm(cfg)
        if self.is_attention:
            self.mixer = CausalSelfAttention(
                cfg.hidden_size,
                cfg.num_heads,
                cfg.head_dim,
                cfg.rotary_dim,
                cfg.rope_theta,
                num_kv_heads=cfg.kv_heads,
                bias=cfg.attention_bias,
            )
        else:
            self.mixer = SSDMixer(
                cfg.hidden_size,
                cfg.num_heads,
                cfg.head_dim,
                cfg.state_size,
                cfg.conv_kernel,
                cfg.chunk_size,
                num_groups=cfg.kv_heads,
                normalized=cfg.normalized_mixer,
            )
        self.mlp = GatedMLP(cfg) if cfg.mlp == "gated" else MLP(cfg)

    def _combine(self, h: torch.Tensor, normed: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
        if self.parallel:
            return h + mixed + self.mlp(normed)
        h = h + mixed
        return h + self.mlp(self.norm2(h))

    def forward(
        self, h: torch.Tensor, cache: LayerCache | None = None
    ) -> tuple[torch.Tensor, LayerCache]:
        """A whole sequence (training, prefill). h: (b, l, d)."""
        normed = self.norm(h)
        mixed, cache = self.mixer(normed, cache)
        return self._combine(h, normed, mixed), cache

    def step(self, h: torch.Tensor, cache: LayerCache | None) -> tuple[torch.Tensor, LayerCache]:
        """One token (generation). h: (b, 1, d)."""
        normed = self.norm(h)
        if self.is_attention:
            mixed, cache = self.mixer(normed, cache)
        else:
            mixed, cache = self.mixer.step(normed, cache)
        return self._combine(h, normed, mixed), cache


class StudentLM(nn.Module):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.positions = (
            nn.Embedding(cfg.max_positions, cfg.hidden_size) if cfg.max_positions else None
        )
        self.blocks = nn.ModuleList(StudentBlock(cfg, i) for i in range(cfg.num_layers))
        self.final_norm = make_norm(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=cfg.lm_head_bias)

    def _embed(self, ids: torch.Tensor, offset: int) -> torch.Tensor:
        """Token embeddings, plus learned positions offset..offset+l where the model has them."""
        h = self.embed(ids)
        if self.positions is None:
            return h
        end = offset + ids.size(1)
        if end > self.config.max_positions:
            raise ValueError(
                f"position {end - 1} is past the {self.config.max_positions} learned positions "
                "this student copied from its teacher"
            )
        return h + self.positions(torch.arange(offset, end, device=ids.device))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids: (b, l) -> logits (b, l, vocab)."""
        return self.prefill(input_ids)[0]

    def prefill(
        self, input_ids: torch.Tensor, last_only: bool = False
    ) -> tuple[torch.Tensor, list[LayerCache]]:
        """Logits (every position, or the last only) and the per-layer state after the last token."""
        h = self._embed(input_ids, 0)
        caches = []
        for block in self.blocks:
            h, cache = block(h)
            caches.append(cache)
        if last_only:
            h = h[:, -1:]
        return self.lm_head(self.final_norm(h)), caches

    def decode(
        self, token_ids: torch.Tensor, caches: list[LayerCache]
    ) -> tuple[torch.Tensor, list[LayerCache]]:
        """One step: token_ids (b, 1) -> logits (b, 1, vocab), updated states."""
        seen = next((c.length for c in caches if c is not None), 0)
        h = self._embed(token_ids, seen)
        new_caches = []
        for block, cache in zip(self.blocks, caches, strict=True):
            h, cache = block.step(h, cache)
            new_caches.append(cache)
        return self.lm_head(self.final_norm(h)), new_caches

    def empty_caches(self, batch: int) -> list[LayerCache | None]:
        """States of fresh sequences (attention layers start with no cache)."""
        like = self.embed.weight
        return [
            None if block.is_attention else block.mixer.empty_state(batch, like)
            for block in self.blocks
        ]

    def set_scan_backend(self, backend: str) -> None:
        for block in self.blocks:
            if not block.is_attention:
                block.mixer.scan_backend = backend


@torch.no_grad()
def generate(
    model: StudentLM,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample continuations with the recurrent state: O(1) memory and time per new token.

    input_ids: (b, l) -> (b, l + max_new_tokens). temperature 0 means greedy.
    """
    logits, caches = model.prefill(input_ids, last_only=True)
    tokens = [input_ids]
    for _ in range(max_new_tokens):
        next_logits = logits[:, -1].float()
        if temperature <= 0:
            next_token = next_logits.argmax(-1, keepdim=True)
        else:
            next_logits = next_logits / temperature
            if top_k is not None:
                kth = torch.topk(next_logits, min(top_k, next_logits.size(-1))).values[:, -1:]
                next_logits = next_logits.masked_fill(next_logits < kth, float("-inf"))
            probs = torch.softmax(next_logits, dim=-1)
            next_token = torch.multinomial(probs, 1, generator=generator)
        tokens.append(next_token)
        logits, caches = model.decode(next_token, caches)
    return torch.cat(tokens, dim=1)


def save_student(model: StudentLM, directory: str | Path, tokenizer=None) -> Path:
    """Write config.json, model.safetensors and (if given) tokenizer.json into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, directory / WEIGHTS_FILE)
    (directory / CONFIG_FILE).write_text(model.config.model_dump_json(indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory


def load_student(directory: str | Path, device: str = "cpu") -> StudentLM:
    """Inverse of ``save_student`` (weights only through safetensors, never pickle)."""
    directory = Path(directory)
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} is not a saved student: missing {missing}")
    cfg = StudentConfig(**json.loads((directory / CONFIG_FILE).read_text()))
    model = StudentLM(cfg)
    model.load_state_dict(load_file(directory / WEIGHTS_FILE, device="cpu"))
    return model.to(device).eval()

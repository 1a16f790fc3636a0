"""The Phi-Mamba student: a Phi-style language model whose attention is replaced by SSD mixers.

Each block is parallel as in Phi:  h ← h + mixer(LN(h)) + MLP(LN(h)).
Layers listed in ``attention_layers`` keep causal self-attention (the hybrid model).
Generation carries, per layer, a constant-size ``MixerState`` (or a ``KVCache`` for attention).
"""

from __future__ import annotations

import json
from pathlib import Path

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
    head_dim: int = Field(ge=1)  # per-head size of x (the teacher's V)
    state_size: int = Field(ge=1)  # per-head size of B and C (the teacher's K and Q)
    conv_kernel: int = Field(4, ge=1)
    chunk_size: int = Field(64, ge=1)
    hidden_act: str = "gelu_new"
    layer_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rotary_dim: int = Field(0, ge=0)  # used by attention layers only
    attention_layers: list[int] = []

    @model_validator(mode="after")
    def _check(self) -> StudentConfig:
        bad = [i for i in self.attention_layers if not 0 <= i < self.num_layers]
        if bad:
            raise ValueError(f"attention_layers {bad} outside 0..{self.num_layers - 1}")
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"unknown hidden_act {self.hidden_act!r}")
        if self.rotary_dim > self.head_dim or self.rotary_dim % 2:
            raise ValueError(f"rotary_dim {self.rotary_dim} must be even and ≤ head_dim")
        return self


class MLP(nn.Module):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = ACT2FN[cfg.hidden_act]
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(h)))


class StudentBlock(nn.Module):
    def __init__(self, cfg: StudentConfig, layer_idx: int) -> None:
        super().__init__()
        self.is_attention = layer_idx in cfg.attention_layers
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        if self.is_attention:
            self.mixer = CausalSelfAttention(
                cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.rotary_dim, cfg.rope_theta
            )
        else:
            self.mixer = SSDMixer(
                cfg.hidden_size,
                cfg.num_heads,
                cfg.head_dim,
                cfg.state_size,
                cfg.conv_kernel,
                cfg.chunk_size,
            )
        self.mlp = MLP(cfg)

    def forward(
        self, h: torch.Tensor, cache: LayerCache | None = None
    ) -> tuple[torch.Tensor, LayerCache]:
        """A whole sequence (training, prefill). h: (b, l, d)."""
        normed = self.norm(h)
        mixed, cache = self.mixer(normed, cache)
        return h + mixed + self.mlp(normed), cache

    def step(self, h: torch.Tensor, cache: LayerCache | None) -> tuple[torch.Tensor, LayerCache]:
        """One token (generation). h: (b, 1, d)."""
        normed = self.norm(h)
        if self.is_attention:
            mixed, cache = self.mixer(normed, cache)
        else:
            mixed, cache = self.mixer.step(normed, cache)
        return h + mixed + self.mlp(normed), cache


class StudentLM(nn.Module):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.blocks = nn.ModuleList(StudentBlock(cfg, i) for i in range(cfg.num_layers))
        self.final_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids: (b, l) -> logits (b, l, vocab)."""
        return self.prefill(input_ids)[0]

    def prefill(
        self, input_ids: torch.Tensor, last_only: bool = False
    ) -> tuple[torch.Tensor, list[LayerCache]]:
        """Logits (every position, or the last only) and the per-layer state after the last token."""
        h = self.embed(input_ids)
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
        h = self.embed(token_ids)
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

"""The breakpoint transformer: one encoder pass per story gives a state at every breakpoint.

    input      [CLS] s_1 [BRK] s_2 [BRK] ... s_n [BRK] [SEP]
    state      b_i = normalise(W h([BRK]_i))                       [B, T, d]
    proposition p_j = normalise(W meanpool(encoder(prop_j)))       [U, d]  (once per unique string)
    logits     scorer(b_i, p_j) -> true / false / unknown           [B, T, P, 3]

With ``reader="attention"`` the state is conditioned on the proposition before scoring: p_j
attends over the breakpoints 1..i (see reader.py), giving s_ij = normalise(b_i + r_ij).

W is one projection shared by breakpoints and propositions. With ``attention="prefix"`` the
attention mask works at sentence granularity (block-causal): a token of sentence i (and [BRK]_i) sees [CLS] and
sentences 1..i only, so b_i depends on no later text and equals the state of the prefix
s_1..s_i encoded alone (see ``reference_prefix_states``). With ``attention="bidirectional"`` every token sees the whole story.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from nlprec.beliefs.reader import BreakpointReader
from nlprec.beliefs.records import IGNORE, Story, StoryError
from nlprec.beliefs.scorers import SCORERS
from pydantic import BaseModel, Field
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer

BREAKPOINT_TOKEN = "[BRK]"
PAD_GROUP = 1 << 30  # sentence group of padding tokens: nobody attends to them


class BreakpointConfig(BaseModel):
    model_config = {"extra": "forbid"}
    encoder: str = "minilm"
    encoder_layers: int | None = Field(None, ge=1, description="keep only the first N layers")
    scorer: Literal["dot", "bilinear", "mlp"] = "mlp"
    attention: Literal["prefix", "bidirectional"] = "prefix"
    proj_dim: int = Field(256, ge=8)
    max_length: int = Field(512, ge=8)
    max_prop_length: int = Field(32, ge=4)
    constraint_weight: float = Field(0.0, ge=0)
    reader: Literal["none", "attention"] = Field(
        "none", description="condition each breakpoint state on the proposition (reader.py)"
    )
    reader_heads: int = Field(4, ge=1)


def resolve_encoder(name: str) -> str:
    """A local directory for ``name``: an existing path, else nlprec.core's model resolver."""
    if Path(name).exists():
        return str(name)
    from nlprec.core.models import resolve  # imported lazily: not needed when given a path

    return str(resolve(name))


def truncate_layers(encoder: nn.Module, n_layers: int | None) -> None:
    """Keep the first ``n_layers`` transformer layers (a cheaper encoder for demos and tests)."""
    if n_layers is None:
        return
    layers = encoder.encoder.layer
    if n_layers < len(layers):
        encoder.encoder.layer = nn.ModuleList(list(layers)[:n_layers])
        encoder.config.num_hidden_layers = n_layers


@dataclass
class StoryBatch:
    input_ids: torch.Tensor  # [B, L]
    groups: torch.Tensor  # [B, L] sentence group of each token (0 = [CLS])
    breakpoint_positions: torch.Tensor  # [B, T] token index of each [BRK] (0 where padded)
    breakpoint_mask: torch.Tensor  # [B, T] bool
    prop_input_ids: torch.Tensor  # [U, Lp] unique propositions
    prop_attention: torch.Tensor  # [U, Lp]
    prop_index: torch.Tensor  # [B, P] index into the unique propositions (0 where padded)
    prop_mask: torch.Tensor  # [B, P] bool
    labels: torch.Tensor  # [B, T, P] label ids, IGNORE where padded
    constraints: torch.Tensor  # [B, C, 4] (antecedent 1, antecedent 2 or -1, consequent, label)
    constraint_mask: torch.Tensor  # [B, C] bool

    def to(self, device: str | torch.device) -> StoryBatch:
        return StoryBatch(**{k: v.to(device) for k, v in self.__dict__.items()})


def attention_mask_4d(groups: torch.Tensor, mode: str, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask [B, 1, L, L]: 0 where query q may attend to key k, a large negative elsewhere.

    prefix: k visible to q iff group[k] <= group[q]; bidirectional: every non-padding key.
    Padding queries see [CLS] so that no row is empty.
    """
    key_is_real = groups != PAD_GROUP  # [B, L]
    if mode == "prefix":
        allowed = groups.unsqueeze(1) <= groups.unsqueeze(2)  # [B, Lq, Lk]: group[k] <= group[q]
        allowed &= key_is_real.unsqueeze(1)
    else:
        allowed = key_is_real.unsqueeze(1).expand(-1, groups.shape[1], -1).clone()
    allowed[..., 0] = True
    mask = torch.zeros(allowed.shape, dtype=dtype, device=groups.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask.unsqueeze(1)


class BreakpointModel(nn.Module):
    def __init__(self, cfg: BreakpointConfig, encoder_dir: str | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        source = encoder_dir or resolve_encoder(cfg.encoder)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        if BREAKPOINT_TOKEN not in self.tokenizer.get_vocab():
            self.tokenizer.add_special_tokens({"additional_special_tokens": [BREAKPOINT_TOKEN]})
        self.encoder = AutoModel.from_pretrained(source, dtype=torch.float32)
        truncate_layers(self.encoder, cfg.encoder_layers)
        if self.encoder.get_input_embeddings().num_embeddings < len(self.tokenizer):
            self.encoder.resize_token_embeddings(len(self.tokenizer))
        self.breakpoint_id = self.tokenizer.convert_tokens_to_ids(BREAKPOINT_TOKEN)
        hidden = self.encoder.config.hidden_size
        self.projection = nn.Linear(hidden, cfg.proj_dim)  # shared by breakpoints and propositions
        self.scorer = SCORERS[cfg.scorer](cfg.proj_dim)
        self.reader = (
            BreakpointReader(hidden, cfg.proj_dim, cfg.reader_heads)
            if cfg.reader == "attention"
            else None
        )

    # ---- batching ---------------------------------------------------------------------------
    def collate(self, stories: list[Story]) -> StoryBatch:
        """Tokenise a batch; every unique proposition string is tokenised (and encoded) once."""
        tok = self.tokenizer
        flat = [s for story in stories for s in story.sentences]
        sentence_ids = tok(flat, add_special_tokens=False)["input_ids"] if flat else []
        sequences, group_rows, positions = [], [], []
        cursor = 0
        for story in stories:
            if not story.sentences:
                raise StoryError(f"story {story.story_id!r}: empty story (no sentences)")
            ids, groups, bps = [tok.cls_token_id], [0], []
            for i in range(len(story.sentences)):
                piece = sentence_ids[cursor + i]
                ids += piece + [self.breakpoint_id]
                groups += [i + 1] * (len(piece) + 1)
                bps.append(len(ids) - 1)
            cursor += len(story.sentences)
            ids.append(tok.sep_token_id)
            groups.append(len(story.sentences) + 1)
            if len(ids) > self.cfg.max_length:
                raise StoryError(
                    f"story {story.story_id!r}: {len(ids)} tokens with breakpoints exceed "
                    f"max_length={self.cfg.max_length}; split it into shorter windows"
                )
            sequences.append(ids)
            group_rows.append(groups)
            positions.append(bps)
        B = len(stories)
        L = max(len(s) for s in sequences)
        T = max(len(p) for p in positions)
        input_ids = torch.full((B, L), tok.pad_token_id, dtype=torch.long)
        groups = torch.full((B, L), PAD_GROUP, dtype=torch.long)
        bp_pos = torch.zeros((B, T), dtype=torch.long)
        bp_mask = torch.zeros((B, T), dtype=torch.bool)
        for b, (ids, grp, bps) in enumerate(zip(sequences, group_rows, positions)):
            input_ids[b, : len(ids)] = torch.tensor(ids)
            groups[b, : len(grp)] = torch.tensor(grp)
            bp_pos[b, : len(bps)] = torch.tensor(bps)
            bp_mask[b, : len(bps)] = True
        prop_batch = self._collate_propositions(stories)
        labels, constraints, c_mask = self._collate_targets(stories, T, prop_batch[2].shape[1])
        return StoryBatch(
            input_ids, groups, bp_pos, bp_mask, *prop_batch, labels, constraints, c_mask
        )

    def _collate_propositions(self, stories: list[Story]):
        unique: dict[str, int] = {}
        for story in stories:
            for prop in story.propositions:
                unique.setdefault(prop, len(unique))
        strings = list(unique) or [""]
        encoded = self.tokenizer(strings, padding=True, return_tensors="pt")
        too_long = encoded["attention_mask"].sum(1) > self.cfg.max_prop_length
        if too_long.any():
            prop = strings[int(too_long.nonzero()[0])]
            owner = next(s.story_id for s in stories if prop in s.propositions)
            raise StoryError(
                f"story {owner!r}: proposition {prop!r} is longer than "
                f"max_prop_length={self.cfg.max_prop_length} tokens"
            )
        P = max(len(s.propositions) for s in stories) or 1
        index = torch.zeros((len(stories), P), dtype=torch.long)
        mask = torch.zeros((len(stories), P), dtype=torch.bool)
        for b, story in enumerate(stories):
            index[b, : len(story.propositions)] = torch.tensor(
                [unique[p] for p in story.propositions], dtype=torch.long
            )
            mask[b, : len(story.propositions)] = True
        return encoded["input_ids"], encoded["attention_mask"], index, mask

    @staticmethod
    def _collate_targets(stories: list[Story], T: int, P: int):
        labels = torch.full((len(stories), T, P), IGNORE, dtype=torch.long)
        C = max((len(s.constraints) for s in stories), default=0) or 1
        constraints = torch.zeros((len(stories), C, 4), dtype=torch.long)
        c_mask = torch.zeros((len(stories), C), dtype=torch.bool)
        for b, story in enumerate(stories):
            if story.labels:
                rows = torch.tensor(story.labels, dtype=torch.long).reshape(len(story.labels), -1)
                labels[b, : rows.shape[0], : rows.shape[1]] = rows
            if story.constraints:
                table = [
                    [
                        c.antecedents[0],
                        c.antecedents[1] if len(c.antecedents) > 1 else -1,
                        c.consequent,
                        c.consequent_label,
                    ]
                    for c in story.constraints
                ]  # one tensor per story, not one per constraint: collate runs every step
                constraints[b, : len(table)] = torch.tensor(table, dtype=torch.long)
                c_mask[b, : len(table)] = True
        return labels, constraints, c_mask

    # ---- encoding ---------------------------------------------------------------------------
    def breakpoint_hidden(self, batch: StoryBatch) -> torch.Tensor:
        """Encoder output [B, T, H] at every breakpoint, from one encoder pass over each story."""
        dtype = next(self.encoder.parameters()).dtype
        mask = attention_mask_4d(batch.groups, self.cfg.attention, dtype)
        hidden = self.encoder(input_ids=batch.input_ids, attention_mask=mask).last_hidden_state
        return torch.gather(
            hidden, 1, batch.breakpoint_positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        )

    def breakpoint_states(self, batch: StoryBatch) -> torch.Tensor:
        """L2-normalised states [B, T, d]."""
        return F.normalize(self.projection(self.breakpoint_hidden(batch)), dim=-1)

    def proposition_embeddings(
        self, input_ids: torch.Tensor, attention: torch.Tensor
    ) -> torch.Tensor:
        """L2-normalised embeddings [U, d]: mean-pooled encoder output, shared projection."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention).last_hidden_state
        weights = attention.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return F.normalize(self.projection(pooled), dim=-1)

    def forward(self, batch: StoryBatch) -> torch.Tensor:
        """Logits [B, T, P, 3]."""
        hidden = self.breakpoint_hidden(batch)
        states = F.normalize(self.projection(hidden), dim=-1)  # [B, T, d]
        unique = self.proposition_embeddings(batch.prop_input_ids, batch.prop_attention)
        props = unique[batch.prop_index]  # [B, P, d]
        if self.reader is not None:
            states = self.reader(hidden, batch.breakpoint_mask, states, props)  # [B, T, P, d]
        return self.scorer(states, props)

    # ---- persistence ------------------------------------------------------------------------
    def save(self, directory: Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(directory / "encoder")
        self.tokenizer.save_pretrained(directory / "encoder")
        heads = {f"projection.{k}": v for k, v in self.projection.state_dict().items()}
        heads |= {f"scorer.{k}": v for k, v in self.scorer.state_dict().items()}
        if self.reader is not None:
            heads |= {f"reader.{k}": v for k, v in self.reader.state_dict().items()}
        save_file(
            {k: v.contiguous() for k, v in heads.items()}, str(directory / "heads.safetensors")
        )
        (directory / "breakpoint_config.json").write_text(self.cfg.model_dump_json(indent=2))
        return directory

    @classmethod
    def load(cls, directory: Path, device: str = "cpu") -> BreakpointModel:
        directory = Path(directory)
        cfg = BreakpointConfig(**json.loads((directory / "breakpoint_config.json").read_text()))
        cfg = cfg.model_copy(update={"encoder_layers": None})  # the saved encoder is already cut
        model = cls(cfg, encoder_dir=str(directory / "encoder"))
        heads = load_file(str(directory / "heads.safetensors"))
        model.projection.load_state_dict(
            {k[11:]: v for k, v in heads.items() if k.startswith("projection.")}
        )
        model.scorer.load_state_dict(
            {k[7:]: v for k, v in heads.items() if k.startswith("scorer.")}
        )
        if model.reader is not None:
            model.reader.load_state_dict(
                {k[7:]: v for k, v in heads.items() if k.startswith("reader.")}
            )
        return model.to(device).eval()


def reference_prefix_states(model: BreakpointModel, story: Story) -> torch.Tensor:
    """Slow reference: encode the prefix s_1..s_i on its own for every i, keep its last state.

    Returns [T, d]. With attention="prefix" the one-pass states equal these (no breakpoint depends
    on text after it); with "bidirectional" they differ.
    """
    states = []
    for i in range(len(story.sentences)):
        prefix = Story(story.story_id, story.sentences[: i + 1], story.propositions, [])
        states.append(model.breakpoint_states(model.collate([prefix]))[0, -1])
    return torch.stack(states)

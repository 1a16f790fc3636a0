"""Turn a short BERT/RoBERTa encoder into a long-document encoder.

Three targets, all stock `transformers` classes so that they save, load and fine-tune like any
other checkpoint:

* ``"longformer"`` -> `LongformerModel` (sliding-window attention of ``attention_window`` tokens,
  plus global attention on chosen tokens). Positions start after the padding index, as in RoBERTa.
* ``"bigbird"``    -> `BigBirdModel` (block-sparse: global, sliding and random blocks).
* ``"full"``       -> the source class itself (`BertModel` / `RobertaModel`) with a longer position
  table and dense attention run through PyTorch SDPA (fused kernels, no L x L matrix kept).
* ``"local"``      -> the same model as ``"full"``, but every token attends only to the tokens
  less than ``attention_window / 2`` away (plus the global tokens), through SDPA with a banded
  mask (`LongEncoder` builds it; the window is stored in the config as ``local_attention_window``).

Why ``"local"`` exists: tiled positions repeat every ``n_short`` tokens, so under full attention a
token at position p sees ``max_length / n_short`` keys that share the position embedding of p + d
for every offset d.  Heads that attend by position ("the previous token") then spread their mass
over those aliases: measured on a 2,048-token COVID-QA article with the longified MiniLM, up to
0.52 of a head's attention fell on keys 512·k ± 2 tokens away (0.007 if uniform).  A window of at
most ``n_short`` tokens, as Longformer uses, has no aliases; the band gives the same pattern at
the speed of fused dense attention.

Every weight is copied.  The learned position table (512 rows for MiniLM) is tiled to
``max_length`` rows, as Beltagy et al. (2020) did for Longformer:

    P_long[offset_t + i] = P_short[offset_s + (i mod n_short)]      for i in [0, max_length)

where ``offset`` is 0 for BERT-style models and ``pad_token_id + 1`` for RoBERTa/Longformer-style
position ids.  Longformer's global projections start as copies of the local ones
(W_q^g = W_q, W_k^g = W_k, W_v^g = W_v), so before any training a long model computes exactly the
short encoder's function on inputs that fit inside its local window.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoTokenizer,
    BertModel,
    BigBirdConfig,
    BigBirdModel,
    LongformerConfig,
    LongformerModel,
    PreTrainedModel,
    RobertaModel,
)

logger = logging.getLogger(__name__)

AttentionKind = Literal["longformer", "bigbird", "full", "local"]
ATTENTION_KINDS: tuple[str, ...] = ("longformer", "bigbird", "full", "local")
LOCAL_WINDOW_KEY = "local_attention_window"  # config attribute of the "local" variant
DEFAULT_SOURCE = "minilm"
POSITION_KEY = "embeddings.position_embeddings.weight"
SOURCE_CLASSES = (BertModel, RobertaModel)
GLOBAL_SUFFIXES = ("query_global", "key_global", "value_global")


def position_offset(model_or_config) -> int:
    """Index of the first real position row: 0 for BERT/BigBird, pad_token_id + 1 for RoBERTa/Longformer."""
    config = getattr(model_or_config, "config", model_or_config)
    if config.model_type in ("roberta", "longformer", "xlm-roberta", "camembert"):
        return int(config.pad_token_id) + 1
    return 0


def tile_position_embeddings(
    source: torch.Tensor, source_offset: int, target_offset: int, max_length: int
) -> torch.Tensor:
    """Tile a learned position table to ``max_length`` positions.

    source: (source_offset + n_short, d) -> returns (target_offset + max_length, d).
    Rows before ``target_offset`` (padding rows) are copied from the source where both models have
    them at the same place, otherwise zero (they only ever embed padding tokens).
    """
    usable = source[source_offset:]  # (n_short, d)
    n_short, dim = usable.shape
    repeats = math.ceil(max_length / n_short)
    tiled = usable.repeat(repeats, 1)[:max_length]  # (max_length, d)
    head = torch.zeros(target_offset, dim, dtype=source.dtype)
    shared = min(source_offset, target_offset)
    head[:shared] = source[:shared]
    return torch.cat([head, tiled], dim=0)


def load_source_encoder(model: str | PreTrainedModel | None) -> tuple[PreTrainedModel, str | None]:
    """The bare encoder to convert, and the directory it came from (for its tokenizer)."""
    if model is None:
        model = DEFAULT_SOURCE
    if isinstance(model, PreTrainedModel):
        return model.base_model, None
    from nlprec.core.models import resolve  # local import: model code must not need core at import

    directory = str(resolve(model))
    return AutoModel.from_pretrained(directory).base_model, directory


def _check_source(source: PreTrainedModel) -> None:
    if not isinstance(source, SOURCE_CLASSES):
        raise TypeError(
            f"longify converts a BERT or RoBERTa encoder; got {type(source).__name__} "
            f"(model_type={source.config.model_type!r})"
        )


def _target_model(
    source: PreTrainedModel,
    attention: str,
    max_length: int,
    attention_window: int,
    block_size: int,
    num_random_blocks: int,
    attn_implementation: str = "sdpa",
) -> PreTrainedModel:
    """A freshly initialised target model whose shapes match the source except for positions."""
    src = source.config
    shared = dict(
        vocab_size=src.vocab_size,
        hidden_size=src.hidden_size,
        num_hidden_layers=src.num_hidden_layers,
        num_attention_heads=src.num_attention_heads,
        intermediate_size=src.intermediate_size,
        hidden_act=src.hidden_act,
        hidden_dropout_prob=src.hidden_dropout_prob,
        attention_probs_dropout_prob=src.attention_probs_dropout_prob,
        type_vocab_size=src.type_vocab_size,
        initializer_range=src.initializer_range,
        layer_norm_eps=src.layer_norm_eps,
        pad_token_id=src.pad_token_id,
    )
    if attention == "longformer":
        if attention_window % 2 or max_length % attention_window:
            raise ValueError(
                f"attention_window must be even and divide max_length; got window={attention_window}, "
                f"max_length={max_length}"
            )
        offset = int(src.pad_token_id) + 1
        config = LongformerConfig(
            **shared,
            max_position_embeddings=max_length + offset,
            attention_window=attention_window,
            bos_token_id=getattr(src, "bos_token_id", None),
            eos_token_id=getattr(src, "eos_token_id", None),
            sep_token_id=getattr(src, "sep_token_id", None),
        )
        return LongformerModel(config)
    if attention == "bigbird":
        if max_length % block_size:
            raise ValueError(f"block_size={block_size} must divide max_length={max_length}")
        config = BigBirdConfig(
            **shared,
            max_position_embeddings=max_length,
            attention_type="block_sparse",
            block_size=block_size,
            num_random_blocks=num_random_blocks,
            rescale_embeddings=False,
            use_bias=True,
        )
        return BigBirdModel(config)
    if attention in ("full", "local"):
        config = src.__class__.from_dict(src.to_dict())
        config.max_position_embeddings = max_length + position_offset(source)
        config._attn_implementation = attn_implementation
        if attention == "local":
            _check_local_window(
                attention_window, src.max_position_embeddings - position_offset(src)
            )
            setattr(config, LOCAL_WINDOW_KEY, attention_window)
        else:
            config.__dict__.pop(LOCAL_WINDOW_KEY, None)
        return source.__class__(config)
    raise ValueError(f"attention must be one of {ATTENTION_KINDS}; got {attention!r}")


def _check_local_window(window: int, n_short: int) -> None:
    """The band |i - j| < window / 2 holds window - 1 offsets: no two may share a tiled position."""
    if window % 2 or window < 2 or window > n_short:
        raise ValueError(
            f"attention_window must be even and at most the source's {n_short} positions (a wider "
            f"band would see tiled positions twice); got {window}"
        )


def _source_key_for(target_key: str) -> str:
    """Name of the source weight a target weight is copied from."""
    for suffix in GLOBAL_SUFFIXES:
        if f".{suffix}." in target_key:  # Longformer global projections start as the local ones
            return target_key.replace(f".{suffix}.", f".{suffix.removesuffix('_global')}.")
    if target_key.startswith("pooler.") and not target_key.startswith("pooler.dense."):
        return target_key.replace(
            "pooler.", "pooler.dense.", 1
        )  # BigBird's pooler is a bare Linear
    return target_key


def longify(
    model: str | PreTrainedModel | None = None,
    max_length: int = 4096,
    attention: AttentionKind = "full",
    attention_window: int = 512,
    block_size: int = 64,
    num_random_blocks: int = 3,
    attn_implementation: str = "sdpa",
) -> PreTrainedModel:
    """Convert a BERT/RoBERTa encoder (default: the bundled MiniLM) into a long encoder.

    Returns a stock `LongformerModel`, `BigBirdModel`, or the source class with ``max_length``
    positions and SDPA attention; all weights copied, positions tiled (see module docstring).
    ``attn_implementation`` ("sdpa" or "eager") applies to ``attention="full"`` and ``"local"``;
    ``attention_window`` to ``"longformer"`` and ``"local"`` (tokens in the band, both sides).
    """
    source, _ = load_source_encoder(model)
    _check_source(source)
    source_max = source.config.max_position_embeddings - position_offset(source)
    if max_length < source_max:
        raise ValueError(
            f"max_length={max_length} is shorter than the source's {source_max} positions"
        )
    target = _target_model(
        source,
        attention,
        max_length,
        attention_window,
        block_size,
        num_random_blocks,
        attn_implementation,
    )

    source_state = {k: v for k, v in source.state_dict().items() if not k.endswith("_ids")}
    new_state: dict[str, torch.Tensor] = {}
    for key, param in target.state_dict().items():
        if key.endswith("position_ids") or key.endswith("token_type_ids"):
            continue  # non-persistent index buffers, rebuilt by the target
        if key == POSITION_KEY:
            new_state[key] = tile_position_embeddings(
                source_state[key], position_offset(source), position_offset(target), max_length
            )
            continue
        source_key = _source_key_for(key)
        if source_key not in source_state:
            raise KeyError(f"no source weight for {key!r} (looked for {source_key!r})")
        value = source_state[source_key]
        if value.shape != param.shape:
            raise ValueError(
                f"shape mismatch for {key}: source {tuple(value.shape)} vs target {tuple(param.shape)}"
            )
        new_state[key] = value.clone()
    missing, unexpected = target.load_state_dict(new_state, strict=False)
    missing = [k for k in missing if not k.endswith("_ids")]
    if missing or unexpected:
        raise RuntimeError(f"longify left weights unset: missing={missing} unexpected={unexpected}")
    target.eval()
    if attention == "full" and max_length > source_max:
        logger.warning(
            "attention='full' over positions tiled every %d tokens: heads that attend by position "
            "also see the %d copies of each offset (see the module docstring); for span tasks "
            "(QA, NER on long inputs) prefer attention='local'",
            source_max,
            math.ceil(max_length / source_max),
        )
    logger.info(
        "longified %s -> %s (%d positions, attention=%s)",
        type(source).__name__,
        type(target).__name__,
        max_length,
        attention,
    )
    return target


def longify_to_dir(
    output_dir: str | Path,
    model: str | PreTrainedModel | None = None,
    tokenizer_dir: str | Path | None = None,
    **kwargs,
) -> Path:
    """Longify and save model + tokenizer (``model_max_length`` set to ``max_length``) as safetensors."""
    output_dir = Path(output_dir)
    source, source_dir = load_source_encoder(model)
    long_model = longify(source, **kwargs)
    long_model.save_pretrained(output_dir, safe_serialization=True)
    tokenizer_source = tokenizer_dir or source_dir
    if tokenizer_source is None:
        raise ValueError("pass tokenizer_dir when longifying an in-memory model")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_source))
    tokenizer.model_max_length = kwargs.get("max_length", 4096)
    tokenizer.save_pretrained(output_dir)
    return output_dir


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

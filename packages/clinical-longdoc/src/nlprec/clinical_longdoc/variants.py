"""Named model variants: the long encoders and the short-model baselines.

Each name fixes an encoder (long: longified; short: the source as it is, 512 positions) and a
segment strategy.  ``long`` is the default long variant (full attention through SDPA, chosen
from the measured accuracy/memory/time table in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from nlprec.clinical_longdoc.encoder import LongEncoder, attention_kind
from nlprec.clinical_longdoc.longify import load_source_encoder, longify
from transformers import PreTrainedModel

DEFAULT_LONG_ATTENTION = "full"


@dataclass(frozen=True)
class Variant:
    name: str
    strategy: str  # see segments.STRATEGIES
    attention: str | None  # None: the short source encoder as it is


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("long", "long", DEFAULT_LONG_ATTENTION),
        Variant("long_full", "long", "full"),
        Variant("long_local", "long", "local"),
        Variant("long_longformer", "long", "longformer"),
        Variant("long_bigbird", "long", "bigbird"),
        Variant("head", "head", None),
        Variant("head_tail", "head_tail", None),
        Variant("chunk_mean", "chunk_mean", None),
        Variant("chunk_max", "chunk_max", None),
    )
}
SHORT_BASELINES = ("head", "head_tail", "chunk_mean", "chunk_max")


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"unknown model variant {name!r}; choose from {sorted(VARIANTS)}")
    return VARIANTS[name]


def build_encoder(
    variant: Variant,
    source: str | PreTrainedModel | None = None,
    max_length: int = 4096,
    attention_window: int = 512,
    block_size: int = 64,
    num_random_blocks: int = 3,
) -> LongEncoder:
    """A fresh encoder for ``variant`` (weights copied from ``source``, default the bundled MiniLM).

    A source that is already a Longformer / BigBird (a published Clinical-Longformer checkpoint, or a
    saved `longify_to_dir` output) is used as it is for the long variants.
    """
    encoder, _ = load_source_encoder(source)
    if attention_kind(encoder) != "full":
        # already long (e.g. yikuan8/Clinical-Longformer or a saved longify output): use it as it is
        if variant.attention is None:
            raise ValueError(
                f"the short baseline {variant.name!r} needs a short BERT/RoBERTa source, got a {attention_kind(encoder)} model"
            )
        return LongEncoder(
            copy.deepcopy(encoder) if isinstance(source, PreTrainedModel) else encoder
        )
    if variant.attention is None:
        return LongEncoder(
            copy.deepcopy(encoder) if isinstance(source, PreTrainedModel) else encoder
        )
    return LongEncoder(
        longify(
            encoder,
            max_length=max_length,
            attention=variant.attention,
            attention_window=attention_window,
            block_size=block_size,
            num_random_blocks=num_random_blocks,
        )
    )

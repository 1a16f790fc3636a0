"""One forward signature over the three long encoders (and any short BERT/RoBERTa encoder).

`LongEncoder` hides the differences a task head should not care about:

* Longformer takes a ``global_attention_mask`` (1 = this token attends to and is attended by all);
  the other encoders ignore it (BigBird's global blocks are fixed: first and last block).
* BigBird runs outside autocast (its block-sparse code breaks under bf16 autocast).
* A `BigBirdModel` that sees a sequence too short for block-sparse attention switches its config to
  full attention *for good*; the wrapper restores the configured attention type after every call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from nlprec.clinical_longdoc.longify import position_offset
from torch import nn
from transformers import AutoModel, BigBirdModel, LongformerModel, PreTrainedModel


def attention_kind(model: PreTrainedModel) -> str:
    """ "longformer", "bigbird" or "full" (any other encoder attends densely)."""
    if isinstance(model, LongformerModel):
        return "longformer"
    if isinstance(model, BigBirdModel):
        return "bigbird"
    return "full"


@contextlib.contextmanager
def pinned_bigbird_attention(model: nn.Module) -> Iterator[None]:
    """Undo BigBird's permanent switch to full attention after a short input."""
    configured = getattr(model, "attention_type", None)
    try:
        yield
    finally:
        if configured is not None and model.attention_type != configured:
            model.set_attention_type(configured)


class LongEncoder(nn.Module):
    """Wraps a `transformers` encoder; ``forward`` returns hidden states (B, L, H)."""

    def __init__(self, model: PreTrainedModel):
        super().__init__()
        self.model = model
        self.kind = attention_kind(model)

    @classmethod
    def from_pretrained(cls, name_or_path: str) -> LongEncoder:
        """Load a saved long model, a bundled short model, or a published checkpoint by name.

        Names go through `nlprec.core.models.resolve`, so ``yikuan8/Clinical-Longformer`` and
        ``yikuan8/Clinical-BigBird`` work wherever the hub is reachable (offline: a clear error).
        """
        from nlprec.core.models import resolve

        return cls(AutoModel.from_pretrained(str(resolve(name_or_path))).base_model)

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def max_length(self) -> int:
        """Longest input in tokens (special tokens included)."""
        return self.model.config.max_position_embeddings - position_offset(self.model)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, L)
        attention_mask: torch.Tensor,  # (B, L) 1 = token, 0 = padding
        global_attention_mask: torch.Tensor | None = None,  # (B, L) 1 = global (Longformer only)
        token_type_ids: torch.Tensor | None = None,  # (B, L)
    ) -> torch.Tensor:  # (B, L, H)
        if input_ids.shape[1] > self.max_length:
            raise ValueError(
                f"input of {input_ids.shape[1]} tokens exceeds the encoder's {self.max_length}; "
                "truncate or chunk it first"
            )
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if self.kind == "longformer":
            if global_attention_mask is None:
                global_attention_mask = torch.zeros_like(input_ids)
                global_attention_mask[:, 0] = 1  # CLS is global by default
            kwargs["global_attention_mask"] = global_attention_mask
            return self.model(**kwargs).last_hidden_state
        if self.kind == "bigbird":
            # transformers' block-sparse code scatters fp32 softmax output into a tensor of the
            # autocast dtype and fails under bf16 autocast: BigBird runs in fp32 (TF32 on GPU).
            with (
                pinned_bigbird_attention(self.model),
                torch.autocast(input_ids.device.type, enabled=False),
            ):
                return self.model(**kwargs).last_hidden_state
        return self.model(**kwargs).last_hidden_state

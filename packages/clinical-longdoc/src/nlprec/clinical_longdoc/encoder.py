"""One forward signature over the three long encoders (and any short BERT/RoBERTa encoder).

`LongEncoder` hides the differences a task head should not care about:

* Longformer takes a ``global_attention_mask`` (1 = this token attends to and is attended by all);
  the ``local`` variant (a BERT/RoBERTa with ``local_attention_window`` in its config) turns it and
  the band into one boolean 4-D mask for SDPA; full attention ignores it (BigBird's global blocks
  are fixed: first and last block).
* BigBird runs outside autocast (its block-sparse code breaks under bf16 autocast).
* A `BigBirdModel` that sees a sequence too short for block-sparse attention switches its config to
  full attention *for good*; the wrapper restores the configured attention type after every call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from nlprec.clinical_longdoc.longify import LOCAL_WINDOW_KEY, position_offset
from torch import nn
from transformers import AutoModel, BigBirdModel, LongformerModel, PreTrainedModel


def attention_kind(model: PreTrainedModel) -> str:
    """ "longformer", "bigbird", "local" (banded SDPA) or "full" (any other encoder attends densely)."""
    if isinstance(model, LongformerModel):
        return "longformer"
    if isinstance(model, BigBirdModel):
        return "bigbird"
    if getattr(model.config, LOCAL_WINDOW_KEY, None):
        return "local"
    return "full"


def local_attention_mask(
    attention_mask: torch.Tensor,  # (B, L) 1 = token
    global_attention_mask: torch.Tensor,  # (B, L) 1 = global
    window: int,
    implementation: str = "sdpa",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:  # (B, 1, L, L)
    """Query i may attend to key j when j is a token and |i - j| < window / 2, or i or j is global.

    Every row keeps its diagonal, so a padding query is never fully masked (no NaN in SDPA).
    SDPA takes the boolean mask (True = attend); eager attention adds a float mask (0 or min).
    """
    length = attention_mask.shape[1]
    index = torch.arange(length, device=attention_mask.device)
    band = (index[:, None] - index[None, :]).abs() < window // 2  # (L, L)
    is_global = global_attention_mask.bool()
    allowed = band[None] | is_global[:, :, None] | is_global[:, None, :]  # (B, L, L)
    allowed = (allowed & attention_mask.bool()[:, None, :]) | torch.eye(
        length, dtype=torch.bool, device=attention_mask.device
    )
    allowed = allowed[:, None]  # (B, 1, L, L)
    if implementation == "sdpa":
        return allowed
    blocked = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return blocked.masked_fill(~allowed, torch.finfo(dtype).min)


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
        if self.kind in ("longformer", "local") and global_attention_mask is None:
            global_attention_mask = torch.zeros_like(input_ids)
            global_attention_mask[:, 0] = 1  # CLS is global by default
        if self.kind == "longformer":
            kwargs["global_attention_mask"] = global_attention_mask
            return self.model(**kwargs).last_hidden_state
        if self.kind == "local":
            kwargs["attention_mask"] = local_attention_mask(
                attention_mask,
                global_attention_mask,
                getattr(self.model.config, LOCAL_WINDOW_KEY),
                self.model.config._attn_implementation,
                self.model.dtype,
            )
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

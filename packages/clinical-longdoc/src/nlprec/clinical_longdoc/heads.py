"""Fine-tuning heads with the paper's global-attention placement.

* document classification: [CLS] is global; logits = W h + b with h = h_[CLS] (the paper) or the
  mean of the token states (``pooling="mean"``: what sentence encoders such as all-MiniLM-L6-v2
  were trained to produce, so a linear probe on it is strong before any fine-tuning)
* token classification (NER): [CLS] global; one label per token, scored on first sub-words
* extractive QA: every question token (and [CLS]) is global; start/end logits per token

The heads take any `LongEncoder`, so the same code fine-tunes the long models and the short
baselines (a short encoder is a `LongEncoder` of 512 positions).
"""

from __future__ import annotations

import torch
from nlprec.clinical_longdoc.encoder import LongEncoder
from torch import nn

IGNORE_INDEX = -100


def cls_global_mask(input_ids: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, L)
    """Global attention on the first token only."""
    mask = torch.zeros_like(input_ids)
    mask[:, 0] = 1
    return mask


def question_global_mask(
    token_type_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Global attention on [CLS] question [SEP] (segment 0), as Beltagy et al. do for QA.  (B, L)"""
    return ((token_type_ids == 0) & (attention_mask == 1)).long()


class _LinearHead(nn.Module):
    """Encoder ([CLS] global) + dropout + one linear layer; subclasses choose the pooled positions."""

    def __init__(self, encoder: LongEncoder, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.hidden_size, num_labels)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """What the linear layer reads: pooled hidden states, before dropout."""
        hidden = self.encoder(input_ids, attention_mask, cls_global_mask(input_ids))  # (B, L, H)
        return self.pool(hidden, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(input_ids, attention_mask)))


POOLINGS = ("cls", "mean")


class DocumentClassifier(_LinearHead):
    """[CLS] or mean pooling: logits (B, C)."""

    def __init__(
        self, encoder: LongEncoder, num_labels: int, dropout: float = 0.1, pooling: str = "cls"
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}")
        super().__init__(encoder, num_labels, dropout)
        self.pooling = pooling

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":  # (B, L, H) -> (B, H)
            return hidden[:, 0]
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1), 0 on padding
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class TokenTagger(_LinearHead):
    """A label distribution for every token, (B, L, C); labels live on first sub-words (others IGNORE_INDEX)."""

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return hidden  # (B, L, H)


class SpanExtractor(nn.Module):
    """Start and end logits for extractive QA over [CLS] question [SEP] context [SEP]."""

    def __init__(self, encoder: LongEncoder):
        super().__init__()
        self.encoder = encoder
        self.qa_outputs = nn.Linear(encoder.hidden_size, 2)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:  # (B, L), (B, L)
        global_mask = question_global_mask(token_type_ids, attention_mask)
        hidden = self.encoder(input_ids, attention_mask, global_mask, token_type_ids)  # (B, L, H)
        start, end = self.qa_outputs(hidden).unbind(dim=-1)
        very_negative = torch.finfo(start.dtype).min
        padding = attention_mask == 0
        return start.masked_fill(padding, very_negative), end.masked_fill(padding, very_negative)

"""Batch inference predictors (nlprec.core.batch contract): load once, map column batches.

TokenTagger tags words with a saved token-classification model (e.g. the NER student);
TextClassifier labels texts (optionally text pairs) with a saved sequence classifier.
"""

from __future__ import annotations

import torch
from nlprec.core.threads import quiet_libraries
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

from .finetune import predict_text_labels, predict_word_tags
from .models import check_checkpoint, load_tokenizer, resolve_model_path


def _device(device: str | None) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


class TokenTagger:
    """Columns in: `tokens` (list of words) or `text` (split on whitespace). Column out: `tags`."""

    def __init__(self, model: str, max_len: int = 128, device: str | None = None):
        quiet_libraries()
        path = str(check_checkpoint(resolve_model_path(model)))
        self.model = AutoModelForTokenClassification.from_pretrained(path).eval()
        self.tokenizer = load_tokenizer(path)
        self.max_len, self.device = max_len, _device(device)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if "tokens" in batch:
            words = [list(tokens) for tokens in batch["tokens"]]
        elif "text" in batch:
            words = [str(text).split() for text in batch["text"]]
        else:
            raise KeyError(f"TokenTagger needs a `tokens` or `text` column; got {sorted(batch)}")
        examples = [{"tokens": w} for w in words]
        return {
            **batch,
            "tags": predict_word_tags(
                self.model, self.tokenizer, examples, self.max_len, self.device
            ),
        }


class TextClassifier:
    """Columns in: `text` and optionally `text_pair`. Column out: `label`."""

    def __init__(self, model: str, max_len: int = 256, device: str | None = None):
        quiet_libraries()
        path = str(check_checkpoint(resolve_model_path(model)))
        self.model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        self.tokenizer = load_tokenizer(path)
        self.max_len, self.device = max_len, _device(device)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if "text" not in batch:
            raise KeyError(f"TextClassifier needs a `text` column; got {sorted(batch)}")
        pairs = batch.get("text_pair")
        examples = [
            {"text": str(t), **({"text_pair": str(pairs[i])} if pairs else {})}
            for i, t in enumerate(batch["text"])
        ]
        return {
            **batch,
            "label": predict_text_labels(
                self.model, self.tokenizer, examples, self.max_len, self.device
            ),
        }

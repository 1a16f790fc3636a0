"""Service configuration: a YAML/TOML file and `NLPREC_SERVE_*` environment variables.

Precedence, lowest first: defaults < config file < environment < command-line flags.
Nested fields are reached from the environment with a double underscore, e.g.
`NLPREC_SERVE_LIMITS__MAX_K=100` or `NLPREC_SERVE_BATCHING__MAX_WAIT_MS=2`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ENV_PREFIX = "NLPREC_SERVE_"
CONFIG_FILE_ENV = "NLPREC_SERVE_CONFIG"

# Upper bounds the schema advertises whatever the configuration says (the issue fixes k at 1-1000).
HARD_MAX_K = 1000


class ConfigError(ValueError):
    """A configuration that cannot be served; the message names the key and the source."""


class Limits(BaseModel):
    """Request limits; each one violated is a 4xx problem response that names the limit."""

    model_config = ConfigDict(extra="forbid")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="largest request body accepted")
    max_query_chars: int = Field(1000, ge=1, description="longest query string")
    max_k: int = Field(
        HARD_MAX_K, ge=1, le=HARD_MAX_K, description="largest k for search/recommend"
    )
    max_batch: int = Field(
        64, ge=1, description="most queries, documents, events or pairs per call"
    )
    max_document_chars: int = Field(100_000, ge=1, description="longest document text")
    max_history: int = Field(1000, ge=1, description="longest pasted history (baskets or items)")


class BatchingConfig(BaseModel):
    """Micro-batching of query encodings (see `nlprec.service.batching`)."""

    model_config = ConfigDict(extra="forbid")
    max_batch_size: int = Field(32, ge=1, description="1 turns micro-batching off")
    max_wait_ms: float = Field(2.0, ge=0, description="longest a query waits for company")


class AdmissionConfig(BaseModel):
    """Admission control per model lane (see `nlprec.service.lanes`): past these bounds a request
    gets 503 overloaded with Retry-After at once instead of waiting behind an unbounded queue."""

    model_config = ConfigDict(extra="forbid")
    search_queue: int = Field(
        256, ge=1, description="queries admitted (running or waiting) to the BM25/bi-encoder lane"
    )
    rerank_queue: int = Field(
        4, ge=1, description="reranked searches or rerank calls admitted to the cross-encoder lane"
    )
    recommend_queue: int = Field(
        256, ge=1, description="recommendations admitted (running or waiting) to the recommender"
    )


class ServiceConfig(BaseModel):
    """Everything `nlprec-serve` needs. Model sources are MLflow URIs or local folders."""

    model_config = ConfigDict(extra="forbid")
    ranking_model: str | None = Field(
        "models:/ranking-demo@champion",
        description="SearchEngine folder or models:/ URI; null: none",
    )
    sessionrec_model: str | None = Field(
        "models:/sessionrec-demo@champion",
        description="OnlineRecommender folder or models:/ URI; null: none",
    )
    state_dir: Path | None = Field(
        None,
        description="writable folder for index updates and the event log (survives restarts); "
        "null: $NLPREC_HOME/.nlprec/service-state",
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    token: str | None = Field(None, description="bearer token for writes; unset: writes refused")
    read_token: str | None = Field(None, description="when set, reads need it (or `token`)")
    read_only: bool = Field(False, description="refuse every write endpoint")
    torch_threads: int = Field(
        1, ge=1, description="torch intra-op threads per worker (each model lane is one thread)"
    )
    query_encoder: Literal["torch", "onnx"] = Field(
        "torch",
        description="backend that encodes queries and added documents: onnx (ONNX Runtime, fp32, "
        "exported once and cached) halves single-query CPU latency; the index is unchanged",
    )
    wide_batch_threads: int | None = Field(
        2,
        ge=1,
        description="torch threads for search batches of >= wide_batch_items queries "
        "(a large batch keeps both cores busy); null: always torch_threads",
    )
    wide_batch_items: int = Field(8, ge=2, description="see wide_batch_threads")
    watch_registry_s: float | None = Field(
        30.0,
        gt=0,
        description="poll the registry this often and swap in a model whose alias moved "
        "(models:/ sources only); null: only POST /v1/admin/reload swaps",
    )
    compact_every_documents: int = Field(
        1000,
        ge=1,
        description="save the index in the background after this many logged document writes",
    )
    snapshot_every_events: int = Field(
        10_000, ge=1, description="snapshot the recommender after this many logged events"
    )
    graceful_shutdown_s: float = Field(30.0, gt=0, description="wait for in-flight requests")
    log_level: str = "info"
    limits: Limits = Field(default_factory=Limits)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)

    @model_validator(mode="after")
    def _workers_need_read_only(self) -> ServiceConfig:
        # Each worker process holds its own copy of the models; writes in one would be invisible
        # to the others and they would race on the state folder.
        if self.workers > 1 and not self.read_only:
            raise ValueError("workers > 1 needs read_only: true (each worker holds its own models)")
        if self.ranking_model is None and self.sessionrec_model is None:
            raise ValueError("configure at least one of ranking_model, sessionrec_model")
        if self.admission.search_queue < self.limits.max_batch:
            # A batch search larger than the lane's bound could never be admitted.
            raise ValueError(
                f"admission.search_queue ({self.admission.search_queue}) must be at least "
                f"limits.max_batch ({self.limits.max_batch})"
            )
        return self


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    is_toml = path.suffix == ".toml"
    try:
        data = tomllib.loads(text) if is_toml else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: not valid {'TOML' if is_toml else 'YAML'}: {error}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """`NLPREC_SERVE_A__B=v` -> {"a": {"b": v}}; pydantic coerces the strings ("null" -> None)."""
    overrides: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_FILE_ENV:
            continue
        keys = name[len(ENV_PREFIX) :].lower().split("__")
        node = overrides
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = None if value.lower() in ("null", "none", "") else value
    return overrides


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ServiceConfig:
    """Build the configuration from a file (or $NLPREC_SERVE_CONFIG), the environment and flags."""
    environ = os.environ if environ is None else environ
    path = path or environ.get(CONFIG_FILE_ENV)
    data = _read_file(Path(path)) if path else {}
    data = _merge(data, _env_overrides(environ))
    data = _merge(data, {k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return ServiceConfig.model_validate(data)
    except ValidationError as error:
        where = f"config {path} + environment" if path else "environment"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in error.errors()
        )
        raise ConfigError(f"{where}: {problems}") from error

"""Loading the served models, holding them for the routes, and swapping them when the registry moves.

Models load in the background once the app starts (the lifespan handler starts the task), so
`/health` answers at once and `/ready` says 503 until every configured model is loaded. Sources
are MLflow URIs (`models:/ranking-demo@champion`) or local folders, both resolved through
`nlprec.core.models.resolve`, which honours MLFLOW_TRACKING_URI.

Following the registry: `reload()` resolves every source again (the lifespan polls it every
`watch_registry_s` seconds, and `POST /v1/admin/reload` calls it at once); a source that now
resolves to another folder (an alias moved) is loaded beside the running model, then swapped in.
Requests that already hold the old backend finish on it; it is stopped once none is in flight, so
a swap drops no request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nlprec.core.paths import nlprec_home
from nlprec.core.threads import set_threads
from nlprec.service.concurrency import ModelRunner
from nlprec.service.config import ServiceConfig
from nlprec.service.metrics import ServiceMetrics
from nlprec.service.problems import ProblemError
from nlprec.service.recommend_backend import RecommendBackend, Recommender, load_with_log
from nlprec.service.schemas import ModelStatus
from nlprec.service.search_backend import Engine, SearchBackend, replay_documents
from nlprec.service.state import model_state_folder

logger = logging.getLogger("nlprec.service")
WARM_UP_QUERY = "warm-up"
DEMO_HINT = " (run `make demo` to train and register the demo models, or configure {0}_model)"


@dataclass(frozen=True)
class ModelLoaders:
    """How sources become models; tests pass small fakes with the same interfaces."""

    resolve: Callable[[str], str | Path]
    load_engine: Callable[[Path], Engine]
    load_recommender: Callable[[Path], Recommender]
    make_event: Callable[..., Any]


def default_loaders() -> ModelLoaders:
    """The real packages, imported only when a service starts."""
    from nlprec.core.models import resolve
    from nlprec.ranking.engine import SearchEngine
    from nlprec.sessionrec.online import Event, OnlineRecommender

    return ModelLoaders(
        resolve=resolve,
        load_engine=SearchEngine.load,
        load_recommender=OnlineRecommender.load,
        make_event=Event,
    )


def display_name(source: str) -> str:
    """What /ready calls a model: `name@alias` for a registry URI, the folder's name otherwise
    (never a server path)."""
    if source.startswith("models:/"):
        return source.removeprefix("models:/")
    return Path(source).name


def registry_version(resolved: Path) -> str | None:
    """The registry version a resolved folder came from (`<model cache>/<name>/<version>/...`)."""
    try:
        from nlprec.core.paths import model_cache_root

        parts = Path(resolved).resolve().relative_to(model_cache_root().resolve()).parts
    except (ImportError, ValueError):
        return None
    return parts[1] if len(parts) > 1 else None


def default_state_dir() -> Path:
    return nlprec_home() / ".nlprec" / "service-state"


class ServedModels:
    """The loaded backends, their status, and the thread pool they run in."""

    def __init__(
        self, config: ServiceConfig, metrics: ServiceMetrics, loaders: ModelLoaders | None = None
    ):
        self.config, self.metrics = config, metrics
        self._loaders = loaders
        self.state_dir = config.state_dir if config.state_dir is not None else default_state_dir()
        # Loading and writes; reads run in each model's lane (`nlprec.service.lanes`).
        self.executor = ThreadPoolExecutor(2, thread_name_prefix="nlprec-model")
        self.search: SearchBackend | None = None
        self.recommend: RecommendBackend | None = None
        self.status: dict[str, ModelStatus] = {}
        self.sources: dict[str, str] = {}
        self.errors: dict[str, str] = {}  # the load error of a failed model (logged; not in /ready)
        self.resolved: dict[str, Path] = {}  # the local folder each loaded model came from
        self.swaps: list[dict[str, Any]] = []  # one entry per swap: model, from, to, seconds
        self._reloading = asyncio.Lock()
        self._retiring: set[asyncio.Task] = set()
        for name, source in (
            ("ranking", config.ranking_model),
            ("sessionrec", config.sessionrec_model),
        ):
            if source is not None:
                self.sources[name] = source
                self.status[name] = ModelStatus(
                    name=display_name(source), state="loading", ready=False
                )

    @property
    def ready(self) -> bool:
        return all(status.ready for status in self.status.values())

    # ------------------------------------------------------------ loading (worker thread)

    def _load_ranking(self, loaders: ModelLoaders, source_dir: Path) -> SearchBackend:
        folder = model_state_folder(self.state_dir, "ranking", source_dir)
        saved = folder / "index"
        engine = loaders.load_engine(saved if saved.exists() else source_dir)
        replayed = replay_documents(engine, saved)
        logger.info(
            "ranking: loaded %s, replayed %d logged document writes",
            saved if saved.exists() else source_dir,
            replayed,
        )
        if self.config.query_encoder != "torch":
            engine.dense.use_query_backend(self.config.query_encoder, self.config.torch_threads)
            logger.info("ranking: queries encoded with %s", self.config.query_encoder)
        # Load the query encoder now (export it, for onnx), before /ready says yes or a swap puts
        # this model in front of requests: the first search must not pay for it.
        engine.encode_queries([WARM_UP_QUERY])
        return SearchBackend(
            engine,
            ModelRunner(self.executor),
            self.config.batching,
            self.config.admission,
            save_dir=saved,
            compact_every=self.config.compact_every_documents,
            threads=self.config.torch_threads,
            wide=(
                (self.config.wide_batch_threads, self.config.wide_batch_items)
                if self.config.wide_batch_threads
                else None
            ),
            on_batch=lambda name, size: self.metrics.batch_size.labels(batcher=name).observe(size),
        )

    def _load_sessionrec(self, loaders: ModelLoaders, source_dir: Path) -> RecommendBackend:
        folder = model_state_folder(self.state_dir, "sessionrec", source_dir)
        recommender = load_with_log(
            loaders.load_recommender, source_dir, folder, loaders.make_event
        )
        return RecommendBackend(
            recommender,
            ModelRunner(self.executor),
            folder,
            loaders.make_event,
            self.config.snapshot_every_events,
            self.config.admission.recommend_queue,
            threads=self.config.torch_threads,
        )

    # ------------------------------------------------------------ lifecycle (event loop)

    async def _loaders_now(self) -> ModelLoaders:
        if self._loaders is None:
            loop = asyncio.get_running_loop()
            self._loaders = await loop.run_in_executor(self.executor, default_loaders)
        return self._loaders

    async def load(self) -> None:
        """Load every configured model; a failure is recorded in its status (and logged)."""
        try:
            loaders = await self._loaders_now()
            set_threads(self.config.torch_threads)
        except Exception as error:  # the packages themselves cannot be imported
            logger.exception("cannot import the model packages")
            for name in self.status:
                self._failed(name, error)
            return
        for name in list(self.status):
            try:
                await self._load_one(name, loaders)
            except Exception as error:
                logger.exception("%s: cannot load %s", name, self.sources[name])
                self._failed(name, error)

    def _failed(self, name: str, error: BaseException) -> None:
        source = self.sources[name]
        hint = DEMO_HINT.format(name) if source.startswith("models:/") else ""
        self.errors[name] = f"{type(error).__name__}: {error}{hint}"
        if self.status[name].state != "ready":  # a failed reload keeps the model being served
            self.status[name].state = "failed"

    async def _load_one(self, name: str, loaders: ModelLoaders) -> bool:
        """Load `name` from where its source resolves now, and swap it in; False if unchanged."""
        loop = asyncio.get_running_loop()
        source_dir = Path(
            await loop.run_in_executor(self.executor, loaders.resolve, self.sources[name])
        )
        if self.resolved.get(name) == source_dir:
            return False
        load = self._load_ranking if name == "ranking" else self._load_sessionrec
        started = time.perf_counter()
        backend = await loop.run_in_executor(self.executor, load, loaders, source_dir)
        old = self.search if name == "ranking" else self.recommend
        if isinstance(backend, SearchBackend):
            self.search, versions = backend, backend.model_versions
        else:
            self.recommend, versions = backend, {"recommender": backend.model_version}
        previous = self.status[name].version
        self.resolved[name] = source_dir
        self.errors.pop(name, None)
        self.status[name] = ModelStatus(
            name=display_name(self.sources[name]),
            version=registry_version(source_dir),
            state="ready",
            ready=True,
            versions=versions,
        )
        self.metrics.set_model_versions(name, versions)
        if old is not None:
            seconds = time.perf_counter() - started
            self.swaps.append(
                {
                    "model": name,
                    "from": previous,
                    "to": self.status[name].version,
                    "seconds": seconds,
                }
            )
            logger.info("%s: swapped to %s in %.1f s", name, source_dir, seconds)
            self._retiring.add(asyncio.create_task(self._retire(old), name=f"retire-{name}"))
        return True

    async def _retire(self, old: SearchBackend | RecommendBackend) -> None:
        """Stop a replaced backend once no request is using it."""
        while old.in_flight.count:
            await asyncio.sleep(0.02)
        try:
            await (old.stop() if isinstance(old, SearchBackend) else old.close())
        except Exception:
            logger.exception("stopping a replaced model failed")

    async def reload(self) -> dict[str, bool]:
        """Resolve every source again; load and swap in those that moved. {model: swapped}."""
        async with self._reloading:
            loaders = await self._loaders_now()
            changed = {}
            for name in self.status:
                try:
                    changed[name] = await self._load_one(name, loaders)
                except Exception as error:
                    logger.exception("%s: reloading %s failed", name, self.sources[name])
                    self._failed(name, error)
                    changed[name] = False
            return changed

    async def watch(self, interval_s: float) -> None:
        """Poll the registry: reload every `interval_s` seconds (runs until cancelled)."""
        while True:
            await asyncio.sleep(interval_s)
            await self.reload()

    @property
    def watches_registry(self) -> bool:
        return any(source.startswith("models:/") for source in self.sources.values())

    async def close(self) -> None:
        """Drain the batchers, snapshot the recommender, stop the threads."""
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        if self.search is not None:
            await self.search.stop()
        if self.recommend is not None:
            try:
                await self.recommend.close()
            except Exception:
                logger.exception(
                    "sessionrec: snapshot at shutdown failed (the event log still has every event)"
                )
        self.executor.shutdown(wait=True)

    # ------------------------------------------------------------ access from routes

    def _unavailable(self, name: str) -> ProblemError:
        if name not in self.status:
            return ProblemError(404, "not-configured", f"this service serves no {name} model")
        if name in self.errors:
            return ProblemError(
                503, "model-failed", f"the {name} model failed to load: {self.errors[name]}"
            )
        return ProblemError(
            503, "loading", f"the {name} model is still loading", {"Retry-After": "5"}
        )

    def require_search(self) -> SearchBackend:
        if self.search is None:
            raise self._unavailable("ranking")
        return self.search

    def require_recommend(self) -> RecommendBackend:
        if self.recommend is None:
            raise self._unavailable("sessionrec")
        return self.recommend

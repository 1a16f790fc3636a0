"""Loading the served models and holding them for the routes.

Models load in the background once the app starts (the lifespan handler starts the task), so
`/health` answers at once and `/ready` says 503 until every configured model is loaded. Sources
are MLflow URIs (`models:/ranking-demo@champion`) or local folders, both resolved through
`nlprec.core.models.resolve`, which honours MLFLOW_TRACKING_URI.
"""

from __future__ import annotations

import asyncio
import logging
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
from nlprec.service.search_backend import Engine, SearchBackend
from nlprec.service.state import model_state_folder

logger = logging.getLogger("nlprec.service")
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
        if config.ranking_model is not None:
            self.status["ranking"] = ModelStatus(source=config.ranking_model, ready=False)
        if config.sessionrec_model is not None:
            self.status["sessionrec"] = ModelStatus(source=config.sessionrec_model, ready=False)

    @property
    def ready(self) -> bool:
        return all(status.ready for status in self.status.values())

    # ------------------------------------------------------------ loading (worker thread)

    def _load_ranking(self, loaders: ModelLoaders) -> SearchBackend:
        source_dir = Path(loaders.resolve(self.config.ranking_model))
        folder = model_state_folder(self.state_dir, "ranking", source_dir)
        saved = folder / "index"
        engine = loaders.load_engine(saved if saved.exists() else source_dir)
        logger.info("ranking: loaded %s", saved if saved.exists() else source_dir)
        if self.config.query_encoder != "torch":
            engine.dense.use_query_backend(self.config.query_encoder, self.config.torch_threads)
            engine.encode_queries(["warm-up"])  # export/load now, before /ready says yes
            logger.info("ranking: queries encoded with %s", self.config.query_encoder)
        return SearchBackend(
            engine,
            ModelRunner(self.executor),
            self.config.batching,
            self.config.admission,
            save_dir=saved,
            threads=self.config.torch_threads,
            wide=(
                (self.config.wide_batch_threads, self.config.wide_batch_items)
                if self.config.wide_batch_threads
                else None
            ),
            on_batch=lambda name, size: self.metrics.batch_size.labels(batcher=name).observe(size),
        )

    def _load_sessionrec(self, loaders: ModelLoaders) -> RecommendBackend:
        source_dir = Path(loaders.resolve(self.config.sessionrec_model))
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

    async def load(self) -> None:
        """Load every configured model; a failure is recorded in its status (and /ready says why)."""
        loop = asyncio.get_running_loop()
        try:
            loaders = self._loaders or await loop.run_in_executor(self.executor, default_loaders)
            set_threads(self.config.torch_threads)
        except Exception as error:  # the packages themselves cannot be imported
            logger.exception("cannot import the model packages")
            for status in self.status.values():
                status.error = f"{type(error).__name__}: {error}"
            return
        for name, load in (("ranking", self._load_ranking), ("sessionrec", self._load_sessionrec)):
            if name not in self.status:
                continue
            try:
                backend = await loop.run_in_executor(self.executor, load, loaders)
            except Exception as error:
                source = self.status[name].source
                logger.exception("%s: cannot load %s", name, source)
                hint = DEMO_HINT.format(name) if source.startswith("models:/") else ""
                self.status[name].error = f"{type(error).__name__}: {error}{hint}"
                continue
            if isinstance(backend, SearchBackend):
                self.search, versions = backend, backend.model_versions
            else:
                self.recommend, versions = backend, {"recommender": backend.model_version}
            self.status[name].versions = versions
            self.status[name].ready = True
            self.metrics.set_model_versions(name, versions)

    async def close(self) -> None:
        """Drain the batchers, snapshot the recommender, stop the threads."""
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
        status = self.status[name]
        if status.error is not None:
            return ProblemError(
                503, "model-failed", f"the {name} model failed to load: {status.error}"
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

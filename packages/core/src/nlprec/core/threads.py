"""CPU threads and library warnings: the one place that sets them.

On a small, shared CPU more than one intra-op thread per process mostly spins against other
processes (measured: one thread did a demo-sized training step with 15x less CPU time than two on a
loaded 2-core machine), so steps and torchrun workers state their thread count explicitly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

from nlprec.core.errors import UserError

# Loggers whose info chatter says nothing a user of these pipelines can act on.
NOISY_LOGGERS = ("mlflow", "alembic", "urllib3", "transformers", "sentence_transformers", "datasets")


def cpu_threads(requested: int | None = None) -> int | None:
    """The thread count to use: `requested`, else `NLPREC_THREADS` from the environment, else None
    (the libraries' own default)."""
    if requested is not None:
        return requested
    value = os.environ.get("NLPREC_THREADS")
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"NLPREC_THREADS={value!r} is not a positive integer")
    return int(value)


def set_threads(threads: int | None) -> None:
    """Intra-op threads of torch and FAISS's OpenMP, for the libraries already imported (None:
    leave them). Applies to the calling thread and the threads it starts later."""
    if threads is None:
        return
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    faiss = sys.modules.get("faiss")
    if faiss is not None:
        faiss.omp_set_num_threads(threads)


@contextlib.contextmanager
def limited_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `threads` torch threads (None: unchanged), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    set_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def thread_environment(threads: int) -> dict[str, str]:
    """Environment variables that cap the thread pools of a child process (torchrun workers)."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def quiet_libraries(all_warnings: bool = False) -> None:
    """Errors only from NOISY_LOGGERS, no transformers progress bars; with `all_warnings`, Python
    warnings off too (the CLI does this unless run with --verbose)."""
    if all_warnings:
        warnings.filterwarnings("ignore")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    transformers = sys.modules.get("transformers")
    if transformers is not None:
        transformers.utils.logging.disable_progress_bar()

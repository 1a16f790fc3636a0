"""One entry point for data-parallel training under torchrun, for every package:

    torchrun --standalone --nproc-per-node 2 -m nlprec.core.launch MODULE:FUNCTION \\
        --config config.json --inputs inputs.json --out OUT [--threads 1] [--backend gloo]

FUNCTION is a worker `worker(dist_ctx, config, inputs, out) -> dict`: `config` and `inputs` are the
JSON objects of the two files (the step's settings and what its upstream steps gave, usually paths),
`out` the folder rank 0 writes into, `dist_ctx` this process's place in the job
(`nlprec.core.distributed`: gloo on CPU, NCCL on GPUs). Every rank runs the worker; rank 0 writes
what it returns, with `world_size` added, to `OUT/result.json`. Without torchrun
(`python -m nlprec.core.launch ...`) it runs as one plain process.

A pipeline step calls `run_distributed(...)`, which writes the two files, starts torchrun on this
machine and returns what rank 0 wrote; MLflow logging stays with the step, in one process.
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nlprec.core.distributed import (
    DistributedContext,
    distributed_session,
    launch_torchrun,
    write_json_on_main,
)
from nlprec.core.errors import UserError
from nlprec.core.io import atomic_write_json
from nlprec.core.threads import limited_threads, thread_environment

RESULT_FILE = "result.json"

Worker = Callable[[DistributedContext, dict[str, Any], dict[str, Any], Path], dict[str, Any] | None]


def import_worker(reference: str) -> Worker:
    """The function named by `module:function`."""
    module_name, _, function_name = reference.partition(":")
    if not module_name or not function_name:
        raise UserError(f"worker {reference!r} is not of the form module:function")
    try:
        return getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise UserError(f"worker {reference!r} cannot be imported: {error}") from None


def _read_object(path: str | None, what: str) -> dict[str, Any]:
    if path is None:
        return {}
    value = json.loads(Path(path).read_text())
    if not isinstance(value, dict):
        raise UserError(f"{path}: the {what} file must hold a JSON object")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nlprec.core.launch", description=__doc__.splitlines()[0])
    parser.add_argument("worker", help="module:function of the worker")
    parser.add_argument("--config", help="JSON object: the worker's settings")
    parser.add_argument("--inputs", help="JSON object: what the upstream steps gave (paths)")
    parser.add_argument("--out", required=True, help="folder rank 0 writes into")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    parser.add_argument("--backend", choices=["gloo", "nccl"], default=None)
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the worker in this process (one rank of a torchrun job, or alone); returns its result."""
    args = _parser().parse_args(argv)
    worker = import_worker(args.worker)
    config, inputs = _read_object(args.config, "config"), _read_object(args.inputs, "inputs")
    out = Path(args.out)
    with limited_threads(args.threads), distributed_session(args.backend) as dist_ctx:
        result = {**(worker(dist_ctx, config, inputs, out) or {}), "world_size": dist_ctx.world_size}
        write_json_on_main(out / RESULT_FILE, result, dist_ctx)
    return result


def run_distributed(
    worker: str,
    config: dict[str, Any],
    inputs: dict[str, Any],
    out: str | Path,
    nproc_per_node: int,
    threads: int = 1,
    backend: str | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run `worker` (`module:function`) in `nproc_per_node` processes under torchrun; returns what
    rank 0 wrote to `out/result.json`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config_file = atomic_write_json(out / "launch_config.json", config)
    inputs_file = atomic_write_json(out / "launch_inputs.json", inputs)
    args = ["-m", "nlprec.core.launch", worker, "--config", config_file, "--inputs", inputs_file]
    args += ["--out", out, "--threads", threads] + (["--backend", backend] if backend else [])
    launch_torchrun(args, nproc_per_node, env=thread_environment(threads), timeout=timeout)
    return json.loads((out / RESULT_FILE).read_text())


if __name__ == "__main__":
    main()

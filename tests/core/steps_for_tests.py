"""Step functions the runner tests use (imported through `uses: steps_for_tests:<fn>`)."""

import json
import os
import time
from pathlib import Path

from nlprec.core.step import never_cached
from pydantic import BaseModel, ConfigDict


class WriteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: int = 1
    sleep: float = 0.0


def write_value(ctx, cfg: WriteConfig) -> dict:
    time.sleep(cfg.sleep)
    path = ctx.output_dir / "value.json"
    path.write_text(json.dumps({"value": cfg.value}))
    counter = Path(os.environ["NLPREC_TEST_COUNTER"]) if "NLPREC_TEST_COUNTER" in os.environ else None
    if counter:  # count real executions, so tests can tell a cache hit from a run
        with open(counter, "a") as handle:
            handle.write(ctx.name + "\n")
    ctx.log_metrics({"demo.value": float(cfg.value)})
    return {"path": str(path), "value": cfg.value}


class AddConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fail: bool = False
    interrupt: bool = False


def add_upstream(ctx, cfg: AddConfig) -> dict:
    total = 0
    for result in ctx.inputs.values():
        total += json.loads(Path(result["path"]).read_text())["value"]
    (ctx.output_dir / "partial.txt").write_text("half written")
    if cfg.fail:
        raise RuntimeError("planned failure")
    if cfg.interrupt:
        raise KeyboardInterrupt
    ctx.log_metrics({"total": float(total)})
    ctx.log_metrics({"curve.loss": 1.0}, step=0)
    ctx.log_metrics({"curve.loss": 0.5}, step=1)
    return {"total": total}


def no_config_annotation(ctx, cfg) -> dict:
    return {}


class AllocateConfig(BaseModel):
    mb: int = 200


def allocate(ctx, cfg: AllocateConfig) -> dict:
    """Touches cfg.mb of memory, then frees it: the step's peak, not what it keeps."""
    block = bytearray(cfg.mb * 1024 * 1024)
    block[:: 4096] = b"x" * len(block[:: 4096])
    del block
    return {}


@never_cached
def write_value_always(ctx, cfg: WriteConfig) -> dict:
    """write_value with an outside effect: runs on every invocation."""
    return write_value(ctx, cfg)

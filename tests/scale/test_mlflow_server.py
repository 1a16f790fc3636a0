"""Against a real `mlflow server`: a registered model resolves by `models:/name@alias`, and batch
inference (local and Ray engines) loads it from there, through MLFLOW_TRACKING_URI alone."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import pytest
from nlprec.core.batch import run_batch
from nlprec.core.models import ModelNotFound, resolve
from nlprec.core.tracking import Tracker

MODEL_NAME = "scale-toy-scorer"


class RegisteredScorer:
    """Resolves its model (a JSON weight) once, from wherever `model` points: here, the server."""

    def __init__(self, model: str):
        self.weight = json.loads((resolve(model) / "weights.json").read_text())["weight"]

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        return {"id": batch["id"], "score": [self.weight * len(text) for text in batch["text"]]}


@pytest.fixture()
def server_env(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("NLPREC_HOME", str(tmp_path / "home"))
    yield mlflow_server
    mlflow.set_tracking_uri(None)  # the fluent API keeps a global URI: do not leak the server's


def register_toy_model(folder: Path, weight: float) -> str:
    """Log and register a 'dir' model the way a pipeline step does (`ctx.log_model`)."""
    folder.mkdir(parents=True)
    (folder / "weights.json").write_text(json.dumps({"weight": weight}))
    tracker = Tracker()
    tracker.start_run(tracker.experiment_id("scale-server-test"), "register", nested=False, tags={})
    try:
        return tracker.log_model(folder, name=MODEL_NAME, flavor="dir", alias="champion")
    finally:
        tracker.end_run("FINISHED")


def test_resolve_and_batch_inference_against_the_server(server_env, tmp_path, ray_local):
    uri = register_toy_model(tmp_path / "model", weight=3.0)
    assert uri == f"models:/{MODEL_NAME}@champion"
    assert not (tmp_path / "home" / "mlflow.db").exists()  # the local default store was not used

    model_dir = resolve(uri)
    assert json.loads((model_dir / "weights.json").read_text()) == {"weight": 3.0}
    with pytest.raises(ModelNotFound, match="not found in the MLflow registry at http://127.0.0.1"):
        resolve(f"models:/{MODEL_NAME}@no-such-alias")

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": "x" * i}) + "\n" for i in range(20)))
    run_batch(
        RegisteredScorer,
        {"model": uri},
        source,
        tmp_path / "local.jsonl",
        batch_size=8,
        progress=False,
    )
    rows = [json.loads(line) for line in (tmp_path / "local.jsonl").read_text().splitlines()]
    assert [row["score"] for row in rows] == [3.0 * i for i in range(20)]

    # Ray actors are not children of this test: they get the server URI through the forwarded environment.
    ray_local.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        run_batch(RegisteredScorer, {"model": uri}, source, tmp_path / "ray.jsonl", engine="ray", batch_size=8,
                  progress=False)  # fmt: skip
    finally:
        ray_local.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert (tmp_path / "ray.jsonl").read_text() == (tmp_path / "local.jsonl").read_text()

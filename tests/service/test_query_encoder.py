"""`query_encoder: onnx`: the service encodes queries with ONNX Runtime against the same index, and
answers what the PyTorch encoder answers."""

from __future__ import annotations

import pytest
from nlprec.service.models import default_loaders
from service_support import build_real_models, running

pytest.importorskip("onnxruntime")
pytest.importorskip("nlprec.ranking")


@pytest.mark.anyio
async def test_onnx_query_encoder_gives_the_torch_results(tmp_path, monkeypatch, make_config):
    monkeypatch.setenv("NLPREC_HOME", str(tmp_path / "home"))  # the ONNX export cache
    models = build_real_models(tmp_path / "models")
    answers = {}
    for backend in ("torch", "onnx"):
        config = make_config(
            ranking_model=str(models["ranking"]),
            sessionrec_model=None,
            state_dir=tmp_path / f"state-{backend}",
            query_encoder=backend,
        )
        async with running(config, default_loaders()) as client:
            response = await client.post(
                "/v1/search", json={"query": "a grey stone castle", "k": 3, "mode": "dense"}
            )
            assert response.status_code == 200, response.text
            answers[backend] = response.json()["results"]
    assert [r["id"] for r in answers["onnx"]] == [r["id"] for r in answers["torch"]]
    for ours, theirs in zip(answers["onnx"], answers["torch"]):
        assert ours["score"] == pytest.approx(theirs["score"], abs=1e-4)


def test_unknown_query_encoder_is_a_config_error(make_config):
    with pytest.raises(ValueError, match="query_encoder"):
        make_config(query_encoder="tensorflow")

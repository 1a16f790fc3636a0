"""Model and dataset resolution, offline."""

import time

import pytest
from nlprec.core.data import DatasetNotFound, dataset_path, read_jsonl, write_jsonl_atomic
from nlprec.core.errors import UserError
from nlprec.core.models import ModelNotFound, resolve


def test_bundled_minilm_resolves_and_loads():
    from sentence_transformers import SentenceTransformer

    path = resolve("minilm")
    assert (path / "config.json").exists()
    assert resolve("sentence-transformers/all-MiniLM-L6-v2") == path
    model = SentenceTransformer(str(path), device="cpu")
    embedding = model.encode(["a clinical note"], normalize_embeddings=True)
    assert embedding.shape == (1, 384)


def test_local_directory_and_missing_paths(tmp_path):
    assert resolve(tmp_path) == tmp_path.resolve()
    with pytest.raises(ModelNotFound, match="does not exist"):
        resolve(tmp_path / "absent")
    (tmp_path / "file.bin").write_text("x")
    with pytest.raises(ModelNotFound, match="is a file"):
        resolve(tmp_path / "file.bin")


def test_hub_name_fails_fast_offline(monkeypatch):
    monkeypatch.delenv("NLPREC_ALLOW_DOWNLOAD", raising=False)
    started = time.perf_counter()
    with pytest.raises(ModelNotFound, match="offline"):
        resolve("yikuan8/Clinical-Longformer")
    assert time.perf_counter() - started < 10  # no retries, no hang


def test_allow_download_lifts_every_offline_switch(monkeypatch, tmp_path):
    """With NLPREC_ALLOW_DOWNLOAD=1 the hub client is asked online even when HF_HUB_OFFLINE=1 was set."""
    import huggingface_hub
    from huggingface_hub import constants
    from nlprec.core import models

    monkeypatch.setenv("NLPREC_ALLOW_DOWNLOAD", "1")
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(variable, "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: True)
    seen = {}

    def fake_snapshot_download(name, local_files_only=False):
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        seen["offline"] = constants.is_offline_mode()
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert resolve("someone/some-model") == tmp_path
    assert seen == {"offline": False}


def test_unknown_registered_model(nlprec_env):
    with pytest.raises(ModelNotFound, match="not found in the MLflow registry"):
        resolve("models:/no-such-model@champion")


def test_dataset_path_errors_say_where(tmp_path, monkeypatch):
    monkeypatch.setenv("NLPREC_DATA", str(tmp_path))
    (tmp_path / "beir" / "x").mkdir(parents=True)
    assert dataset_path("beir/x") == (tmp_path / "beir" / "x").resolve()
    with pytest.raises(DatasetNotFound, match=str(tmp_path / "beir" / "scifact")):
        dataset_path("beir/scifact")
    with pytest.raises(DatasetNotFound, match="missing corpus.jsonl"):
        dataset_path("beir/x", must_contain=("corpus.jsonl",))


def test_jsonl_round_trip_and_bad_line(tmp_path):
    path = tmp_path / "r.jsonl"
    assert write_jsonl_atomic(path, [{"a": 1}, {"a": 2}]) == 2
    assert [r["a"] for r in read_jsonl(path)] == [1, 2]
    path.write_text('{"a": 1}\n{broken\n')
    with pytest.raises(UserError, match="r.jsonl:2: not valid JSON"):
        list(read_jsonl(path))

"""Encoding paths: encode_query / encode_document with prompts and the truncation count, and the
ONNX Runtime backend (float32 and int8) against the PyTorch model."""

import numpy as np
import pytest
from nlprec.ranking.data import document_text
from nlprec.ranking.encoder import count_truncated, encode_documents, encode_queries, load_encoder

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def texts(demo):
    docs = [document_text(d) for d in demo["corpus"][:24]]
    return docs + ["glass", "a castle in Oslo made of grey stone with winding stairs"]


@pytest.fixture(scope="module")
def onnx_home(tmp_path_factory):
    """One export cache for the module (exporting takes seconds): NLPREC_HOME points there."""
    home = tmp_path_factory.mktemp("onnx-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NLPREC_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def reference(dense_retriever, texts):
    return dense_retriever.encoder.encode(texts, batch_size=8, normalize_embeddings=True)


def test_encoding_counts_truncation_and_honours_prompts(dense_retriever, texts):
    model = dense_retriever.encoder
    kept, model.max_seq_length = model.max_seq_length, 16  # the shared fixture's: restored below
    try:
        lengths = [len(ids) for ids in model.tokenizer(texts)["input_ids"]]
        assert count_truncated(model, texts) == sum(n > 16 for n in lengths) > 0
    finally:
        model.max_seq_length = kept
    plain = encode_queries(model, texts[:3], batch_size=8)
    np.testing.assert_allclose(plain, encode_documents(model, texts[:3], 8), atol=1e-5)  # no prompts
    kept_prompts, model.prompts = model.prompts, {"query": "query: ", "document": "passage: "}
    try:
        prompted = encode_queries(model, texts[:3], batch_size=8)
        expected = model.encode(["query: " + t for t in texts[:3]], normalize_embeddings=True)
    finally:
        model.prompts = kept_prompts
    np.testing.assert_allclose(prompted, expected, atol=1e-5)
    assert np.max(np.abs(prompted - plain)) > 1e-3
    assert encode_documents(model, [], 8).shape == (0, 384)


def test_onnx_float32_gives_the_torch_vectors(onnx_home, texts, reference):
    model = load_encoder("minilm", backend="onnx", threads=1)
    assert model.path.is_relative_to(onnx_home)
    vectors = encode_documents(model, texts, batch_size=8)
    assert vectors.shape == reference.shape
    assert np.min(np.sum(vectors * reference, axis=1)) > 0.9999


def test_onnx_int8_stays_close_and_keeps_the_ranking(onnx_home, demo, reference, texts):
    from nlprec.ranking.dense import DenseConfig, DenseRetriever

    model = load_encoder("minilm", backend="onnx", int8=True, threads=1)
    vectors = encode_documents(model, texts, batch_size=8)
    cosines = np.sum(vectors * reference, axis=1)
    assert cosines.min() > 0.95 and cosines.mean() > 0.98, cosines
    assert (
        model.path.stat().st_size < 0.5 * load_encoder("minilm", backend="onnx").path.stat().st_size
    )
    # the last text is a query for a castle: int8 and float32 must rank the documents alike
    docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(texts[:-2])]
    config = DenseConfig(backend="onnx", int8=True, threads=1)
    quantised = DenseRetriever(config).build(docs, progress=False)
    top = [d for d, _ in quantised.search([texts[-1]], k=5)[0]]
    exact = np.argsort(-(reference[:-2] @ reference[-1]))[:5]
    assert len(set(top) & {f"d{i}" for i in exact}) >= 4


def test_onnx_backend_refuses_a_gpu_and_unknown_backends():
    with pytest.raises(ValueError, match="CPU only"):
        load_encoder("minilm", backend="onnx", device="cuda")
    with pytest.raises(ValueError, match="unknown encoder backend"):
        load_encoder("minilm", backend="tensorrt")


def test_cli_index_with_the_onnx_int8_backend(onnx_home, demo, tmp_path):
    import json

    from nlprec.ranking.cli import main
    from nlprec.ranking.engine import SearchEngine

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in demo["corpus"]))
    argv = ["index", "--corpus", str(corpus), "--out", str(tmp_path / "engine"), "--index", "flat"]
    assert main([*argv, "--backend", "onnx", "--int8"]) == 0
    engine = SearchEngine.load(tmp_path / "engine")
    assert (engine.dense.config.backend, engine.dense.config.int8) == ("onnx", True)
    doc = demo["corpus"][0]
    hits = engine.search([f"{doc['title']}. {doc['text']}"], k=3, mode="dense")[0]
    assert hits[0].doc_id == doc["_id"]


def test_switching_queries_to_onnx_keeps_the_index_and_the_results(onnx_home, demo):
    from nlprec.ranking.dense import DenseConfig, DenseRetriever
    from nlprec.ranking.faiss_index import FaissConfig

    retriever = DenseRetriever(DenseConfig(faiss=FaissConfig(kind="flat"), threads=1))
    retriever.build(demo["corpus"][:40], progress=False)
    queries = list(demo["queries"].values())[:8]
    torch_hits = retriever.search(queries, 5)
    retriever.use_query_backend("onnx", threads=1)
    assert type(retriever.encoder).__name__ == "OnnxEncoder" and retriever.config.backend == "torch"
    onnx_hits = retriever.search(queries, 5)
    for ours, theirs in zip(onnx_hits, torch_hits):
        assert [doc for doc, _ in ours] == [doc for doc, _ in theirs]
        np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], atol=1e-4)


def test_default_length_reads_old_and_new_sentence_transformers_layouts(tmp_path):
    from types import SimpleNamespace

    from nlprec.ranking.onnx_encoder import default_length

    old = tmp_path / "old"
    old.mkdir()
    (old / "sentence_bert_config.json").write_text('{"max_seq_length": 128}')
    assert default_length(old, SimpleNamespace(model_max_length=256)) == 128
    new = tmp_path / "new"  # sentence-transformers 6: no max_seq_length, the tokenizer holds it
    new.mkdir()
    (new / "sentence_bert_config.json").write_text('{"transformer_task": "feature-extraction"}')
    assert default_length(new, SimpleNamespace(model_max_length=256)) == 256
    assert default_length(new, SimpleNamespace(model_max_length=10**30)) == 512


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}, "mean"),
        ({"pooling_mode_cls_token": True}, "cls"),
        ({"embedding_dimension": 384, "pooling_mode": "mean"}, "mean"),  # sentence-transformers 6
        ({"pooling_mode": "max"}, "max"),
    ],
)
def test_pooling_mode_reads_both_config_layouts(tmp_path, config, expected):
    import json

    from nlprec.ranking.onnx_encoder import pooling_mode

    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(config))
    modules = [{"idx": 1, "name": "1", "path": "1_Pooling", "type": "x.Pooling"}]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    assert pooling_mode(tmp_path) == expected


def test_tanh_gelu_graph_is_fused_and_stays_close(onnx_home, texts, reference):
    import onnx
    from nlprec.ranking.onnx_encoder import export_onnx

    model = load_encoder("minilm", backend="onnx", threads=1, onnx_gelu="tanh")
    ops = {node.op_type for node in onnx.load(str(model.path)).graph.node}
    exact_ops = {node.op_type for node in onnx.load(str(export_onnx(_minilm()))).graph.node}
    assert "FastGelu" in ops and "BiasGelu" not in ops and "BiasGelu" in exact_ops
    vectors = encode_documents(model, texts, batch_size=8)
    assert np.min(np.sum(vectors * reference, axis=1)) > 0.999
    with pytest.raises(ValueError, match="gelu must be one of"):
        export_onnx(_minilm(), gelu="sigmoid")


def _minilm():
    from nlprec.ranking.encoder import resolve_model_dir

    return resolve_model_dir("minilm")

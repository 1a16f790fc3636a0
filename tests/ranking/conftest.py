"""Shared fixtures of the ranking tests: one small corpus and one built engine per session."""

import pytest
from nlprec.ranking.demo_data import generate_demo_corpus


@pytest.fixture(scope="session")
def demo():
    return generate_demo_corpus(n_docs=40, n_queries=30, seed=3)


@pytest.fixture(scope="session")
def dense_retriever(demo):
    from nlprec.ranking.dense import DenseConfig, DenseRetriever
    from nlprec.ranking.faiss_index import FaissConfig

    return DenseRetriever(DenseConfig(faiss=FaissConfig(kind="flat"), threads=1)).build(
        demo["corpus"], progress=False
    )


@pytest.fixture(scope="session")
def doc_vectors(dense_retriever, demo):
    _, texts = dense_retriever.document_units(
        [{"id": d["_id"], "title": d["title"], "text": d["text"]} for d in demo["corpus"]]
    )
    return dense_retriever.encode_documents(texts, progress=False)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory):
    """A 2-layer, 32-wide BERT with MiniLM's tokenizer and no dropout (so runs are deterministic)."""
    import torch
    from nlprec.ranking.encoder import resolve_model_dir
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_dir("minilm")))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder

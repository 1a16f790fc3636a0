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

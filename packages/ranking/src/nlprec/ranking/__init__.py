"""BM25, dense FAISS retrieval, cross-encoder reranking, fusion and IR evaluation"""

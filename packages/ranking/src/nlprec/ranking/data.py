"""BEIR folders and TREC files: read, validate, write.

A BEIR folder holds ``corpus.jsonl`` (or ``corpus.jsonl.gz``), ``queries.jsonl`` and
``qrels/<split>.tsv``. Runs and qrels are kept as ``{query_id: {doc_id: value}}`` dicts, the shape
ir-measures and pytrec_eval take.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nlprec.core.io import atomic_write_text

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


class DataError(ValueError):
    """Input data that cannot be used as given; the message names the file and what is wrong."""


@dataclass
class BeirDataset:
    """One BEIR folder in memory: documents in file order, queries and the qrels of each split."""

    path: Path
    corpus: list[dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, Qrels] = field(default_factory=dict)

    def split_queries(self, split: str) -> dict[str, str]:
        """The queries that have judgements in ``split`` (queries without qrels are left out)."""
        judged = self.qrels.get(split, {})
        return {qid: text for qid, text in self.queries.items() if qid in judged}


def _open_text(path: Path):
    return (
        gzip.open(path, "rt", encoding="utf-8")
        if path.suffix == ".gz"
        else path.open(encoding="utf-8")
    )


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    with _open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{line_no}: not valid JSON ({err.msg})") from err


def read_corpus(path: str | Path) -> list[dict[str, str]]:
    """Documents as ``{"id", "title", "text"}``; raises on an empty file, a missing or duplicate id."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"corpus file not found: {path}")
    docs: list[dict[str, str]] = []
    for line_no, row in _iter_jsonl(path):
        docs.append(normalise_document(row, where=f"{path}:{line_no}"))
    if not docs:
        raise DataError(f"{path}: the corpus is empty (no documents)")
    check_unique_ids(docs, where=str(path))
    return docs


def normalise_document(row: Mapping, where: str = "document") -> dict[str, str]:
    """Accept BEIR (``_id``) or plain (``id``) keys; the id must be a non-empty string or int."""
    doc_id = row.get("_id", row.get("id"))
    if doc_id is None or str(doc_id).strip() == "":
        raise DataError(f"{where}: document without an id (expected key '_id' or 'id')")
    title, text = str(row.get("title") or ""), str(row.get("text") or "")
    return {"id": str(doc_id), "title": title, "text": text}


def check_unique_ids(docs: list[dict[str, str]], where: str) -> None:
    seen: set[str] = set()
    for doc in docs:
        if doc["id"] in seen:
            raise DataError(f"{where}: duplicate document id {doc['id']!r}")
        seen.add(doc["id"])


def read_queries(path: str | Path) -> dict[str, str]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"queries file not found: {path}")
    queries: dict[str, str] = {}
    for line_no, row in _iter_jsonl(path):
        qid = row.get("_id", row.get("id"))
        if qid is None:
            raise DataError(f"{path}:{line_no}: query without an id (expected '_id' or 'id')")
        if str(qid) in queries:
            raise DataError(f"{path}:{line_no}: duplicate query id {qid!r}")
        queries[str(qid)] = str(row.get("text") or "")
    if not queries:
        raise DataError(f"{path}: no queries")
    return queries


def read_beir_qrels(path: str | Path) -> Qrels:
    """BEIR qrels: a tab-separated file with header ``query-id corpus-id score``."""
    qrels: Qrels = {}
    with Path(path).open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            parts = line.rstrip("\n").split("\t")
            if line_no == 1 and parts[0] == "query-id":
                continue
            if len(parts) != 3:
                raise DataError(
                    f"{path}:{line_no}: expected 3 tab-separated fields, got {len(parts)}"
                )
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return qrels


def load_beir(folder: str | Path) -> BeirDataset:
    """Read a BEIR folder; every ``qrels/*.tsv`` becomes a split."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"BEIR folder not found: {folder} (set params.data or NLPREC_DATA)")
    corpus_path = next(
        (folder / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (folder / n).exists()), None
    )
    if corpus_path is None:
        raise DataError(f"{folder}: no corpus.jsonl or corpus.jsonl.gz")
    qrels = {p.stem: read_beir_qrels(p) for p in sorted((folder / "qrels").glob("*.tsv"))}
    if not qrels:
        raise DataError(f"{folder}: no qrels/<split>.tsv files")
    return BeirDataset(
        folder, read_corpus(corpus_path), read_queries(folder / "queries.jsonl"), qrels
    )


def write_trec_run(run: Run, path: str | Path, tag: str = "nlprec") -> None:
    """TREC run format: ``qid Q0 docid rank score tag``, ranks from 1 by descending score."""
    lines = []
    for qid, scores in run.items():
        ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
        lines += [
            f"{qid} Q0 {did} {rank} {score:.6f} {tag}"
            for rank, (did, score) in enumerate(ranked, 1)
        ]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _trec_rows(path: str | Path, n_fields: int, kind: str) -> Iterator[list[str]]:
    with Path(path).open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != n_fields:
                raise DataError(
                    f"{path}:{line_no}: a TREC {kind} line has {n_fields} fields, got {len(parts)}"
                )
            yield parts


def read_trec_run(path: str | Path) -> Run:
    run: Run = {}
    for qid, _, doc_id, _, score, _ in _trec_rows(path, 6, "run"):
        run.setdefault(qid, {})[doc_id] = float(score)
    return run


def write_trec_qrels(qrels: Qrels, path: str | Path) -> None:
    lines = [f"{qid} 0 {did} {rel}" for qid, docs in qrels.items() for did, rel in docs.items()]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_trec_qrels(path: str | Path) -> Qrels:
    qrels: Qrels = {}
    for qid, _, doc_id, rel in _trec_rows(path, 4, "qrels"):
        qrels.setdefault(qid, {})[doc_id] = int(rel)
    return qrels


def document_text(doc: Mapping[str, str]) -> str:
    """The text that is indexed: title and body, as BEIR does."""
    return f"{doc.get('title', '')} {doc.get('text', '')}".strip()

"""A user's labelled data in the common formats, read into train/dev/test lists of plain records.

Three record kinds, whatever the file format:

* ``ner``  ``{"tokens": [...], "tags": [...]}`` (IOB2 tags)
* ``text`` ``{"text": ..., "label": ...}`` (optionally ``text_pair`` and ``id``)
* ``qa``   ``{"id", "question", "context", "answer_text", "answer_start", "title"}``

and four layouts of a dataset (a folder, or for JSONL/SQuAD a single file):

* IOB2 TSV: ``train.tsv``, ``dev.tsv`` (``devel.tsv`` and ``validation.tsv`` accepted),
  ``test.tsv``; ``token<TAB>tag`` per line (the tag is the last column), a blank line between
  sentences;
* JSONL: ``train.jsonl`` / ``dev.jsonl`` / ``test.jsonl``, one JSON object per line;
* SQuAD JSON: ``train.json`` / ``dev.json`` / ``test.json``;
* a Hugging Face ``datasets`` folder (``DatasetDict.save_to_disk``): ``dataset_dict.json`` and one
  folder of Arrow stream files per split, read with pyarrow; integer ``ClassLabel`` columns
  (``ner_tags``, ``label``) are mapped back to their names, SQuAD-style ``answers`` unpacked.

A malformed file raises `UserError` naming the file and line. A dataset without a dev split gets
one carved from train by `with_dev` (the caller reports that it did).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Literal

from nlprec.core.data import read_jsonl
from nlprec.core.errors import UserError

Kind = Literal["ner", "text", "qa"]
SPLIT_NAMES = {
    "train": ("train",),
    "dev": ("dev", "devel", "validation", "valid"),
    "test": ("test",),
}
SUFFIXES = {"ner": (".tsv", ".iob", ".iob2", ".conll"), "text": (".jsonl",), "qa": (".json",)}
DATASETS_MARKER = "dataset_dict.json"


# ---------------------------------------------------------------------------------- IOB2


def read_iob2(path: str | Path) -> list[dict[str, list[str]]]:
    """Sentences of an IOB2 file: ``token<TAB>...<TAB>tag`` lines, blank lines between sentences."""
    path = Path(path)
    sentences: list[dict[str, list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("-DOCSTART-"):
                if tokens:
                    sentences.append({"tokens": tokens, "tags": tags})
                tokens, tags = [], []
                continue
            parts = line.split("\t")
            tag = parts[-1].strip()
            if len(parts) < 2 or not parts[0]:
                raise UserError(f"{path}:{number}: expected 'token<TAB>tag', got {line!r}")
            if tag != "O" and not (tag[:2] in ("B-", "I-") and len(tag) > 2):
                raise UserError(f"{path}:{number}: tag {tag!r} is not IOB2 (O, B-TYPE or I-TYPE)")
            tokens.append(parts[0])
            tags.append(tag)
    if tokens:
        sentences.append({"tokens": tokens, "tags": tags})
    return sentences


# ---------------------------------------------------------------------------------- JSONL


def read_text_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """``{"text", "label"}`` records (``text_pair``, ``id`` kept when present)."""
    records = []
    for number, record in enumerate(read_jsonl(path), start=1):
        if not isinstance(record.get("text"), str) or "label" not in record:
            raise UserError(
                f"{path}:{_line_of(path, number)}: expected an object with a string 'text' and a "
                f"'label', got keys {sorted(record)}"
            )
        kept = {k: record[k] for k in ("text", "text_pair", "id") if k in record}
        records.append({**kept, "label": str(record["label"])})
    return records


def _line_of(path: str | Path, record_number: int) -> int:
    """The file line of the ``record_number``-th non-blank line (blank lines are skipped)."""
    seen = 0
    with Path(path).open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            seen += bool(line.strip())
            if seen == record_number:
                return line_number
    return record_number


# ---------------------------------------------------------------------------------- SQuAD


def read_squad(path: str | Path) -> list[dict[str, Any]]:
    """Answerable questions of a SQuAD v1/v2 file, the first answer of each."""
    path = Path(path)
    try:
        squad = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(squad, dict) or not isinstance(squad.get("data"), list):
        raise UserError(f"{path}: expected SQuAD JSON, an object with a 'data' list")
    records = []
    for a, article in enumerate(squad["data"]):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph.get("context"), str) or "qas" not in paragraph:
                raise UserError(f"{where}: expected 'context' (a string) and 'qas'")
            title = str(paragraph.get("document_id", article.get("title", a)))
            for q, qa in enumerate(paragraph["qas"]):
                if qa.get("is_impossible") or not qa.get("answers"):
                    continue
                answer = qa["answers"][0]
                if "question" not in qa or "text" not in answer or "answer_start" not in answer:
                    raise UserError(
                        f"{where}.qas[{q}]: expected 'question' and answers with "
                        "'text' and 'answer_start'"
                    )
                records.append(
                    {
                        "id": str(qa.get("id", f"{a}-{p}-{q}")),
                        "question": qa["question"],
                        "context": paragraph["context"],
                        "answer_text": answer["text"],
                        "answer_start": int(answer["answer_start"]),
                        "title": title,
                    }
                )
    return records


# ---------------------------------------------------------------------------------- datasets folder


def read_datasets_folder(folder: str | Path, kind: Kind) -> dict[str, list[dict[str, Any]]]:
    """The splits of a ``DatasetDict.save_to_disk`` folder as records of ``kind``."""
    import pyarrow as pa

    folder = Path(folder)
    splits = json.loads((folder / DATASETS_MARKER).read_text())["splits"]
    out = {}
    for split in splits:
        state_path = folder / split / "state.json"
        if not state_path.exists():
            raise UserError(f"{state_path}: missing (not a datasets save_to_disk folder?)")
        files = [f["filename"] for f in json.loads(state_path.read_text())["_data_files"]]
        tables = []
        for name in files:
            with pa.memory_map(str(folder / split / name)) as source:
                tables.append(pa.ipc.open_stream(source).read_all())
        rows = pa.concat_tables(tables).to_pylist() if tables else []
        names = _class_label_names(folder / split / "dataset_info.json")
        out[split] = [
            _datasets_record(row, kind, names, folder / split, i) for i, row in enumerate(rows)
        ]
    return out


def _class_label_names(info_path: Path) -> dict[str, list[str]]:
    """Column -> ClassLabel names (for a column of labels or a sequence of them)."""
    if not info_path.exists():
        return {}
    names = {}
    for column, feature in json.loads(info_path.read_text()).get("features", {}).items():
        inner = feature.get("feature", feature) if isinstance(feature, dict) else {}
        if isinstance(inner, dict) and inner.get("_type") == "ClassLabel":
            names[column] = inner["names"]
    return names


def _datasets_record(row: dict, kind: Kind, names: dict, where: Path, index: int) -> dict:
    def named(column: str, value):
        if column not in names:
            return value
        return (
            [names[column][v] for v in value] if isinstance(value, list) else names[column][value]
        )

    try:
        if kind == "ner":
            column = "tags" if "tags" in row else "ner_tags"
            return {"tokens": row["tokens"], "tags": named(column, row[column])}
        if kind == "text":
            kept = {k: row[k] for k in ("text", "text_pair", "id") if k in row}
            return {**kept, "text": row["text"], "label": str(named("label", row["label"]))}
        answers = row["answers"]
        return {
            "id": str(row.get("id", index)),
            "question": row["question"],
            "context": row["context"],
            "answer_text": answers["text"][0],
            "answer_start": int(answers["answer_start"][0]),
            "title": str(row.get("title", index)),
        }
    except (KeyError, IndexError, TypeError) as exc:
        expected = {
            "ner": "tokens and tags/ner_tags",
            "text": "text and label",
            "qa": "SQuAD columns",
        }
        raise UserError(f"{where}: row {index}: expected {expected[kind]} ({exc!r})") from None


# ---------------------------------------------------------------------------------- splits


READERS = {"ner": read_iob2, "text": read_text_jsonl, "qa": read_squad}


def load_splits(path: str | Path, kind: Kind) -> dict[str, list[dict[str, Any]]]:
    """train/dev/test records of ``kind`` from a folder (or one JSONL / SQuAD file: all train).

    Missing splits are absent from the result (`with_dev` carves a dev split from train).
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if path.is_file():
        return {"train": READERS[kind](path)}
    if (path / DATASETS_MARKER).exists():
        splits = read_datasets_folder(path, kind)
        return {
            canonical: splits[name]
            for canonical, aliases in SPLIT_NAMES.items()
            for name in aliases
            if name in splits
        }
    splits = {}
    for canonical, aliases in SPLIT_NAMES.items():
        for alias in aliases:
            found = [path / f"{alias}{suffix}" for suffix in SUFFIXES[kind]]
            found = [f for f in found if f.exists()]
            if found:
                splits[canonical] = READERS[kind](found[0])
                break
    if "train" not in splits:
        expected = " or ".join(f"train{s}" for s in SUFFIXES[kind])
        raise UserError(f"{path}: no training split ({expected}, or a datasets folder)")
    return splits


def with_dev(
    splits: dict[str, list], fraction: float = 0.1, seed: int = 0, group: str | None = None
) -> tuple[dict[str, list], bool]:
    """``splits`` with a dev split; where there is none, a ``fraction`` of train (by ``group``
    value, e.g. a QA article, when given) is moved into it. Returns (splits, carved)."""
    if splits.get("dev"):
        return splits, False
    train = splits["train"]
    keys = sorted({str(r[group]) for r in train}) if group else list(range(len(train)))
    random.Random(seed).shuffle(keys)
    held = set(keys[: max(1, round(fraction * len(keys)))])
    key_of = (lambda i, r: str(r[group])) if group else (lambda i, r: i)
    dev = [r for i, r in enumerate(train) if key_of(i, r) in held]
    rest = [r for i, r in enumerate(train) if key_of(i, r) not in held]
    if not rest:
        raise UserError(f"cannot carve a dev split from {len(train)} training records")
    return {**splits, "train": rest, "dev": dev}, True

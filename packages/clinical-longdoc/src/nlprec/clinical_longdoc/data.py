"""Loaders for the real clinical tasks and the generated embedded default.

* MTSamples specialty: the fixed protocol of ``mtsamples/split.json`` (unique texts, single label,
  17 classes, stratified 1,010 / 217 / 217).
* COVID-QA (or any SQuAD json): 98 long articles, split *by article* so no test article is seen
  in training; answers whose ``answer_start`` does not point at the answer text are re-aligned to
  the nearest exact occurrence, or dropped, and both are counted in the logs.
* NCBI-disease (or any IOB2 folder): token<TAB>IOB2 tag, a blank line between sentences.
* A user's own data in any format `nlprec.core.datasets_io` reads (IOB2, JSONL text/label,
  SQuAD, a datasets folder): `load_ner`, `load_text_classification`, `load_qa`.
* Generated notes (embedded default): deterministic, specialty-bearing findings placed in the
  middle of a long note, where a head-truncated short model cannot see them.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nlprec.core.datasets_io import load_splits, with_dev
from nlprec.core.errors import UserError

logger = logging.getLogger(__name__)

MTSAMPLES_DIR = "clinical/mtsamples"
COVID_QA_FILE = "clinical/covid_qa/200423_covidQA.json"
NCBI_DIR = "clinical/ncbi_disease"
SPLITS = ("train", "dev", "test")


@dataclass
class DocumentSet:
    """Texts with one label each."""

    texts: list[str]
    labels: list[str]
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, n: int | None) -> DocumentSet:
        if n is None or n >= len(self):
            return self
        return DocumentSet(self.texts[:n], self.labels[:n], self.ids[:n])


@dataclass
class QAExample:
    question: str
    context: str
    answer_text: str
    answer_start: int  # character offset in context
    article_id: str
    qid: str


@dataclass
class TaggedSentence:
    words: list[str]
    tags: list[str]


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found at {path} (set NLPREC_DATA or params.data)")
    return path


# ---------------------------------------------------------------- MTSamples


def load_mtsamples(path: str | Path) -> dict[str, DocumentSet]:
    """train/dev/test of the fixed split.json protocol; ``path``: the MTSamples folder or a data
    root holding clinical/mtsamples."""
    path = Path(path)
    folder = path if (path / "split.json").exists() else _require(path / MTSAMPLES_DIR, "MTSamples")
    split = json.loads(_require(folder / "split.json", "MTSamples split.json").read_text())
    texts_by_id: dict[int, str] = {}
    with gzip.open(folder / "mtsamples_dedup_multilabel.jsonl.gz", "rt", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            texts_by_id[min(row["note_ids"])] = row["text"]
    sets = {}
    for name in SPLITS:
        entries = split[name]
        missing = [e["id"] for e in entries if e["id"] not in texts_by_id]
        if missing:
            raise ValueError(f"split.json {name} ids not in the jsonl: {missing[:5]}")
        sets[name] = DocumentSet(
            texts=[texts_by_id[e["id"]] for e in entries],
            labels=[e["label"] for e in entries],
            ids=[str(e["id"]) for e in entries],
        )
    return sets


# ---------------------------------------------------------------- COVID-QA


def align_answer(context: str, text: str, start: int) -> int | None:
    """The character start of ``text`` in ``context``: ``start`` if it matches, else the nearest
    exact occurrence, else None."""
    if context[start : start + len(text)] == text:
        return start
    occurrences = []
    position = context.find(text)
    while position != -1:
        occurrences.append(position)
        position = context.find(text, position + 1)
    if not occurrences:
        return None
    return min(occurrences, key=lambda p: abs(p - start))


def qa_examples(records: Sequence[dict]) -> list[QAExample]:
    """QAExamples of SQuAD records (`nlprec.core.datasets_io.read_squad`); answers whose
    ``answer_start`` misses the text are re-aligned, unmatchable ones dropped (counts logged)."""
    examples, realigned, dropped = [], 0, 0
    for r in records:
        start = align_answer(r["context"], r["answer_text"], r["answer_start"])
        if start is None:
            dropped += 1
            continue
        realigned += start != r["answer_start"]
        examples.append(
            QAExample(r["question"], r["context"], r["answer_text"], start, r["title"], r["id"])
        )
    if realigned or dropped:
        logger.warning(
            "QA: %d answers re-aligned to the nearest exact match, %d dropped (text not in context)",
            realigned,
            dropped,
        )
    return examples


def split_by_article(
    examples: Sequence[QAExample], seed: int = 0, fractions: tuple[float, float] = (0.7, 0.1)
) -> dict[str, list[QAExample]]:
    """train/dev/test with disjoint articles (shuffled with ``seed``)."""
    articles = sorted({e.article_id for e in examples})
    random.Random(seed).shuffle(articles)
    n_train = round(fractions[0] * len(articles))
    n_dev = round(fractions[1] * len(articles))
    which = {a: "train" for a in articles[:n_train]}
    which.update({a: "dev" for a in articles[n_train : n_train + n_dev]})
    which.update({a: "test" for a in articles[n_train + n_dev :]})
    return {name: [e for e in examples if which[e.article_id] == name] for name in SPLITS}


def load_qa(path: str | Path, seed: int = 0) -> tuple[dict[str, list[QAExample]], str]:
    """train/dev/test QA examples and how the splits were made.

    One SQuAD file (COVID-QA): split by article 70/10/20. A folder (train/dev/test json, or a
    datasets folder) keeps its splits; a missing dev split is carved from train by article.
    """
    path = Path(path)
    splits = load_splits(path, "qa")
    if path.is_file():
        return split_by_article(qa_examples(splits["train"]), seed=seed), "by article 70/10/20"
    _require_test(splits, path)
    splits, carved = with_dev(splits, seed=seed, group="title")
    how = "dev carved from train by article (10 %)" if carved else "the folder's own splits"
    return {name: qa_examples(splits[name]) for name in SPLITS}, how


def load_covid_qa(data_root: str | Path, seed: int = 0) -> dict[str, list[QAExample]]:
    return load_qa(_require(Path(data_root) / COVID_QA_FILE, "COVID-QA"), seed)[0]


# ---------------------------------------------------------------- NCBI-disease


def load_ner(path: str | Path, seed: int = 0) -> tuple[dict[str, list[TaggedSentence]], str]:
    """train/dev/test sentences of an IOB2 folder (``devel.tsv`` accepted) or a datasets folder,
    and how the splits were made (a missing dev split is carved from train, 10 %)."""
    splits = load_splits(path, "ner")
    _require_test(splits, Path(path))
    splits, carved = with_dev(splits, seed=seed)
    how = "dev carved from train (10 %)" if carved else "the folder's own splits"
    return {n: [TaggedSentence(r["tokens"], r["tags"]) for r in splits[n]] for n in SPLITS}, how


def load_ncbi(data_root: str | Path) -> dict[str, list[TaggedSentence]]:
    return load_ner(_require(Path(data_root) / NCBI_DIR, "NCBI-disease"))[0]


def load_text_classification(path: str | Path, seed: int = 0) -> tuple[dict[str, DocumentSet], str]:
    """train/dev/test documents of JSONL text/label files or a datasets folder, and how the splits
    were made (a missing dev split is carved from train, 10 %)."""
    splits = load_splits(path, "text")
    _require_test(splits, Path(path))
    splits, carved = with_dev(splits, seed=seed)
    how = "dev carved from train (10 %)" if carved else "the folder's own splits"
    return {
        name: DocumentSet(
            [r["text"] for r in rows],
            [r["label"] for r in rows],
            [str(r.get("id", f"{name}-{i}")) for i, r in enumerate(rows)],
        )
        for name, rows in ((n, splits[n]) for n in SPLITS)
    }, how


def _require_test(splits: dict, path: Path) -> None:
    if "test" not in splits:
        raise UserError(f"{path}: no test split (test.tsv / test.jsonl / test.json)")


# ---------------------------------------------------------------- generated notes

_SPECIALTY_FINDINGS = {
    "cardiology": [
        "echocardiogram shows reduced ejection fraction with mitral regurgitation",
        "troponin elevated and ST depression in the lateral leads",
        "atrial fibrillation with rapid ventricular response was cardioverted",
    ],
    "neurology": [
        "MRI of the brain shows demyelinating plaques in the periventricular white matter",
        "EEG captured focal seizures arising from the left temporal lobe",
        "gait ataxia and nystagmus with positive Romberg sign",
    ],
    "gastroenterology": [
        "colonoscopy revealed ulcerative changes in the sigmoid colon",
        "upper endoscopy showed erosive esophagitis and a hiatal hernia",
        "liver enzymes elevated with ascites on abdominal ultrasound",
    ],
    "orthopedics": [
        "radiographs demonstrate a displaced fracture of the distal radius",
        "MRI of the knee shows a complex tear of the medial meniscus",
        "total hip arthroplasty was performed with cemented components",
    ],
}
_FILLER = [
    "The patient is alert and oriented and in no acute distress.",
    "Vital signs were reviewed and are within normal limits.",
    "Medications were reconciled with the patient and the pharmacy list.",
    "Social history is negative for tobacco and illicit drug use.",
    "Family history is noncontributory per the patient.",
    "Review of systems is otherwise negative in all other systems.",
    "The patient was counseled regarding diet, exercise and follow-up.",
    "Allergies include penicillin, which causes a rash.",
    "Skin is warm and dry without rashes or lesions.",
    "Laboratory values from the prior visit were reviewed with the patient.",
]


def generate_notes(
    n: int, seed: int = 0, filler_sentences: tuple[int, int] = (18, 30)
) -> DocumentSet:
    """``n`` notes, labels balanced over four specialties.

    Layout: HISTORY (filler) -> FINDINGS (2 specialty sentences) -> PLAN (filler).  The history is
    long enough that the findings start past the first ~128 tokens, so a short head-truncated model
    sees only boilerplate while a long model (or chunking) reads the findings.
    """
    rng = random.Random(seed)
    labels = sorted(_SPECIALTY_FINDINGS)
    texts, out_labels = [], []
    for i in range(n):
        label = labels[i % len(labels)]
        history = " ".join(rng.choice(_FILLER) for _ in range(rng.randint(*filler_sentences)))
        findings = ". ".join(rng.sample(_SPECIALTY_FINDINGS[label], 2)).capitalize() + "."
        plan = " ".join(rng.choice(_FILLER) for _ in range(rng.randint(4, 8)))
        texts.append(f"HISTORY: {history} FINDINGS: {findings} PLAN: {plan}")
        out_labels.append(label)
    order = list(range(n))
    rng.shuffle(order)
    return DocumentSet(
        [texts[i] for i in order], [out_labels[i] for i in order], [f"gen-{i}" for i in order]
    )


def generated_splits(n_train: int, n_test: int, seed: int = 0) -> dict[str, DocumentSet]:
    return {
        "train": generate_notes(n_train, seed=seed),
        "dev": generate_notes(max(n_test // 2, 4), seed=seed + 1),
        "test": generate_notes(n_test, seed=seed + 2),
    }

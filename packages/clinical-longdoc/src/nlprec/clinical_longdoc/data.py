"""Loaders for the real clinical tasks and the generated embedded default.

* MTSamples specialty: the fixed protocol of ``mtsamples/split.json`` (unique texts, single label,
  17 classes, stratified 1,010 / 217 / 217).
* COVID-QA: SQuAD json of 98 long articles, split *by article* so no test article is seen in
  training; answers whose ``answer_start`` does not point at the answer text are re-aligned to the
  nearest exact occurrence, or dropped, and both are counted in the logs.
* NCBI-disease: token<TAB>IOB2 tag, a blank line between sentences.
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


def load_mtsamples(data_root: str | Path) -> dict[str, DocumentSet]:
    """train/dev/test of the fixed split.json protocol."""
    folder = _require(Path(data_root) / MTSAMPLES_DIR, "MTSamples")
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


def covid_qa_examples(squad: dict) -> list[QAExample]:
    """Flatten SQuAD json; re-align mismatched answers, drop unmatchable ones (counts logged)."""
    examples, realigned, dropped = [], 0, 0
    for article in squad["data"]:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            article_id = str(paragraph.get("document_id", article.get("title", len(examples))))
            for qa in paragraph["qas"]:
                if qa.get("is_impossible") or not qa["answers"]:
                    dropped += 1
                    continue
                answer = qa["answers"][0]
                start = align_answer(context, answer["text"], int(answer["answer_start"]))
                if start is None:
                    dropped += 1
                    continue
                realigned += start != int(answer["answer_start"])
                examples.append(
                    QAExample(
                        qa["question"], context, answer["text"], start, article_id, str(qa["id"])
                    )
                )
    if realigned or dropped:
        logger.warning(
            "COVID-QA: %d answers re-aligned to the nearest exact match, %d dropped (text not in context)",
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


def load_covid_qa(data_root: str | Path, seed: int = 0) -> dict[str, list[QAExample]]:
    path = _require(Path(data_root) / COVID_QA_FILE, "COVID-QA")
    return split_by_article(covid_qa_examples(json.loads(path.read_text())), seed=seed)


# ---------------------------------------------------------------- NCBI-disease


def read_iob(path: Path) -> list[TaggedSentence]:
    sentences, words, tags = [], [], []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            if words:
                sentences.append(TaggedSentence(words, tags))
            words, tags = [], []
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise ValueError(f"{path}:{line_number}: expected 'token<TAB>tag', got {line!r}")
        words.append(parts[0])
        tags.append(parts[1])
    if words:
        sentences.append(TaggedSentence(words, tags))
    return sentences


def load_ncbi(data_root: str | Path) -> dict[str, list[TaggedSentence]]:
    folder = _require(Path(data_root) / NCBI_DIR, "NCBI-disease")
    files = {"train": "train.tsv", "dev": "devel.tsv", "test": "test.tsv"}
    return {name: read_iob(folder / file) for name, file in files.items()}


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

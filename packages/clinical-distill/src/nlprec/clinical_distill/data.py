"""Real clinical data from the shared data root: the adaptation corpus and the three evaluation tasks.

Evaluation text never enters the corpus: the corpus uses MTSamples, the MTS-Dialog training set,
the NCBI-disease training split, and only the NLI4CT trial reports that no dev or test statement cites.
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import zipfile
from pathlib import Path

from nlprec.core.datasets_io import load_splits, read_iob2, with_dev
from nlprec.core.errors import UserError

NLI_ZIP = "nli4ct/Complete_dataset.zip"
NLI_PREFIX = "Complete_dataset/"
MTS_FILES = {
    "train": "mts_dialog/MTS-Dialog-TrainingSet.csv",
    "dev": "mts_dialog/MTS-Dialog-ValidationSet.csv",
    "test": "mts_dialog/MTS-Dialog-TestSet-1-MEDIQA-Chat-2023.csv",
}
NCBI_FILES = {
    "train": "ncbi_disease/train.tsv",
    "dev": "ncbi_disease/devel.tsv",
    "test": "ncbi_disease/test.tsv",
}
NLI_FILES = {"train": "train.json", "dev": "dev.json", "test": "Gold_test.json"}


def require(root: Path, relative: str) -> Path:
    path = Path(root) / relative
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: expected the clinical data folder (../shared/data/clinical, set NLPREC_DATA)"
        )
    return path


def load_ncbi(root: Path, split: str) -> list[dict]:
    """NCBI-disease sentences: {"tokens": [...], "tags": [...]} (IOB2), one per blank-line block."""
    return read_iob2(require(root, NCBI_FILES[split]))


def load_mts_dialog(root: Path, split: str) -> list[dict]:
    """MTS-Dialog section-header classification: the dialogue is the input, the header the label."""
    with require(root, MTS_FILES[split]).open(newline="") as handle:
        return [
            {"text": row["dialogue"], "label": row["section_header"]}
            for row in csv.DictReader(handle)
        ]


def _nli_archive(root: Path) -> zipfile.ZipFile:
    return zipfile.ZipFile(require(root, NLI_ZIP))


def _trial_section(archive: zipfile.ZipFile, trial_id: str, section: str) -> list[str]:
    report = json.loads(archive.read(f"{NLI_PREFIX}CT json/{trial_id}.json"))
    return [line.strip() for line in report[section]]


def load_nli4ct(root: Path, split: str) -> list[dict]:
    """NLI4CT entailment: statement vs. the gold evidence lines of the cited trial section(s).

    Using the annotated evidence lines (as in the task's entailment-only setting) keeps the premise
    inside a 256-token window; the full sections are far longer.
    """
    with _nli_archive(root) as archive:
        statements = json.loads(archive.read(NLI_PREFIX + NLI_FILES[split]))
        examples = []
        for item in statements.values():
            lines = _trial_section(archive, item["Primary_id"], item["Section_id"])
            evidence = "primary: " + " ".join(lines[i] for i in item["Primary_evidence_index"])
            if item.get("Secondary_id"):
                lines = _trial_section(archive, item["Secondary_id"], item["Section_id"])
                evidence += " secondary: " + " ".join(
                    lines[i] for i in item["Secondary_evidence_index"]
                )
            examples.append(
                {"text": item["Statement"], "text_pair": evidence, "label": item["Label"]}
            )
    return examples


def _nli_training_only_reports(root: Path) -> list[str]:
    """Trial reports cited by training statements and by no dev or test statement, as plain text."""
    with _nli_archive(root) as archive:
        cited = {}
        for split, name in NLI_FILES.items():
            ids = set()
            for item in json.loads(archive.read(NLI_PREFIX + name)).values():
                ids.update(i for i in (item["Primary_id"], item.get("Secondary_id")) if i)
            cited[split] = ids
        keep = sorted(cited["train"] - cited["dev"] - cited["test"])
        texts = []
        for trial_id in keep:
            report = json.loads(archive.read(f"{NLI_PREFIX}CT json/{trial_id}.json"))
            texts.append(
                " ".join(
                    line.strip()
                    for key, value in report.items()
                    if isinstance(value, list)
                    for line in value
                )
            )
    return texts


def mtsamples_texts(root: Path) -> list[str]:
    with gzip.open(require(root, "mtsamples/mtsamples_dedup_multilabel.jsonl.gz"), "rt") as handle:
        return [json.loads(line)["text"] for line in handle]


def clinical_corpus(
    root: Path, heldout_fraction: float = 0.05, seed: int = 0
) -> dict[str, list[str]]:
    """{"train": texts for continued MLM / distillation, "heldout": MTSamples notes kept out of training}."""
    notes = mtsamples_texts(root)
    random.Random(seed).shuffle(notes)
    n_heldout = max(1, int(len(notes) * heldout_fraction))
    dialogues = [row["text"] for row in load_mts_dialog(root, "train")]
    with require(root, MTS_FILES["train"]).open(newline="") as handle:
        summaries = [row["section_text"] for row in csv.DictReader(handle)]
    abstracts = [" ".join(s["tokens"]) for s in load_ncbi(root, "train")]
    train = notes[n_heldout:] + dialogues + summaries + abstracts + _nli_training_only_reports(root)
    evaluation = evaluation_texts(root)
    return {"train": [t for t in train if t not in evaluation], "heldout": notes[:n_heldout]}


def evaluation_texts(root: Path) -> set[str]:
    """Every dev/test input text; a training text identical to one (short stock phrases such as
    "Noncontributory." recur across MTS-Dialog splits) is dropped from the corpus."""
    texts = set()
    for split in ("dev", "test"):
        texts.update(row["text"] for row in load_mts_dialog(root, split))
        with require(root, MTS_FILES[split]).open(newline="") as handle:
            texts.update(row["section_text"] for row in csv.DictReader(handle))
        texts.update(" ".join(s["tokens"]) for s in load_ncbi(root, split))
        texts.update(e["text"] for e in load_nli4ct(root, split))
    return texts


def general_corpus(data_root: Path, max_chars: int = 400_000) -> dict[str, list[str]]:
    """General-domain text for replay (WikiText-2 valid) and for measuring forgetting (WikiText-2 test)."""
    out = {}
    for split, name in (("replay", "valid.txt"), ("heldout", "test.txt")):
        text = require(data_root, f"text/wikitext-2/{name}").read_text()[:max_chars]
        out[split] = [
            p.strip()
            for p in text.split("\n")
            if len(p.strip()) > 80 and not p.strip().startswith("=")
        ]
    return out


def load_user_task(path: Path, task: str) -> tuple[dict[str, list[dict]], bool]:
    """A user's NER (IOB2 / datasets folder) or section (JSONL text/label / datasets folder) data;
    a missing dev split is carved from train (10 %). Returns (splits, whether dev was carved)."""
    splits = load_splits(path, "ner" if task == "ner" else "text")
    if "test" not in splits:
        raise UserError(f"{path}: no test split (test.tsv / test.jsonl or a datasets test split)")
    return with_dev(splits)


def load_tasks(root: Path) -> dict[str, dict[str, list[dict]]]:
    """{"ner"|"section"|"nli": {"train", "dev", "test"}} from the clinical folder."""
    return {
        "ner": {s: load_ncbi(root, s) for s in NCBI_FILES},
        "section": {s: load_mts_dialog(root, s) for s in MTS_FILES},
        "nli": {s: load_nli4ct(root, s) for s in NLI_FILES},
    }

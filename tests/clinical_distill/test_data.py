"""Real clinical data: loaders and the rule that no evaluation text enters the adaptation corpus."""

import csv

import pytest
from nlprec.clinical_distill import data
from nlprec.core.errors import UserError


def test_task_sizes(shared_data):
    tasks = data.load_tasks(shared_data / "clinical")
    sizes = {
        task: {split: len(rows) for split, rows in splits.items()} for task, splits in tasks.items()
    }
    assert sizes == {
        "ner": {"train": 5424, "dev": 923, "test": 940},
        "section": {"train": 1201, "dev": 100, "test": 200},
        "nli": {"train": 1700, "dev": 200, "test": 500},
    }
    first = tasks["ner"]["train"][0]
    assert len(first["tokens"]) == len(first["tags"]) and first["tokens"][0] == "Identification"
    assert {e["label"] for e in tasks["nli"]["test"]} == {"Entailment", "Contradiction"}
    assert all(e["text_pair"].startswith("primary: ") for e in tasks["nli"]["test"])


def test_corpus_holds_no_evaluation_text(shared_data):
    root = shared_data / "clinical"
    corpus = set(data.clinical_corpus(root)["train"])
    for split in ("dev", "test"):
        assert not corpus & {e["text"] for e in data.load_mts_dialog(root, split)}
        with (root / data.MTS_FILES[split]).open(newline="") as handle:
            assert not corpus & {row["section_text"] for row in csv.DictReader(handle)}
        assert not corpus & {" ".join(s["tokens"]) for s in data.load_ncbi(root, split)}
    test_trials = set()
    with data._nli_archive(root) as archive:
        import json

        for name in ("dev.json", "Gold_test.json"):
            for item in json.loads(archive.read(data.NLI_PREFIX + name)).values():
                test_trials.update(i for i in (item["Primary_id"], item.get("Secondary_id")) if i)
        for trial in list(test_trials)[:50]:
            report = json.loads(archive.read(f"{data.NLI_PREFIX}CT json/{trial}.json"))
            text = " ".join(
                line.strip() for v in report.values() if isinstance(v, list) for line in v
            )
            assert text not in corpus


def test_user_ner_folder_for_the_harness(tmp_path):
    """A user's IOB2 folder: devel.tsv is its dev split; without one, 10 % of train is carved off."""
    sentence = "Colon\tB-Disease\ncancer\tI-Disease\nrecurs\tO\n\n"
    for name in ("train", "devel", "test"):
        (tmp_path / f"{name}.tsv").write_text(sentence * 10)
    splits, carved = data.load_user_task(tmp_path, "ner")
    assert not carved and [len(splits[s]) for s in ("train", "dev", "test")] == [10, 10, 10]
    assert splits["dev"][0] == {
        "tokens": ["Colon", "cancer", "recurs"],
        "tags": ["B-Disease", "I-Disease", "O"],
    }
    (tmp_path / "devel.tsv").unlink()
    splits, carved = data.load_user_task(tmp_path, "ner")
    assert carved and [len(splits[s]) for s in ("train", "dev", "test")] == [9, 1, 10]


def test_user_text_folder_needs_a_test_split(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "pain", "label": "a"}\n')
    with pytest.raises(UserError, match="no test split"):
        data.load_user_task(tmp_path, "section")

"""User datasets: IOB2 folders (devel.tsv as dev), JSONL, SQuAD, datasets folders, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from nlprec.core.datasets_io import load_splits, read_iob2, with_dev
from nlprec.core.errors import UserError

IOB = "Colon\tB-Disease\ncancer\tI-Disease\nis\tO\n\nA\tO\nwell\tO\n"


def _iob_folder(root: Path, dev_name: str = "devel") -> Path:
    for name in ("train", dev_name, "test"):
        (root / f"{name}.tsv").write_text(IOB)
    return root


def test_iob2_folder_reads_devel_tsv_as_dev(tmp_path):
    splits = load_splits(_iob_folder(tmp_path), "ner")
    assert sorted(splits) == ["dev", "test", "train"]
    assert splits["dev"][0] == {
        "tokens": ["Colon", "cancer", "is"],
        "tags": ["B-Disease", "I-Disease", "O"],
    }
    assert splits["train"][1] == {"tokens": ["A", "well"], "tags": ["O", "O"]}


def test_iob2_last_column_is_the_tag(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("EU\tNNP\tB-ORG\nrejects\tVBZ\tO\n")
    assert read_iob2(path) == [{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}]


@pytest.mark.parametrize(
    ("content", "line", "what"),
    [("a\tO\nb\tDisease\n", 2, "not IOB2"), ("a\tO\n\nlonely-token\n", 3, "token<TAB>tag")],
)
def test_iob2_errors_name_file_and_line(tmp_path, content, line, what):
    (tmp_path / "train.tsv").write_text(content)
    with pytest.raises(UserError, match=rf"train\.tsv:{line}: .*{what}"):
        load_splits(tmp_path, "ner")


def test_jsonl_text_label(tmp_path):
    rows = [{"text": "chest pain", "label": "cardiology", "id": 7}, {"text": "seizure", "label": 3}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "test.jsonl").write_text(json.dumps(rows[0]) + "\n")
    splits = load_splits(tmp_path, "text")
    assert splits["train"] == [
        {"text": "chest pain", "id": 7, "label": "cardiology"},
        {"text": "seizure", "label": "3"},
    ]
    assert "dev" not in splits


def test_jsonl_missing_field_names_the_line(tmp_path):
    (tmp_path / "train.jsonl").write_text(
        '{"text": "a", "label": "x"}\n\n{"txt": "b", "label": "y"}\n'
    )
    with pytest.raises(UserError, match=r"train\.jsonl:3: expected an object with a string 'text'"):
        load_splits(tmp_path, "text")


def test_jsonl_bad_json_names_the_line(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": \n')
    with pytest.raises(UserError, match=r"train\.jsonl:2: not valid JSON"):
        load_splits(tmp_path, "text")


SQUAD = {
    "data": [
        {
            "title": "art-1",
            "paragraphs": [
                {
                    "context": "The virus binds ACE2 receptors.",
                    "qas": [
                        {
                            "id": "q1",
                            "question": "What does it bind?",
                            "answers": [{"text": "ACE2 receptors", "answer_start": 16}],
                        },
                        {
                            "id": "q2",
                            "question": "Unanswerable?",
                            "answers": [],
                            "is_impossible": True,
                        },
                    ],
                }
            ],
        }
    ]
}


def test_squad_file_is_all_train(tmp_path):
    path = tmp_path / "covid.json"
    path.write_text(json.dumps(SQUAD))
    splits = load_splits(path, "qa")
    assert splits == {
        "train": [
            {
                "id": "q1",
                "question": "What does it bind?",
                "context": "The virus binds ACE2 receptors.",
                "answer_text": "ACE2 receptors",
                "answer_start": 16,
                "title": "art-1",
            }
        ]
    }


def test_squad_errors(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('{"data": [\n  {"paragraphs": [}\n]}')
    with pytest.raises(UserError, match=r"train\.json:2: not valid JSON"):
        load_splits(path, "qa")
    path.write_text(json.dumps({"data": [{"paragraphs": [{"qas": []}]}]}))
    with pytest.raises(UserError, match=r"data\[0\]\.paragraphs\[0\]: expected 'context'"):
        load_splits(path, "qa")


def _save_to_disk_layout(root: Path, splits: dict[str, list[dict]], features: dict) -> Path:
    """The folder `DatasetDict.save_to_disk` writes: dataset_dict.json, per split an Arrow stream,
    state.json and dataset_info.json (datasets is not installed here; its layout is written by hand)."""
    (root / "dataset_dict.json").write_text(json.dumps({"splits": list(splits)}))
    for split, rows in splits.items():
        folder = root / split
        folder.mkdir()
        table = pa.Table.from_pylist(rows)
        with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink:
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
        (folder / "state.json").write_text(
            json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]})
        )
        (folder / "dataset_info.json").write_text(json.dumps({"features": features}))
    return root


def test_datasets_folder_with_class_labels(tmp_path):
    names = ["O", "B-Disease", "I-Disease"]
    features = {
        "tokens": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "List"},
        "ner_tags": {"feature": {"names": names, "_type": "ClassLabel"}, "_type": "List"},
    }
    rows = [{"tokens": ["Colon", "cancer", "."], "ner_tags": [1, 2, 0]}]
    folder = _save_to_disk_layout(
        tmp_path, {"train": rows, "validation": rows, "test": rows}, features
    )
    splits = load_splits(folder, "ner")
    assert sorted(splits) == ["dev", "test", "train"]
    assert splits["dev"] == [
        {"tokens": ["Colon", "cancer", "."], "tags": ["B-Disease", "I-Disease", "O"]}
    ]


def test_datasets_folder_squad_columns_and_missing_column(tmp_path):
    row = {
        "id": "q",
        "title": "t",
        "context": "abc def",
        "question": "?",
        "answers": {"text": ["def"], "answer_start": [4]},
    }
    folder = _save_to_disk_layout(tmp_path, {"train": [row]}, {})
    assert load_splits(folder, "qa")["train"][0]["answer_start"] == 4
    with pytest.raises(UserError, match=r"train: row 0: expected text and label"):
        load_splits(folder, "text")


def test_missing_train_and_missing_path(tmp_path):
    (tmp_path / "test.tsv").write_text(IOB)
    with pytest.raises(UserError, match="no training split"):
        load_splits(tmp_path, "ner")
    with pytest.raises(UserError, match="no such file or folder"):
        load_splits(tmp_path / "nope", "ner")


def test_with_dev_carves_disjoint_part_of_train():
    train = [{"tokens": [str(i)], "tags": ["O"]} for i in range(20)]
    splits, carved = with_dev({"train": train, "test": []}, fraction=0.2, seed=1)
    assert carved and len(splits["dev"]) == 4 and len(splits["train"]) == 16
    assert {r["tokens"][0] for r in splits["dev"]}.isdisjoint(
        r["tokens"][0] for r in splits["train"]
    )
    same, carved_again = with_dev(splits)
    assert same is splits and not carved_again


def test_with_dev_by_group_keeps_groups_whole():
    train = [{"title": f"a{i // 3}", "id": i} for i in range(30)]
    splits, _ = with_dev({"train": train}, fraction=0.2, seed=0, group="title")
    assert {r["title"] for r in splits["dev"]}.isdisjoint(r["title"] for r in splits["train"])
    assert len(splits["dev"]) == 6

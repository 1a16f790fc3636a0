"""`nlprec report`: tables from run records, generated Markdown sections, `--check`, the `make demo` table.

The last test runs `--check` on every committed Markdown file with generated sections, so `make test`
fails when a table in RESULTS.md or a README no longer matches the records it was generated from.
"""

import gzip
import json
from pathlib import Path

import pytest
from nlprec.core import report_sections
from nlprec.core.cli import main as nlprec_main
from nlprec.core.report import (
    base_metrics,
    demo_tables,
    format_cell,
    markdown_report,
    system_tables,
)
from nlprec.core.results import find_records, load_record, save_record

REPO = Path(__file__).resolve().parents[2]

STUDY_METRICS = {
    "knn.ndcg@10": 0.40, "knn.ndcg@10.std": 0.01, "knn.ndcg@10.ci95": 0.025, "knn.ndcg@10.n": 3,
    "pisa.ndcg@10": 0.45, "pisa.ndcg@10.std": 0.01, "pisa.ndcg@10.ci95": 0.02, "pisa.ndcg@10.n": 3,
    "pisa.recall@10": 0.6, "knn.recall@10": 0.5,
    "pisa.ndcg@10.delta_vs_knn": 0.05, "pisa.ndcg@10.p_vs_knn": 0.0123,
    "pisa.train_loss": 0.3, "data.n": 1000.0,
}
REPORT = {"metrics": ["ndcg@10", "recall@10"], "reference": "knn"}


def make_record(run_id="a1b2c3d4e5f6a7b8", started="2026-12-06T10:00:00Z", metrics=None, report=REPORT, pipeline="study-t"):
    return {
        "format": "nlprec-results/1", "run_id": run_id, "pipeline": pipeline, "experiment": "e", "status": "finished",
        "started": started, "seconds": 1.0, "seeds": [0, 1, 2], "report": report,
        "environment": {"git_commit": "0123456789abcdef", "git_dirty": False, "machine": "NVIDIA H100 80GB HBM3, 16 CPU cores",
                        "command": "nlprec run pipelines/study-t.yaml --no-track --export out/x", "versions": {}},
        "config": {"pipeline_yaml": "", "params": {}, "steps": {}},
        "metrics": metrics or STUDY_METRICS, "steps": {}, "unit_scores": [],
    }


def test_declared_table_rows_are_systems_with_intervals_and_p_values():
    [table] = system_tables(STUDY_METRICS, REPORT)
    assert [system for system, _ in table.rows] == ["knn", "pisa"]  # the reference first
    cells = dict(table.rows)
    assert format_cell(cells["pisa"]["ndcg@10"]) == "0.4500 ± 0.0200 (p=0.012)"
    assert format_cell(cells["knn"]["ndcg@10"]) == "0.4000 ± 0.0250"
    assert format_cell(cells["pisa"]["recall@10"]) == "0.6000"
    assert table.seeds == 3 and table.reference == "knn"


def test_a_metric_only_the_comparison_logged_shows_its_delta():
    metrics = {"ref.f1": 0.5, "long.f1": 0.9, "long.accuracy.delta_vs_ref": 0.31, "long.accuracy.p_vs_ref": 0.17}
    [table] = system_tables(metrics, {"metrics": ["f1", "accuracy"], "reference": "ref"})
    cells = dict(table.rows)
    assert format_cell(cells["long"]["accuracy"]) == "Δ +0.3100 (p=0.170)" and "accuracy" not in cells["ref"]


def test_derived_keys_are_not_metrics_but_a_real_n_is():
    dotted = {"ablation.s3.ppl": 30.0, "mohawk.ppl": 20.0, "mohawk.ppl.p_vs_ablation.s3": 0.01}
    assert base_metrics(dotted) == {"ablation.s3.ppl": 30.0, "mohawk.ppl": 20.0}
    [table] = system_tables(dotted, {"metrics": ["ppl"], "reference": "ablation.s3"})
    assert [s for s, _ in table.rows] == ["ablation.s3", "mohawk"] and dict(table.rows)["mohawk"]["ppl"].p == 0.01
    bases = base_metrics(STUDY_METRICS)
    assert "pisa.ndcg@10.p_vs_knn" not in bases and "pisa.ndcg@10.ci95" not in bases
    assert "data.n" in bases  # `data` is no metric, so `data.n` is not derived from one


def test_without_report_block_systems_sharing_metrics_share_a_table():
    metrics = {"breakpoint.accuracy": 0.9, "breakpoint.alignment_f1": 0.5, "flat.accuracy": 0.8,
               "flat.alignment_f1": 0.4, "teacher.perplexity": 38.86, "train.loss": 0.1}
    shared, others = system_tables(metrics, None)
    assert shared.metrics == ["accuracy", "alignment_f1"] and [s for s, _ in shared.rows] == ["breakpoint", "flat"]
    assert [s for s, _ in others.rows] == ["teacher.perplexity", "train.loss"]
    assert format_cell(dict(others.rows)["teacher.perplexity"]["value"]) == "38.8600"


def test_markdown_rows_say_where_each_figure_came_from():
    text = markdown_report([make_record()])
    lines = text.splitlines()
    assert lines[0] == "| system | ndcg@10 | recall@10 | seeds | run | commit | machine |"
    assert lines[2].startswith("| knn (reference) | 0.4000 ± 0.0250 | 0.5000 | 3 | `a1b2c3d4e5f6` | `0123456789` |")
    assert "NVIDIA H100 80GB HBM3" in lines[3] and "(p=0.012)" in lines[3]
    assert "paired test against knn" in text
    assert "`nlprec run pipelines/study-t.yaml --no-track --export out/x`" in text


def test_records_are_deterministic_and_found_by_selector(tmp_path):
    first = save_record(make_record(), tmp_path)
    data = first.read_bytes()
    assert save_record(make_record(), tmp_path).read_bytes() == data  # same run, same bytes
    assert json.loads(gzip.decompress(data))["run_id"] == "a1b2c3d4e5f6a7b8"
    save_record(make_record("ffff0000", started="2026-12-07T10:00:00Z"), tmp_path)
    assert [r["run_id"] for r in find_records(tmp_path, "study-t")] == ["ffff0000"]  # latest
    assert len(find_records(tmp_path, "study-t/*")) == 2
    assert find_records(tmp_path, "study-t/a1b2")[0] == load_record(first)
    with pytest.raises(Exception, match="no run records for 'other'"):
        find_records(tmp_path, "other")


def _document(tmp_path, spec="study-t"):
    save_record(make_record(), tmp_path / "results")
    doc = tmp_path / "RESULTS.md"
    doc.write_text(f"# Results\n\nIntro.\n\n<!-- nlprec-report: {spec} -->\nold table\n<!-- /nlprec-report -->\n\nAfter.\n")
    return doc


def test_write_then_check_passes_and_a_hand_edit_fails(tmp_path, capsys):
    doc = _document(tmp_path)
    assert nlprec_main(["report", "--check", str(doc)]) == 1
    assert "RESULTS.md:5: section `nlprec-report: study-t` differs" in capsys.readouterr().err
    assert nlprec_main(["report", "--write", str(doc)]) == 0
    text = doc.read_text()
    assert "old table" not in text and text.startswith("# Results\n\nIntro.\n") and text.endswith("\n\nAfter.\n")
    assert "| pisa | 0.4500 ± 0.0200 (p=0.012) |" in text and "results/study-t/a1b2c3d4e5f6a7b8.json.gz" in text
    assert nlprec_main(["report", "--check", str(doc)]) == 0
    doc.write_text(text.replace("0.4500 ± 0.0200", "0.4600 ± 0.0200"))  # a hand-typed "improvement"
    assert nlprec_main(["report", "--check", str(doc)]) == 1
    assert "study-t" in capsys.readouterr().err


def test_check_without_files_reads_every_marked_file_of_the_folder(tmp_path, monkeypatch):
    doc = _document(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(doc.read_text())
    doc.unlink()  # RESULTS.md at the root is not one of the default places; README.md is
    monkeypatch.chdir(tmp_path)
    assert nlprec_main(["report", "--check"]) == 1
    assert nlprec_main(["report", "--write", "README.md"]) == 0
    assert nlprec_main(["report", "--check"]) == 0


def test_check_fails_when_the_record_changes(tmp_path):
    doc = _document(tmp_path)
    nlprec_main(["report", "--write", str(doc)])
    save_record(make_record(metrics={**STUDY_METRICS, "pisa.ndcg@10": 0.41}), tmp_path / "results")
    assert nlprec_main(["report", "--check", str(doc)]) == 1


def test_spec_options_and_bad_specs(tmp_path, capsys):
    doc = _document(tmp_path, spec="study-t metrics=recall@10")
    nlprec_main(["report", "--write", str(doc)])
    assert "| system | recall@10 | run |" in doc.read_text()
    doc.write_text(doc.read_text().replace("metrics=recall@10", "colour=red"))
    assert nlprec_main(["report", "--check", str(doc)]) == 2
    assert "unknown option 'colour'" in capsys.readouterr().err


def test_steps_table_shows_what_each_step_cost(tmp_path):
    record = make_record()
    record["steps"] = {
        "load": {"status": "finished", "cached": True, "seconds": 0.25},
        "pisa": {"status": "finished", "cached": False, "seconds": 61.04,
                 "memory": {"peak_rss_mb": 1843.6}, "selected": {"lr": 0.01},
                 "trials": [{"seconds": 10.0}, {"seconds": 12.5}, {"seconds": 9.0}, {"seconds": 11.0}]},
    }
    record["config"]["pipeline_yaml"] = "steps:\n  - {name: pisa}\n  - {name: load}\n"
    save_record(record, tmp_path / "results")
    doc = tmp_path / "README.md"
    doc.write_text("<!-- nlprec-report: study-t table=steps -->\n<!-- /nlprec-report -->\n")
    assert nlprec_main(["report", "--write", str(doc)]) == 0
    text = doc.read_text()
    assert "| step | status | seconds | peak_rss_mb | validation trials | search seconds |" in text
    assert "| load | cached | 0.2 |  |  |  |" in text and "| pisa | finished | 61.0 | 1844 | 4 | 42.5 |" in text
    assert text.index("| pisa |") < text.index("| load |")  # the pipeline's order, not the record's
    assert "knn" not in text  # the systems table is not there
    doc.write_text(text.replace("table=steps", "table=plots"))
    with pytest.raises(Exception, match="unknown option 'table'"):
        report_sections.write_sections(doc)


def test_report_from_committed_records(tmp_path, capsys, monkeypatch):
    save_record(make_record(), tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    assert nlprec_main(["report", "--records", "study-t"]) == 0
    assert "| pisa | 0.4500 ± 0.0200 (p=0.012) | 0.6000 | 3 |" in capsys.readouterr().out


def test_demo_table_has_systems_as_rows_full_metric_names_and_the_run(tmp_path, capsys):
    summary = {"pipeline": "study-t", "status": "finished", "seconds": 3.0, "run_id": "abc123",
               "steps": {"a": {"cached": True}}, "report": {"metrics": ["ndcg@10", "recall@10"], "reference": "knn"},
               "metrics": STUDY_METRICS}
    (tmp_path / "study-t.json").write_text(json.dumps(summary))
    from nlprec.core.report import main

    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "★ knn (reference)" in out and "ndcg@10" in out and "recall@10" in out
    assert "0.4500 ± 0.0200 (p=0.012)" in out and "nlprec show abc123" in out and "make ui" in out
    assert len(demo_tables(tmp_path)) >= 3


def test_committed_tables_match_their_records():
    stale = [f"{path.relative_to(REPO)}: {section.spec}" for path in report_sections.marked_files(REPO)
             for section in report_sections.check_sections(path, REPO / "results")]
    assert not stale, f"generated sections differ from results/ (run `nlprec report --write FILE`): {stale}"


def test_markers_must_start_their_lines():
    text = "```\n    <!-- nlprec-report: x -->\n    <!-- /nlprec-report -->\n```\n<!-- nlprec-report: y -->\nold\n<!-- /nlprec-report -->\n"
    assert [(s.spec, s.body) for s in report_sections.sections(text)] == [("y", "old\n")]


def test_report_without_a_selection_is_a_user_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert nlprec_main(["report"]) == 2
    assert "nothing to report" in capsys.readouterr().err
    assert nlprec_main(["report", "--records", "nothing-here"]) == 2
    assert "no run records for 'nothing-here'" in capsys.readouterr().err

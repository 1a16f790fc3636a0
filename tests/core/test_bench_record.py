"""benchmarks/RESULTS.md sections are replaced in place and never clobber each other."""

from concurrent.futures import ThreadPoolExecutor

from nlprec.core.bench import markdown_table, record_section


def test_sections_replace_in_place(tmp_path):
    path = tmp_path / "RESULTS.md"
    record_section("alpha", "first", command="cmd a", path=path)
    record_section("beta", "second", command="cmd b", path=path)
    record_section("alpha", "updated", command="cmd a2", path=path)
    text = path.read_text()
    assert text.count("## alpha") == 1 and "updated" in text and "first" not in text
    assert "second" in text and "`cmd a2`" in text
    assert text.index("## alpha") < text.index("## beta")


def test_concurrent_writers_keep_every_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: record_section(f"s{i}", f"body {i}", command="c", path=path), range(12)))
    text = path.read_text()
    assert all(f"## s{i}\n" in text for i in range(12))


def test_markdown_table():
    table = markdown_table([{"model": "bm25", "ndcg@10": 0.66789}])
    assert table.splitlines()[2] == "| bm25 | 0.6679 |"

"""Passage splitting and FirstP / MaxP / SumP aggregation."""

import pytest
from nlprec.core.models import resolve
from nlprec.ranking.passages import aggregate_passage_scores, split_passages
from transformers import AutoTokenizer


def test_aggregations_by_hand():
    scored = [("a", 1, 0.9), ("a", 0, 0.2), ("a", 2, 0.4), ("b", 3, 0.5)]
    assert aggregate_passage_scores(scored, "maxp") == {"a": 0.9, "b": 0.5}
    assert aggregate_passage_scores(scored, "firstp") == {"a": 0.2, "b": 0.5}
    assert aggregate_passage_scores(scored, "sump") == pytest.approx({"a": 1.5, "b": 0.5})
    with pytest.raises(ValueError, match="unknown passage aggregation"):
        aggregate_passage_scores(scored, "meanp")


def test_split_passages_windows_and_stride():
    tokenizer = AutoTokenizer.from_pretrained(str(resolve("minilm")))
    text = " ".join(f"w{i}" for i in range(10))  # each "wN" is 2 word pieces -> 20 tokens
    n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    passages = split_passages(text, tokenizer, window=8, stride=4)
    assert passages[0] == text[: len(passages[0])]  # exact slices of the original text
    assert len(passages) == 1 + -(
        -(n_tokens - 8) // 4
    )  # windows until the last one reaches the end
    assert passages[-1].endswith("w9")
    assert split_passages("short text", tokenizer, window=8, stride=4) == ["short text"]
    with pytest.raises(ValueError, match="stride"):
        split_passages(text, tokenizer, window=4, stride=8)

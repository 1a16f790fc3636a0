"""Real-data loaders (skipped without ../shared/data), the MLM corpus's exclusions, continued MLM."""

from __future__ import annotations

import torch
from nlprec.clinical_longdoc.data import load_covid_qa, load_mtsamples, load_ncbi
from nlprec.clinical_longdoc.longify import longify
from nlprec.clinical_longdoc.mlm import (
    build_clinical_corpus,
    continue_mlm,
    masked_lm_for,
    pack_blocks,
)


def test_mtsamples_follows_split_json(shared_data):
    splits = load_mtsamples(shared_data)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [1010, 217, 217]
    assert len(set(splits["train"].labels)) == 17
    assert not set(splits["train"].texts) & set(splits["test"].texts)


def test_covid_qa_is_split_by_article(shared_data):
    splits = load_covid_qa(shared_data)
    articles = {name: {e.article_id for e in examples} for name, examples in splits.items()}
    assert not articles["train"] & articles["test"] and not articles["dev"] & articles["test"]
    assert sum(len(v) for v in splits.values()) == 1380  # every answer found in its context
    for example in splits["test"][:50]:
        start = example.answer_start
        assert example.context[start : start + len(example.answer_text)] == example.answer_text


def test_ncbi_sentences(shared_data):
    splits = load_ncbi(shared_data)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [5424, 923, 940]
    assert all(len(s.words) == len(s.tags) for s in splits["test"])


def test_mlm_corpus_holds_no_evaluation_text(shared_data):
    corpus = build_clinical_corpus(shared_data)
    assert all(corpus[source] for source in ("mtsamples", "mts_dialog", "nli4ct_trials"))
    texts = {t for source in corpus.values() for t in source}
    mtsamples = load_mtsamples(shared_data)
    assert not texts & set(mtsamples["dev"].texts + mtsamples["test"].texts)
    covid_contexts = {e.context for split in load_covid_qa(shared_data).values() for e in split}
    assert not texts & covid_contexts


def test_pack_blocks_wraps_each_block(tokenizer):
    blocks = pack_blocks(tokenizer, ["the patient is stable"] * 40, max_length=32)
    assert blocks and all(
        len(b) == 32 and b[0] == tokenizer.cls_token_id and b[-1] == tokenizer.sep_token_id
        for b in blocks
    )


def test_continued_mlm_lowers_the_loss(tiny_bert, tokenizer):
    encoder = longify(tiny_bert, max_length=128, attention="full")
    mlm = masked_lm_for(encoder)
    assert (
        mlm.get_output_embeddings().weight.data_ptr()
        == mlm.get_input_embeddings().weight.data_ptr()
    )
    texts = ["chest pain radiating to the left arm with shortness of breath"] * 30
    result = continue_mlm(
        encoder, tokenizer, texts, max_length=64, steps=16, batch_size=2, lr=5e-3, progress=False
    )
    assert result["steps"] == 16
    assert result["last_loss"] < result["first_loss"] - 1.0


def test_continued_mlm_runs_with_local_attention_and_checkpointing(tiny_bert, tokenizer):
    """The paper's setting: Longformer local attention, gradient checkpointing; weights are updated."""
    encoder = longify(tiny_bert, max_length=128, attention="longformer", attention_window=32)
    before = encoder.encoder.layer[0].attention.self.query.weight.clone()
    result = continue_mlm(
        encoder, tokenizer, ["no acute distress"] * 20, max_length=64, steps=2, progress=False
    )
    assert result["steps"] == 2
    assert not torch.equal(before, encoder.encoder.layer[0].attention.self.query.weight)


def test_continued_long_mlm_step_feeds_a_fine_tune_step(
    shared_data, tmp_path, tiny_bert, tokenizer
):
    """continue_long_mlm saves a long encoder; a fine-tune step references it as its source."""
    from nlprec.clinical_longdoc.steps import (
        FineTuneConfig,
        LongMLMConfig,
        TaskSplits,
        continue_long_mlm,
    )
    from nlprec.core.step import StepContext
    from transformers import AutoModel

    tiny_bert.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    ctx = StepContext("mlm", tmp_path / "out", {}, {}, seed=0, device="cpu")
    cfg = LongMLMConfig(data=str(shared_data), source=str(tmp_path / "tiny"), max_length=128)
    out = continue_long_mlm(ctx, cfg.model_copy(update={"steps": 2, "max_texts": 20}))
    assert AutoModel.from_pretrained(out.model_dir).config.max_position_embeddings >= 128
    assert ctx.metrics["mlm.steps"] == 2.0
    from nlprec.core.runner import StepReport, resolve
    from nlprec.core.spec import load_pipeline

    pipeline = load_pipeline(__file__.rsplit("/tests/", 1)[0] + "/pipelines/longdoc-mtsamples.yaml")
    long_mlm = next(step for step in pipeline.steps if step.spec.name == "long_mlm")
    assert set(long_mlm.spec.needs) == {"notes", "mlm"}  # both from the step's references
    notes = TaskSplits(train=tmp_path / "train.json", dev=tmp_path / "dev.json", rows={}, labels=["a"])
    outputs = {"mlm": out, "notes": notes}
    reports = {name: StepReport("finished") for name in outputs}
    cfg = long_mlm.config_with({}, lambda ref: resolve(ref, reports, outputs))
    assert isinstance(cfg, FineTuneConfig) and cfg.source == str(out.model_dir)
    assert cfg.data == notes

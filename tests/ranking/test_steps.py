"""Pipeline steps on a tiny generated corpus: held-out validation queries, the test part hidden
under `test`, evaluation on ctx.split, per-query scores, passage aggregation chosen on validation,
peak memory per step."""

import json

import pytest
from nlprec.core.step import StepContext
from nlprec.ranking import steps


def _ctx(tmp_path, name, inputs=None, split="test"):
    out = tmp_path / name
    out.mkdir(parents=True, exist_ok=True)
    return StepContext(name=name, output_dir=out, inputs=inputs or {}, params={}, seed=0, split=split)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("steps")
    cfg = steps.DemoDataConfig(n_docs=30, n_queries=40, validation_fraction=0.25)
    ctx = _ctx(tmp, "data")
    return steps.generate_demo(ctx, cfg), ctx.metrics


def test_validation_is_carved_from_train_and_test_sits_under_its_key(data):
    described, _ = data
    splits = json.loads(open(described["splits"]).read())
    test = json.loads(open(described["test"]["queries"]).read())
    train, val = set(splits["train"]), set(splits["validation"])
    assert train and val and test and not (train & val) and not ((train | val) & set(test))
    assert len(val) == round(0.25 * (len(train) + len(val)))
    assert described["test"]["queries"] not in json.dumps({k: v for k, v in described.items() if k != "test"})
    hidden = steps.Corpus({k: v for k, v in described.items() if k != "test"})
    assert "test" not in hidden.query_ids


def test_bm25_reports_on_ctx_split_with_unit_scores_and_hides_its_test_run(data, tmp_path):
    described, _ = data
    trial = _ctx(tmp_path, "bm25", {"data": {k: v for k, v in described.items() if k != "test"}}, "validation")
    out = steps.bm25_retrieve(trial, steps.BM25StepConfig(k=20))
    assert "test_run" not in out and set(out["runs"]) == {"train", "validation"}
    units = json.loads((trial.output_dir / "unit_scores" / "bm25.ndcg@10.json").read_text())
    assert units["split"] == "validation"
    assert set(units["scores"]) == set(json.loads(open(described["splits"]).read())["validation"])
    final = _ctx(tmp_path / "final", "bm25", {"data": described})
    out = steps.bm25_retrieve(final, steps.BM25StepConfig(k=20))
    assert "test_run" in out and "bm25.val_ndcg@10" in final.metrics
    units = json.loads((final.output_dir / "unit_scores" / "bm25.ndcg@10.json").read_text())
    assert set(units["scores"]) == set(json.loads(open(described["test"]["queries"]).read()))
    assert units["scores"] and final.metrics["bm25.ndcg@10"] == pytest.approx(
        sum(units["scores"].values()) / len(units["scores"])
    )


def test_dense_chooses_the_passage_aggregation_on_validation(data, tmp_path):
    described, _ = data
    ctx = _ctx(tmp_path, "dense", {"data": described})
    cfg = steps.DenseStepConfig(k=20, faiss={"kind": "flat"}, max_seq_length=16,
                                passages={"window": 8, "stride": 4})  # fmt: skip
    out = steps.dense_retrieve(ctx, cfg)
    trials = {how: ctx.metrics[f"dense.val_ndcg@10_{how}"] for how in ("firstp", "maxp", "sump")}
    assert out["aggregation"] == max(trials, key=lambda how: trials[how])


def test_seed_independent_steps_run_once_and_seeded_ones_per_seed():
    from nlprec.core.step import runs_across_seeds

    assert runs_across_seeds(steps.load_beir) and runs_across_seeds(steps.dense_pretrained)
    assert not runs_across_seeds(steps.dense_retrieve)  # a fine-tuned encoder differs by seed
    assert not runs_across_seeds(steps.finetune_biencoder) and not runs_across_seeds(steps.train_reranker)


def test_disabled_bi_encoder_fine_tuning_is_skipped_with_its_reason(data, tmp_path):
    from nlprec.core.step import StepSkipped

    described, _ = data
    cfg = steps.FinetuneBiencoderConfig(enabled=False, negatives={"system": "bm25", "runs": {}})
    with pytest.raises(StepSkipped, match="disabled"):
        steps.finetune_biencoder(_ctx(tmp_path, "finetune", {"data": described}), cfg)

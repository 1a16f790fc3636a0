"""Classification, NER and QA heads on tiny encoders: training runs, predictions round-trip, bad input."""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch
from nlprec.clinical_longdoc.classify import DocumentClassifierModel
from nlprec.clinical_longdoc.data import (
    DocumentSet,
    QAExample,
    TaggedSentence,
    align_answer,
    generate_notes,
    qa_examples,
)
from nlprec.clinical_longdoc.encoder import LongEncoder
from nlprec.clinical_longdoc.longify import longify
from nlprec.clinical_longdoc.metrics import entity_f1
from nlprec.clinical_longdoc.qa import QAModel, best_span, best_span_reference, slice_bounds
from nlprec.clinical_longdoc.tagging import TokenTaggerModel
from nlprec.clinical_longdoc.training import TrainSettings
from nlprec.core.datasets_io import read_squad

FAST = TrainSettings(epochs=1, lr=1e-3, max_tokens=2048, progress=False)


def _long(tiny_bert, kind="full", length=256):
    return LongEncoder(
        longify(tiny_bert, max_length=length, attention=kind, attention_window=32, block_size=16)
    )


@pytest.mark.parametrize("strategy", ["long", "chunk_max"])
def test_classifier_trains_saves_and_reloads(tiny_bert, tokenizer, tmp_path, strategy):
    notes = generate_notes(8, seed=0, filler_sentences=(2, 4))
    encoder = _long(tiny_bert) if strategy == "long" else LongEncoder(tiny_bert)
    model = DocumentClassifierModel(
        encoder,
        tokenizer,
        sorted(set(notes.labels)),
        strategy,
        max_length=64 if strategy != "long" else None,
    )
    history = model.fit(notes, notes.take(4), FAST)
    assert len(history["loss"]) == 1 and history["best_epoch"] == 0
    before = model.predict_proba(notes.texts[:3], FAST)
    model.save(tmp_path / "clf")
    after = DocumentClassifierModel.load(tmp_path / "clf").predict_proba(notes.texts[:3], FAST)
    assert torch.allclose(before, after, atol=1e-5)
    assert before.shape == (3, 4) and torch.allclose(before.sum(-1), torch.ones(3))


def test_classifier_keeps_the_best_dev_epoch_scored_as_evaluate_scores(tiny_bert, tokenizer):
    """transformers.Trainer scores dev each epoch (compute_metrics: macro-F1 on label names, an
    unseen dev label an error) and ends on the best epoch's weights."""
    notes = generate_notes(12, seed=0, filler_sentences=(2, 4))
    labels = sorted(set(notes.labels))
    dev = DocumentSet(notes.texts[:6], notes.labels[:5] + ["unseen"])
    model = DocumentClassifierModel(LongEncoder(tiny_bert), tokenizer, labels, "chunk_mean", 32)
    settings = TrainSettings(epochs=3, lr=5e-3, head_lr=5e-2, max_batch=4, progress=False, seed=1)
    history = model.fit(notes, dev, settings)
    assert len(history["dev"]) == 3 and len(history["loss"]) == 3
    assert history["dev"][history["best_epoch"]] == max(history["dev"])
    assert model.evaluate(dev, settings)["macro_f1"] == pytest.approx(max(history["dev"]))


def test_trainer_takes_the_steps_of_a_plain_adamw_loop(tiny_bert, tokenizer):
    """One full batch per epoch, no dropout: the weights after `transformers.Trainer` equal those of
    a plain loop with the same recipe (AdamW, encoder matrices decayed, vectors and head not, head
    learning rate, linear warm-up over 10 % then linear decay to 0, gradients clipped at 1)."""
    notes = generate_notes(8, seed=0, filler_sentences=(2, 4))
    labels = sorted(set(notes.labels))
    settings = TrainSettings(epochs=3, lr=1e-3, head_lr=1e-2, max_tokens=64 * 8, max_batch=8,
                             progress=False)  # fmt: skip

    def build() -> DocumentClassifierModel:
        torch.manual_seed(0)
        encoder = LongEncoder(copy.deepcopy(tiny_bert))
        return DocumentClassifierModel(encoder, tokenizer, labels, "head", 64, dropout=0.0)

    trained, reference = build(), build()
    start = {k: v.clone() for k, v in trained.network.state_dict().items()}
    trained.fit(notes, None, settings)
    network = reference.network
    encoder = [(n, p) for n, p in network.named_parameters() if n.startswith("encoder.")]
    optimizer = torch.optim.AdamW([
        {"params": [p for _, p in encoder if p.ndim >= 2], "lr": 1e-3, "weight_decay": 0.01},
        {"params": [p for _, p in encoder if p.ndim < 2], "lr": 1e-3, "weight_decay": 0.0},
        {"params": list(network.classifier.parameters()), "lr": 1e-2, "weight_decay": 0.0},
    ])  # fmt: skip
    rates = [1.0, 1.0, 0.5]  # warm-up of max(1, round(0.3)) = 1 step, then linear decay over 2
    batch = reference._collate(reference.segments(notes.texts))
    targets = torch.tensor([reference.label_to_id[y] for y in notes.labels])
    network.train()
    for rate in rates:
        for group in optimizer.param_groups:
            group["lr"] = rate * (1e-2 if group["params"][0] is network.classifier.weight else 1e-3)
        loss = torch.nn.functional.cross_entropy(reference.document_logits(batch), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    after = trained.network.state_dict()
    for name, value in network.state_dict().items():
        torch.testing.assert_close(after[name], value, rtol=1e-4, atol=1e-6, msg=name)
    assert max((after[k] - start[k]).abs().max().item() for k in start) > 1e-3


def test_classifier_scores_unseen_labels_as_errors(tiny_bert, tokenizer, caplog):
    model = DocumentClassifierModel(_long(tiny_bert), tokenizer, ["a", "b"])
    data = DocumentSet(["first note text", "second note text"], ["a", "zebra"])
    with caplog.at_level(logging.WARNING):
        scores = model.evaluate(data, FAST)
    assert "labels unseen in training ['zebra']" in caplog.text
    assert scores["accuracy"] <= 0.5
    with pytest.raises(ValueError, match="training labels not in the label list"):
        model.fit(data, None, FAST)


def test_tagger_labels_first_subwords_and_predicts_per_word(tiny_bert, tokenizer, tmp_path):
    sentences = [
        TaggedSentence(
            ["Adenomatous", "polyposis", "coli", "is", "hereditary"],
            ["B-Disease", "I-Disease", "I-Disease", "O", "O"],
        ),
        TaggedSentence(["No", "tumour"], ["O", "B-Disease"]),
    ]
    model = TokenTaggerModel(_long(tiny_bert), tokenizer, ["B-Disease", "I-Disease", "O"])
    items = model.encode(sentences)
    labelled = [i for i, label in enumerate(items[0]["labels"]) if label != -100]
    assert len(labelled) == 5  # one label per word, on its first sub-word
    assert [model.tags[items[0]["labels"][i]] for i in labelled] == sentences[0].tags
    model.fit(sentences, None, FAST)
    predicted = model.predict(sentences, FAST)
    assert [len(p) for p in predicted] == [5, 2]
    model.save(tmp_path / "tagger")
    assert TokenTaggerModel.load(tmp_path / "tagger").predict(sentences, FAST) == predicted


def test_tagger_keeps_the_best_dev_epoch(tiny_bert, tokenizer, tmp_path):
    """transformers.Trainer scores dev each epoch (seqeval F1) and ends on the best epoch's weights."""
    sentences = [
        TaggedSentence(["Acute", "asthma", "today"], ["B-Disease", "I-Disease", "O"]),
        TaggedSentence(["No", "fever", "or", "cough"], ["O", "B-Disease", "O", "B-Disease"]),
    ] * 4
    dev = sentences[:2]
    model = TokenTaggerModel(LongEncoder(tiny_bert), tokenizer, ["B-Disease", "I-Disease", "O"])
    logged = []
    settings = TrainSettings(epochs=3, lr=5e-3, head_lr=5e-2, max_batch=4, progress=False,
                             work_dir=str(tmp_path), seed=1,
                             log_metrics=lambda m, step=None: logged.append((step, m)))  # fmt: skip
    history = model.fit(sentences, dev, settings)
    assert len(history["dev"]) == 3 and len(history["loss"]) == 3
    assert history["dev"][history["best_epoch"]] == max(history["dev"])
    assert model.evaluate(dev, settings)["f1"] == pytest.approx(max(history["dev"]))
    assert list(tmp_path.iterdir()) == []  # checkpoints are removed after training
    curves = [(step, m["eval_f1"]) for step, m in logged if "eval_f1" in m]
    assert [f1 for _, f1 in curves] == history["dev"] and [s for s, _ in curves] == [2, 4, 6]
    # a spent time budget stops after the first step, which is still scored and kept
    settings.time_budget_s, settings.log_metrics = 0.0, None
    history = model.fit(sentences, dev, settings)
    assert history["stopped_early"] and len(history["dev"]) == 1 and history["best_epoch"] == 0


def test_entity_f1_is_strict_iob2():
    gold = [["B-Disease", "I-Disease", "O"]]
    assert entity_f1(gold, gold)["f1"] == 1.0
    assert entity_f1(gold, [["B-Disease", "O", "O"]])["f1"] == 0.0


def test_best_span_matches_reference():
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        start, end = torch.randn(40, generator=generator), torch.randn(40, generator=generator)
        valid = torch.rand(40, generator=generator) > 0.3
        fast = best_span(start, end, valid, max_tokens=7)
        reference = best_span_reference(start, end, valid, max_tokens=7)
        assert fast[1:] == reference[1:] and fast[0] == pytest.approx(reference[0], abs=1e-5)


def _qa_example() -> QAExample:
    context = (
        "Background text. " * 30
        + "The main cause is mother-to-child transmission. "
        + "More text. " * 30
    )
    answer = "mother-to-child transmission"
    return QAExample(
        "What is the main cause?", context, answer, context.index(answer), "doc1", "q1"
    )


def test_qa_windows_point_at_the_answer(tiny_bert, tokenizer):
    example = _qa_example()
    model = QAModel(LongEncoder(tiny_bert), tokenizer, max_length=64, stride=16)
    windows = model.windows([example], with_answers=True)
    assert len(windows) > 3  # a long context is cut into several windows
    positives = [w for w in windows if w.start > 0]
    assert positives
    for window in positives:
        span = example.context[window.offsets[window.start][0] : window.offsets[window.end][1]]
        assert span == example.answer_text


def test_qa_windows_cover_the_whole_context_with_the_stride_as_overlap(tiny_bert, tokenizer):
    """Every context token lies in some window, neighbours overlap by exactly ``stride`` tokens,
    and each window is [CLS] question [SEP] context-slice [SEP] within max_length; the answer is
    labelled in every window that holds it whole (the GPU machine's tokenizer once cut only two
    windows per question, leaving most answers unreachable)."""
    example = _qa_example()
    context_tokens = tokenizer(example.context, add_special_tokens=False)["input_ids"]
    model = QAModel(LongEncoder(tiny_bert), tokenizer, max_length=40, stride=8)
    windows = model.windows([example], with_answers=True)
    question = tokenizer(example.question, add_special_tokens=False)["input_ids"]
    room = 40 - len(question) - 3
    assert len(windows) == 1 + -(-(len(context_tokens) - room) // (room - 8))
    seen, previous = [], None
    for window in windows:
        assert len(window.input_ids) <= 40
        assert window.input_ids[: len(question) + 2] == [
            tokenizer.cls_token_id,
            *question,
            tokenizer.sep_token_id,
        ]
        assert window.input_ids[-1] == tokenizer.sep_token_id
        context = [i for i, o in enumerate(window.offsets) if o is not None]
        assert {window.token_type_ids[i] for i in context} == {1}
        assert {window.token_type_ids[i] for i in range(len(question) + 2)} == {0}
        spans = [window.offsets[i] for i in context]
        if previous is not None:
            assert spans[:8] == previous[-8:]  # stride tokens of overlap
        seen.extend(window.input_ids[i] for i in context[0 if previous is None else 8 :])
        previous = spans
    assert seen == context_tokens
    holding = [w for w in windows if w.start > 0]
    assert len(holding) >= 1 and all(w.end >= w.start for w in holding)


def test_qa_slice_bounds_and_too_small_windows(tiny_bert, tokenizer):
    assert slice_bounds(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    assert slice_bounds(3, 4, 1) == [(0, 3)]
    assert slice_bounds(0, 4, 1) == [(0, 0)]
    model = QAModel(LongEncoder(tiny_bert), tokenizer, max_length=16, stride=12)
    with pytest.raises(ValueError, match="stride"):
        model.windows([_qa_example()], with_answers=True)


def test_qa_trains_answers_and_reloads(tiny_bert, tokenizer, tmp_path):
    example = _qa_example()
    model = QAModel(_long(tiny_bert), tokenizer, max_length=256, stride=64, max_answer_tokens=16)
    model.fit([example], None, FAST)
    scores = model.evaluate([example], FAST)
    assert 0.0 <= scores["f1"] <= 1.0 and scores["lt512_n"] == 1
    model.save(tmp_path / "qa")
    assert QAModel.load(tmp_path / "qa").predict([example], FAST) == model.predict([example], FAST)


def test_qa_keeps_the_best_dev_epoch_scored_as_evaluate_scores(tiny_bert, tokenizer):
    """Dev F1 (compute_metrics: best span over each question's windows) is what evaluate gives."""
    example = _qa_example()
    other = QAExample("Where is it?", example.context, "More text.", example.context.rindex("More"),
                      "doc1", "q2")  # fmt: skip
    model = QAModel(LongEncoder(tiny_bert), tokenizer, max_length=48, stride=8, max_answer_tokens=8)
    settings = TrainSettings(epochs=2, lr=5e-3, head_lr=5e-2, max_tokens=48 * 8, progress=False)
    history = model.fit([example, other], [example, other], settings, negative_keep=0.5)
    assert len(history["dev"]) == 2 and history["windows"]["with_answer"] >= 2
    assert history["dev"][history["best_epoch"]] == max(history["dev"])
    assert model.evaluate([example, other], settings)["f1"] == pytest.approx(max(history["dev"]))


def test_answer_alignment_and_dropping(caplog, tmp_path):
    context = "alpha beta gamma beta"
    assert align_answer(context, "beta", 6) == 6
    assert align_answer(context, "beta", 15) == 17  # nearest exact occurrence
    assert align_answer(context, "delta", 0) is None
    squad = {
        "data": [
            {
                "paragraphs": [
                    {
                        "context": context,
                        "document_id": 7,
                        "qas": [
                            {
                                "question": "q?",
                                "id": 1,
                                "answers": [{"text": "gamma", "answer_start": 0}],
                            },
                            {
                                "question": "q?",
                                "id": 2,
                                "answers": [{"text": "delta", "answer_start": 0}],
                            },
                        ],
                    }
                ]
            }
        ]
    }
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad))
    with caplog.at_level(logging.WARNING):
        examples = qa_examples(read_squad(path))
    assert [e.answer_start for e in examples] == [11]
    assert examples[0].article_id == "7"
    assert "1 answers re-aligned" in caplog.text and "1 dropped" in caplog.text

"""The factorised-embedding (ALBERT layout) student: initialisation from the teacher, export, bad input."""

import pytest
import torch
from nlprec.clinical_distill.distill import DistillConfig, copied_layer_maps, distill
from nlprec.clinical_distill.export import export_hf, export_onnx, onnx_max_difference
from nlprec.clinical_distill.factorised import embedding_basis, evenly_spaced_layers, token_counts
from nlprec.clinical_distill.generated import clinical_notes
from nlprec.clinical_distill.models import encoder_parameters, load_masked_lm, load_tokenizer
from nlprec.clinical_distill.students import (
    StudentConfig,
    StudentError,
    build_student,
    student_layers,
)
from transformers import AlbertModel, AutoModel


def _cos(a, b):
    return float(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean())


def _batch(tokenizer):
    return tokenizer(
        clinical_notes(4, seed=3), padding=True, truncation=True, max_length=32, return_tensors="pt"
    )


def test_evenly_spaced_layers_end_with_the_last():
    assert evenly_spaced_layers(6, 2) == [2, 5]
    assert evenly_spaced_layers(6, 3) == [1, 3, 5]
    assert evenly_spaced_layers(4, 4) == [0, 1, 2, 3]


def test_layers_are_copied_and_the_student_is_smaller(teacher):
    student = build_student(
        teacher, StudentConfig(kind="factorised", layers=[1, 3], embedding_size=8)
    )
    assert student.config.model_type == "albert" and student.config.embedding_size == 8
    assert encoder_parameters(student) < encoder_parameters(teacher)
    bert, albert = (
        teacher.bert.encoder.layer[3],
        student.albert.encoder.albert_layer_groups[1].albert_layers[0],
    )
    assert torch.equal(albert.attention.query.weight, bert.attention.self.query.weight)
    assert torch.equal(albert.ffn.weight, bert.intermediate.dense.weight)
    assert torch.equal(albert.full_layer_layer_norm.bias, bert.output.LayerNorm.bias)
    assert (
        student.predictions.decoder.weight.data_ptr()
        == student.albert.embeddings.word_embeddings.weight.data_ptr()
    )


def test_full_width_embedding_reproduces_the_teacher(teacher, tokenizer):
    """With E = H nothing is truncated: the student's states equal the teacher's at the copied layers."""
    hidden = teacher.config.hidden_size
    student = build_student(
        teacher, StudentConfig(kind="factorised", layers=[0, 1, 2], embedding_size=hidden)
    ).eval()
    batch, teacher = _batch(tokenizer), teacher.eval()
    with torch.no_grad():
        t_out = teacher(**batch, output_hidden_states=True)
        s_out = student(**batch, output_hidden_states=True)
    keep = batch["attention_mask"].bool()
    assert _cos(s_out.hidden_states[0][keep], t_out.hidden_states[0][keep]) > 0.99
    assert _cos(s_out.hidden_states[3][keep], t_out.hidden_states[3][keep]) > 0.99


def test_corpus_counts_favour_frequent_tokens(teacher):
    """The frequency-weighted SVD reconstructs the tokens the corpus uses better than the plain one."""
    words = teacher.get_input_embeddings().weight.detach()
    frequent = torch.arange(1000, 1004)  # fewer than E: a weighted rank-E basis can hold them
    counts = torch.zeros(words.shape[0])
    counts[frequent] = 1e6

    def error(basis):
        x = words[frequent] - words[frequent].mean(1, keepdim=True)
        return float(((x - x @ basis @ basis.T) ** 2).sum())

    assert error(embedding_basis(teacher, 8, counts)) < 0.2 * error(embedding_basis(teacher, 8))


def test_token_counts(tokenizer):
    counts = token_counts(tokenizer, ["pain pain fever"], len(tokenizer))
    assert counts[tokenizer.convert_tokens_to_ids("pain")] == 2
    assert counts.sum() == len(tokenizer("pain pain fever", add_special_tokens=False)["input_ids"])


def test_saves_as_standard_model_and_exports_to_onnx(teacher, tokenizer, tmp_path):
    student = build_student(
        teacher, StudentConfig(kind="factorised", num_layers=2, embedding_size=8)
    ).eval()
    saved = export_hf(student, tokenizer, tmp_path / "student")
    encoder = AutoModel.from_pretrained(saved)
    assert isinstance(encoder, AlbertModel)
    assert load_tokenizer(str(saved)).get_vocab() == tokenizer.get_vocab()
    batch = _batch(tokenizer)
    with torch.no_grad():
        assert torch.allclose(
            encoder(**batch).last_hidden_state, student.albert(**batch).last_hidden_state, atol=1e-5
        )
    assert load_masked_lm(str(saved)).config.model_type == "albert"
    onnx_path = export_onnx(saved, tmp_path / "encoder.onnx")
    assert onnx_max_difference(saved, onnx_path, ["The patient denies chest pain."]) < 1e-4


def test_distillation_trains_a_factorised_student(teacher, tokenizer):
    cfg_student = StudentConfig(kind="factorised", num_layers=2, embedding_size=8)
    student = build_student(teacher, cfg_student)
    cfg = copied_layer_maps(
        DistillConfig(
            steps=12, lr=3e-3, warmup_ratio=0.0, attention_weight=1.0, batch_size=4, max_len=24
        ),
        student_layers(teacher, cfg_student),
    )
    assert cfg.layer_map == [(0, 0), (1, 2), (2, 4)] and cfg.attention_layer_map == [(1, 2), (2, 4)]
    history = distill(teacher, student, tokenizer, clinical_notes(16), cfg, show_progress=False)
    assert sum(h["total"] for h in history[-3:]) < sum(h["total"] for h in history[:3])


@pytest.mark.parametrize(
    "update, message",
    [
        ({"layers": [0, 4]}, "out of range"),
        ({"layers": [1, 1]}, "repeats"),
        ({"num_layers": 5}, "cannot pick 5 layers"),
        ({"embedding_size": 33}, "embedding_size 33"),
    ],
)
def test_bad_factorised_settings_are_rejected(teacher, update, message):
    with pytest.raises(StudentError, match=message):
        build_student(
            teacher,
            StudentConfig(kind="factorised", **{"num_layers": 2, "embedding_size": 8, **update}),
        )


def test_non_bert_teacher_is_rejected(teacher):
    albert_teacher = build_student(
        teacher, StudentConfig(kind="factorised", num_layers=2, embedding_size=8)
    )
    with pytest.raises(StudentError, match="copies BERT layers"):
        build_student(
            albert_teacher, StudentConfig(kind="factorised", num_layers=1, embedding_size=4)
        )

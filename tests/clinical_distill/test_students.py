"""Student construction and the checks that must fail before training."""

import pytest
import torch
from nlprec.clinical_distill.models import encoder_parameters
from nlprec.clinical_distill.students import (
    StudentConfig,
    StudentError,
    build_student,
    check_same_tokenizer,
    default_layer_subset,
)


def test_default_layer_subset_keeps_every_other_layer_ending_with_the_last():
    assert default_layer_subset(6) == [1, 3, 5]
    assert default_layer_subset(12) == [1, 3, 5, 7, 9, 11]
    assert default_layer_subset(5) == [0, 2, 4]


def test_layer_subset_copies_the_chosen_layers(teacher):
    student = build_student(teacher, StudentConfig(kind="layer_subset", layers=[0, 3]))
    assert student.config.num_hidden_layers == 2
    t_layers, s_layers = teacher.bert.encoder.layer, student.bert.encoder.layer
    for new, old in enumerate([0, 3]):
        for (name, p_s), (_, p_t) in zip(
            s_layers[new].named_parameters(), t_layers[old].named_parameters()
        ):
            assert torch.equal(p_s, p_t), name
    assert torch.equal(
        student.bert.embeddings.word_embeddings.weight,
        teacher.bert.embeddings.word_embeddings.weight,
    )
    assert (
        student.cls.predictions.decoder.weight.data_ptr()
        == student.bert.embeddings.word_embeddings.weight.data_ptr()
    )


def test_random_student_has_requested_shape_and_is_smaller(teacher):
    cfg = StudentConfig(
        kind="random", num_layers=2, hidden_size=16, num_heads=4, intermediate_size=32
    )
    student = build_student(teacher, cfg)
    assert (student.config.num_hidden_layers, student.config.hidden_size) == (2, 16)
    assert encoder_parameters(student) < encoder_parameters(teacher)


def test_teacher_svd_embeddings_keep_neighbourhoods(teacher):
    cfg = StudentConfig(
        kind="random",
        num_layers=2,
        hidden_size=16,
        num_heads=4,
        intermediate_size=32,
        embedding_init="teacher_svd",
    )
    student = build_student(teacher, cfg)
    e_t = teacher.get_input_embeddings().weight
    e_s = student.get_input_embeddings().weight
    ids = torch.arange(100, 140)
    sim_t = torch.nn.functional.cosine_similarity(e_t[ids, None], e_t[None, ids], dim=-1)
    sim_s = torch.nn.functional.cosine_similarity(e_s[ids, None], e_s[None, ids], dim=-1)
    rand = (
        build_student(teacher, cfg.model_copy(update={"embedding_init": "random"}))
        .get_input_embeddings()
        .weight
    )
    sim_r = torch.nn.functional.cosine_similarity(rand[ids, None], rand[None, ids], dim=-1)
    assert (
        torch.corrcoef(torch.stack([sim_t.flatten(), sim_s.flatten()]))[0, 1]
        > torch.corrcoef(torch.stack([sim_t.flatten(), sim_r.flatten()]))[0, 1]
    )


@pytest.mark.parametrize(
    "layers, message",
    [([0, 7], "out of range"), ([-1], "out of range"), ([1, 1], "repeats"), ([], "non-empty")],
)
def test_bad_layer_subsets_are_rejected(teacher, layers, message):
    with pytest.raises(StudentError, match=message):
        build_student(teacher, StudentConfig(kind="layer_subset", layers=layers))


def test_student_larger_than_teacher_is_rejected(teacher):
    cfg = StudentConfig(
        kind="random", num_layers=8, hidden_size=64, num_heads=4, intermediate_size=256
    )
    with pytest.raises(StudentError, match="more than the teacher"):
        build_student(teacher, cfg)


def test_vocabulary_mismatch_is_rejected(teacher, tmp_path, tokenizer, make_bert):
    other = make_bert(1000)
    other.save_pretrained(tmp_path)
    with pytest.raises(StudentError, match="vocabulary mismatch"):
        build_student(teacher, StudentConfig(kind="pretrained", path=str(tmp_path)))


def test_tokenizer_mismatch_is_rejected(tokenizer):
    smaller = type(tokenizer)(vocab=dict(list(tokenizer.get_vocab().items())[:500]))
    with pytest.raises(StudentError, match="vocabulary mismatch"):
        check_same_tokenizer(tokenizer, smaller)


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        StudentConfig(kind="random", hidden_size=100, num_heads=12)
    with pytest.raises(ValueError, match="path"):
        StudentConfig(kind="pretrained")

"""Student initialisation, hybrid exactness, recurrent generation, save/load and bad input."""

import pytest
import torch
from nlprec.mohawk.student import StudentLM, generate, load_student, save_student
from nlprec.mohawk.teacher import (
    TeacherConfig,
    build_phi_teacher,
    prepare_teacher,
    teacher_layer_io,
)
from nlprec.mohawk.transfer import check_compatible, init_student_from_teacher, student_config_for
from transformers import PhiConfig, PhiForCausalLM

VOCAB = 97


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    size = TeacherConfig(hidden_size=32, num_layers=3, num_heads=4, intermediate_size=64)
    return prepare_teacher(build_phi_teacher(size, VOCAB))


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, VOCAB, (2, 21), generator=torch.Generator().manual_seed(1))


def test_all_attention_hybrid_reproduces_the_teacher(teacher, ids):
    config = student_config_for(teacher.config, attention_layers=[0, 1, 2])
    hybrid = init_student_from_teacher(teacher, config).eval()
    with torch.no_grad():
        torch.testing.assert_close(hybrid(ids), teacher(ids).logits, atol=1e-5, rtol=1e-5)


def test_student_copies_teacher_weights_and_opens_the_gate(teacher, ids):
    student = init_student_from_teacher(teacher, student_config_for(teacher.config)).eval()
    torch.testing.assert_close(student.embed.weight, teacher.model.embed_tokens.weight)
    torch.testing.assert_close(student.lm_head.weight, teacher.lm_head.weight)
    torch.testing.assert_close(
        student.blocks[1].mlp.fc1.weight, teacher.model.layers[1].mlp.fc1.weight
    )
    mixer, attention = student.blocks[0].mixer, teacher.model.layers[0].self_attn
    inner = mixer.inner_size
    torch.testing.assert_close(mixer.in_proj.weight[:inner], attention.v_proj.weight)  # x ← V
    torch.testing.assert_close(
        mixer.in_proj.weight[inner : inner + mixer.qk_size], attention.k_proj.weight
    )
    torch.testing.assert_close(mixer.out_proj.weight, attention.dense.weight)
    with torch.no_grad():  # the gate is open: silu(z + z_bias) == 1 for every input
        hidden = student.blocks[0].norm(student.embed(ids))
        _, _, _, _, z, _ = mixer._split(hidden)
        gate = torch.nn.functional.silu(z + mixer.z_bias)
    torch.testing.assert_close(gate, torch.ones_like(gate))


def test_recurrent_generation_matches_full_forward(teacher, ids):
    for layers in ([], [1]):  # pure SSM and hybrid
        student = init_student_from_teacher(
            teacher, student_config_for(teacher.config, layers)
        ).eval()
        student.set_scan_backend("reference")
        tokens = generate(student, ids[:, :5], max_new_tokens=8, temperature=0)
        with torch.no_grad():
            logits = student(tokens)
        # greedy decoding through the recurrence picks the argmax of the parallel forward
        torch.testing.assert_close(logits[:, 4:-1].argmax(-1), tokens[:, 5:])


def test_save_and_load_round_trip(teacher, ids, tmp_path):
    student = init_student_from_teacher(teacher, student_config_for(teacher.config, [1])).eval()
    save_student(student, tmp_path / "s")
    loaded = load_student(tmp_path / "s")
    assert isinstance(loaded, StudentLM) and loaded.config == student.config
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), student(ids))
    with pytest.raises(FileNotFoundError, match="not a saved student"):
        load_student(tmp_path)


def test_teacher_layer_io_shapes(teacher, ids):
    inputs, outputs, attentions, logits = teacher_layer_io(teacher, ids)
    assert len(inputs) == len(outputs) == len(attentions) == 3
    assert attentions[0].shape == (2, 4, 21, 21)
    torch.testing.assert_close(attentions[0].sum(-1), torch.ones(2, 4, 21))
    torch.testing.assert_close(inputs[1], outputs[0])  # layer 1 reads what layer 0 wrote


def test_sdpa_teacher_is_switched_to_eager():
    config = PhiConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
    )
    model = PhiForCausalLM._from_config(config, attn_implementation="sdpa")
    assert prepare_teacher(model).config._attn_implementation == "eager"


def test_dimension_mismatch_is_a_clear_error(teacher):
    config = student_config_for(teacher.config).model_copy(update={"num_heads": 8, "head_dim": 4})
    with pytest.raises(ValueError, match="num_heads: student 8 vs teacher 4"):
        check_compatible(config, teacher.config)
    with pytest.raises(ValueError, match="attention_layers"):
        student_config_for(teacher.config, attention_layers=[5])


def test_cli_generates_from_a_saved_student(teacher, tmp_path, capsys):
    from nlprec.mohawk.cli import main
    from nlprec.mohawk.data import train_tokenizer

    tokenizer = train_tokenizer("def f(x):\n    return x + 1\n" * 50, 280)
    config = student_config_for(teacher.config).model_copy(update={"vocab_size": len(tokenizer)})
    save_student(StudentLM(config).eval(), tmp_path / "s", tokenizer)
    assert (
        main(
            ["generate", "--model", str(tmp_path / "s"), "--prompt", "def", "--max-new-tokens", "5"]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("def")
    assert main(["generate", "--model", str(tmp_path), "--prompt", "def"]) == 2

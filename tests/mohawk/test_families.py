"""GPT-2, Llama and Hugging Face Phi teachers (tiny random configs built here, no download):
the student mirrors each block, copies what it should, runs all three stages, and bad teachers or
mismatched configs fail before training."""

import pytest
import torch
from nlprec.mohawk.evaluate import hf_logits, mean_kl
from nlprec.mohawk.stages import (
    alignment_report,
    stage1_matrix_orientation,
    stage2_hidden_alignment,
    stage3_distillation,
)
from nlprec.mohawk.student import generate, load_student, save_student
from nlprec.mohawk.teacher import TeacherConfig, build_teacher, load_teacher, prepare_teacher
from nlprec.mohawk.training import OptimConfig
from nlprec.mohawk.transfer import check_compatible, init_student_from_teacher, student_config_for
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PhiConfig,
    PhiForCausalLM,
)

VOCAB = 67


def gpt2():
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4,
        bos_token_id=0, eos_token_id=0, initializer_range=0.2,
    )  # fmt: skip
    return GPT2LMHeadModel(config)


def llama():  # grouped-query attention: 4 query heads share 2 key/value heads
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, attention_bias=True, max_position_embeddings=64,
        initializer_range=0.2,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def phi():
    config = PhiConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, partial_rotary_factor=0.5, max_position_embeddings=64,
        initializer_range=0.2,
    )  # fmt: skip
    return PhiForCausalLM(config)


FAMILIES = {"gpt2": gpt2, "llama": llama, "phi": phi}


def make_teacher(family: str):
    torch.manual_seed(0)
    model = FAMILIES[family]()
    with torch.no_grad():  # random biases and norm gains, so copying them is visible
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln_" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


@pytest.fixture(scope="module", params=list(FAMILIES))
def teacher(request):
    model = make_teacher(request.param)
    assert model.config._attn_implementation != "eager"  # built as sdpa...
    model = prepare_teacher(model)
    assert model.config._attn_implementation == "eager"  # ...and switched
    return model


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))


def test_all_attention_hybrid_reproduces_the_teacher(teacher, ids):
    # Every copied piece (embeddings, positions, norms, MLP, attention, head) and the block layout
    # must be right for the logits to match.
    layers = list(range(teacher.config.num_hidden_layers))
    hybrid = init_student_from_teacher(teacher, student_config_for(teacher.config, layers)).eval()
    with torch.no_grad():
        torch.testing.assert_close(hybrid(ids), teacher(ids).logits, atol=1e-5, rtol=1e-5)


def test_ssd_heads_take_q_k_v_o(teacher):
    student = init_student_from_teacher(teacher, student_config_for(teacher.config)).eval()
    mixer = student.blocks[1].mixer
    if teacher.config.model_type == "gpt2":
        attention = teacher.transformer.h[1].attn
        q, k, v = attention.c_attn.weight.t().chunk(3)
        o = attention.c_proj.weight.t()
        torch.testing.assert_close(student.positions.weight, teacher.transformer.wpe.weight)
        torch.testing.assert_close(
            student.blocks[1].mlp.fc1.weight, teacher.transformer.h[1].mlp.c_fc.weight.t()
        )
        torch.testing.assert_close(student.blocks[1].norm2.bias, teacher.transformer.h[1].ln_2.bias)
    else:
        attention = teacher.model.layers[1].self_attn
        q, k, v = attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight
        o = (attention.dense if hasattr(attention, "dense") else attention.o_proj).weight
    if teacher.config.model_type == "llama":
        layer = teacher.model.layers[1]
        torch.testing.assert_close(student.blocks[1].mlp.up_proj.weight, layer.mlp.up_proj.weight)
        torch.testing.assert_close(
            student.blocks[1].norm2.weight, layer.post_attention_layernorm.weight
        )
        assert isinstance(student.final_norm, torch.nn.RMSNorm)
    inner, groups = mixer.inner_size, mixer.num_groups
    assert groups == getattr(teacher.config, "num_key_value_heads", None) or mixer.num_heads
    weight = mixer.in_proj.weight
    torch.testing.assert_close(weight[inner : inner + mixer.b_size], k)  # B ← K (one group a head)
    torch.testing.assert_close(weight[inner + mixer.b_size :][: mixer.qk_size], q)  # C ← Q
    torch.testing.assert_close(mixer.out_proj.weight, o)
    # x ← V: query head h reads the V of its key/value group h // (heads / groups)
    head_dim, per_group = mixer.head_dim, mixer.num_heads // groups
    for h in range(mixer.num_heads):
        group = h // per_group
        torch.testing.assert_close(
            weight[h * head_dim : (h + 1) * head_dim], v[group * head_dim : (group + 1) * head_dim]
        )


def test_three_stages_reduce_their_losses(teacher):
    student = init_student_from_teacher(teacher, student_config_for(teacher.config))
    tokens = torch.randint(0, VOCAB, (3000,), generator=torch.Generator().manual_seed(2))
    probe = tokens[:64].view(2, 32)
    optim = OptimConfig(lr=1e-2, batch_size=4, seq_len=32, warmup_fraction=0.0, decay_fraction=0.0)
    budget = 4 * 32 * 6  # six steps per stage
    before = alignment_report(student, teacher, probe)
    stage1_matrix_orientation(student, teacher, tokens, budget, optim, seed=0)
    after1 = alignment_report(student, teacher, probe)
    slower = optim.model_copy(update={"lr": 3e-3})
    stage2_hidden_alignment(student, teacher, tokens, budget, slower, seed=1)
    after2 = alignment_report(student, teacher, probe)
    assert sum(after1["matrix_dist"].values()) < sum(before["matrix_dist"].values())
    assert sum(after2["hidden_dist"].values()) < sum(after1["hidden_dist"].values())
    kl_before = mean_kl(hf_logits(teacher), student, probe, 2, "cpu")
    losses = stage3_distillation(student, teacher, tokens, budget, slower, 1.0, seed=3)
    assert len(losses) == 6
    assert mean_kl(hf_logits(teacher), student, probe, 2, "cpu") < kl_before


def test_decoding_follows_the_parallel_forward(teacher, ids):
    # learned positions (GPT-2) must advance with the recurrent state
    student = init_student_from_teacher(teacher, student_config_for(teacher.config, [0])).eval()
    with torch.no_grad():
        full = student(ids)
        logits, caches = student.prefill(ids[:, :10])
        stepped = [logits]
        for t in range(10, ids.size(1)):
            logits, caches = student.decode(ids[:, t : t + 1], caches)
            stepped.append(logits)
    torch.testing.assert_close(torch.cat(stepped, 1)[:, :-1], full[:, :-1], atol=1e-5, rtol=1e-5)


def test_learned_positions_limit_the_length():
    teacher = prepare_teacher(make_teacher("gpt2"))
    student = init_student_from_teacher(teacher, student_config_for(teacher.config)).eval()
    with pytest.raises(ValueError, match="past the 64 learned positions"):
        generate(student, torch.zeros(1, 60, dtype=torch.long), max_new_tokens=10)


def test_saved_teacher_and_student_round_trip(tmp_path, ids):
    make_teacher("llama").save_pretrained(tmp_path / "teacher")
    teacher = load_teacher(tmp_path / "teacher")
    student = init_student_from_teacher(teacher, student_config_for(teacher.config, [1])).eval()
    save_student(student, tmp_path / "student")
    loaded = load_student(tmp_path / "student")
    assert loaded.config == student.config and loaded.config.norm == "rmsnorm"
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), student(ids))


def test_mismatched_student_is_refused_before_training():
    teacher = prepare_teacher(make_teacher("llama"))
    config = student_config_for(teacher.config)
    wrong = config.model_copy(update={"num_kv_heads": 4, "block": "parallel", "mlp": "plain"})
    with pytest.raises(ValueError) as err:
        check_compatible(wrong, teacher.config)
    for field in ("num_kv_heads: student 4 vs teacher 2", "block:", "mlp:"):
        assert field in str(err.value)
    with pytest.raises(ValueError, match="disagree"):
        init_student_from_teacher(teacher, wrong)


def test_unsupported_teachers_are_refused_clearly():
    mistral = MistralForCausalLM(
        MistralConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
        )  # fmt: skip
    )
    with pytest.raises(ValueError, match="family 'mistral' is not supported.*'gpt2', 'llama'"):
        prepare_teacher(mistral)
    scaled = GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=4, scale_attn_by_inverse_layer_idx=True
    )
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx"):
        student_config_for(scaled)
    yarn = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4},
    )  # fmt: skip
    student_config_for(yarn)  # SSD layers use no RoPE: fine
    with pytest.raises(ValueError, match="RoPE variant 'linear'"):
        student_config_for(yarn, attention_layers=[1])
    qk_norm = PhiConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, qk_layernorm=True,
    )  # fmt: skip
    with pytest.raises(ValueError, match="qk_layernorm"):
        student_config_for(qk_norm)


@pytest.mark.parametrize("family", ["phi", "gpt2", "llama"])
def test_teachers_of_every_family_are_built_from_a_config(family):
    kv_heads = 2 if family == "llama" else None
    size = TeacherConfig(
        family=family, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=kv_heads,
        intermediate_size=48, max_position_embeddings=64,
    )  # fmt: skip
    teacher = build_teacher(size, VOCAB)
    assert teacher.config.model_type == family
    assert teacher.config._attn_implementation == "eager"
    config = student_config_for(teacher.config)
    assert (config.family, config.num_layers, config.intermediate_size) == (family, 2, 48)
    assert config.kv_heads == (kv_heads or 4)
    with pytest.raises(ValueError, match="num_kv_heads is for llama teachers"):
        TeacherConfig(family="gpt2", hidden_size=32, num_heads=4, num_kv_heads=2)
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        TeacherConfig(family=family, hidden_size=30, num_heads=4)

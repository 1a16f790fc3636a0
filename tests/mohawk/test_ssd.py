"""The three SSD computations (chunked scan, recurrence, materialised matrix) agree to 1e-5."""

import pytest
import torch
from nlprec.mohawk.mixer import OPEN_GATE_BIAS, SSDMixer
from nlprec.mohawk.ssd import (
    segsum,
    ssd_by_matrix,
    ssd_chunked_scan,
    ssd_mixing_matrix,
    ssd_recurrent_scan,
)

TOL = 1e-5


def random_inputs(batch=2, length=37, heads=3, head_dim=5, state=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, heads, head_dim, generator=g)
    log_decay = -torch.nn.functional.softplus(torch.randn(batch, length, heads, generator=g))
    B = torch.randn(batch, length, heads, state, generator=g) / state**0.5
    C = torch.randn(batch, length, heads, state, generator=g) / state**0.5
    return x, log_decay, B, C


def test_segsum_matches_definition():
    ell = -torch.rand(6)
    s = segsum(ell)
    for i in range(6):
        for j in range(6):
            expected = ell[j + 1 : i + 1].sum() if j <= i else float("-inf")
            assert s[i, j] == pytest.approx(float(expected), abs=1e-6)


def test_segsum_is_stable_on_long_sequences():
    # A difference of cumulative sums would lose everything here; the masked cumsum does not.
    ell = torch.full((4096,), -0.5)
    s = segsum(ell)
    assert torch.exp(s).diagonal().eq(1).all()
    assert s[4095, 4094] == pytest.approx(-0.5)


@pytest.mark.parametrize("chunk_size", [1, 8, 16, 64])
def test_chunked_scan_recurrence_and_matrix_agree(chunk_size):
    x, log_decay, B, C = random_inputs()
    y_chunk, state_chunk = ssd_chunked_scan(x, log_decay, B, C, chunk_size=chunk_size)
    y_rec, state_rec = ssd_recurrent_scan(x, log_decay, B, C)
    y_mat = ssd_by_matrix(x, log_decay, B, C)
    torch.testing.assert_close(y_chunk, y_rec, atol=TOL, rtol=TOL)
    torch.testing.assert_close(y_mat, y_rec, atol=TOL, rtol=TOL)
    torch.testing.assert_close(state_chunk, state_rec, atol=TOL, rtol=TOL)


def test_chunked_scan_continues_from_a_state():
    x, log_decay, B, C = random_inputs(length=40)
    y_full, state_full = ssd_chunked_scan(x, log_decay, B, C, chunk_size=8)
    y_a, state_a = ssd_chunked_scan(x[:, :23], log_decay[:, :23], B[:, :23], C[:, :23], 8)
    y_b, state_b = ssd_chunked_scan(
        x[:, 23:], log_decay[:, 23:], B[:, 23:], C[:, 23:], 8, initial_state=state_a
    )
    torch.testing.assert_close(torch.cat([y_a, y_b], 1), y_full, atol=TOL, rtol=TOL)
    torch.testing.assert_close(state_b, state_full, atol=TOL, rtol=TOL)


def test_mixing_matrix_is_causal_and_unit_decay_on_diagonal():
    x, log_decay, B, C = random_inputs(length=9)
    M = ssd_mixing_matrix(log_decay, B, C)
    assert M.shape == (2, 3, 9, 9)
    assert torch.triu(M, diagonal=1).abs().max() == 0
    torch.testing.assert_close(M.diagonal(dim1=-2, dim2=-1), torch.einsum("blhn,blhn->bhl", C, B))


def make_mixer(seed=0, normalized=False):
    torch.manual_seed(seed)
    mixer = SSDMixer(
        hidden_size=12,
        num_heads=3,
        head_dim=4,
        state_size=5,
        conv_kernel=4,
        chunk_size=8,
        normalized=normalized,
    )
    with torch.no_grad():
        mixer.D.uniform_(0.5, 1.5)
        mixer.z_bias.normal_()
    mixer.scan_backend = "reference"
    return mixer


@pytest.mark.parametrize("normalized", [False, True])
def test_mixer_three_computations_agree(normalized):
    mixer = make_mixer(normalized=normalized)
    u = torch.randn(2, 29, 12)
    with torch.no_grad():
        y_scan, final = mixer(u)
        y_matrix = mixer.forward_by_matrix(u)
        state, steps = None, []
        for t in range(u.size(1)):
            y_t, state = mixer.step(u[:, t : t + 1], state)
            steps.append(y_t)
        y_steps = torch.cat(steps, dim=1)
    torch.testing.assert_close(y_scan, y_steps, atol=TOL, rtol=TOL)
    torch.testing.assert_close(y_matrix, y_steps, atol=TOL, rtol=TOL)
    torch.testing.assert_close(final.ssm, state.ssm, atol=TOL, rtol=TOL)
    torch.testing.assert_close(final.conv, state.conv, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("normalized", [False, True])
def test_mixer_prefill_then_steps_equals_full_scan(normalized):
    mixer = make_mixer(1, normalized)
    u = torch.randn(1, 20, 12)
    with torch.no_grad():
        y_full, _ = mixer(u)
        y_prefix, state = mixer(u[:, :13])
        tail = []
        for t in range(13, 20):
            y_t, state = mixer.step(u[:, t : t + 1], state)
            tail.append(y_t)
    torch.testing.assert_close(torch.cat([y_prefix, *tail], 1), y_full, atol=TOL, rtol=TOL)


def test_mixing_matrix_includes_D_on_the_diagonal():
    mixer = make_mixer(2)
    u = torch.randn(1, 6, 12)
    with torch.no_grad():
        x, log_decay, B, C, _, _ = mixer._split(u)
        M = mixer.mixing_matrix(u)
        without_d = ssd_mixing_matrix(log_decay, B, C)
    diff = (M - without_d).diagonal(dim1=-2, dim2=-1)  # (b, h, l)
    torch.testing.assert_close(diff, mixer.D[None, :, None].expand_as(diff).detach())


def test_normalized_mixing_matrix_is_row_stochastic_before_D():
    """Like a softmax attention matrix: causal, non-negative, rows summing to one (then + D·I)."""
    mixer = make_mixer(4, normalized=True)
    u = torch.randn(2, 11, 12)
    with torch.no_grad():
        M = mixer.mixing_matrix(u) - mixer.D[:, None, None] * torch.eye(11)
    assert M.min() >= 0 and torch.triu(M, diagonal=1).abs().max() == 0
    torch.testing.assert_close(M.sum(-1), torch.ones(2, 3, 11))
    assert mixer.empty_state(2, u).ssm.shape == (2, 3, 4 + 1, 5)  # x channels and the row sums


def test_open_gate_bias_gives_unit_gate():
    gate = torch.nn.functional.silu(torch.tensor(OPEN_GATE_BIAS, dtype=torch.float64))
    assert gate.item() == pytest.approx(1.0, abs=1e-12)


def test_states_do_not_keep_the_sequence_alive():
    # A view into the padded input or the per-chunk states would make memory grow with length.
    mixer = make_mixer(3)
    with torch.no_grad():
        _, state = mixer(torch.randn(1, 200, 12))
    for tensor in (state.conv, state.ssm):
        assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()

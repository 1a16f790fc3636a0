"""Each vectorised loss agrees with its loop reference; identical inputs give zero loss."""

import pytest
import torch
from nlprec.clinical_distill import losses


def _mask(b: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, length + 1, (b,), generator=g)
    return (torch.arange(length)[None, :] < lengths[:, None]).long()  # (B, L), padding at the end


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_soft_target_kl_matches_reference(temperature):
    torch.manual_seed(0)
    s, t = torch.randn(3, 7, 50), torch.randn(3, 7, 50)
    masked = torch.rand(3, 7) < 0.4
    masked[0, 0] = True
    fast = losses.soft_target_kl(s, t, masked, temperature)
    assert torch.allclose(
        fast, losses.soft_target_kl_reference(s, t, masked, temperature), atol=1e-5
    )
    assert float(losses.soft_target_kl(t, t, masked, temperature)) == pytest.approx(0.0, abs=1e-6)
    assert float(fast) > 0


def test_soft_target_kl_without_masked_positions_is_zero_with_gradient():
    s = torch.randn(2, 4, 10, requires_grad=True)
    loss = losses.soft_target_kl(s, torch.randn(2, 4, 10), torch.zeros(2, 4, dtype=torch.bool), 2.0)
    loss.backward()
    assert float(loss.detach()) == 0.0


@pytest.mark.parametrize("kind", ["cosine", "mse"])
def test_hidden_state_loss_matches_reference(kind):
    torch.manual_seed(1)
    s, t = torch.randn(3, 6, 16), torch.randn(3, 6, 16)
    mask = _mask(3, 6)
    fast = losses.hidden_state_loss(s, t, mask, kind)
    assert torch.allclose(fast, losses.hidden_state_loss_reference(s, t, mask, kind), atol=1e-5)
    assert float(losses.hidden_state_loss(t, t, mask, kind)) == pytest.approx(0.0, abs=1e-5)


def test_hidden_state_loss_ignores_padding():
    s, t = torch.randn(1, 4, 8), torch.randn(1, 4, 8)
    mask = torch.tensor([[1, 1, 0, 0]])
    changed = s.clone()
    changed[0, 2:] = 100.0
    assert torch.allclose(
        losses.hidden_state_loss(s, t, mask, "mse"),
        losses.hidden_state_loss(changed, t, mask, "mse"),
    )


def _attention(b, h, length, mask, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(b, h, length, length, generator=g)
    scores = scores.masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
    return scores.softmax(-1)  # (B, H, L, L), zero on padded keys like BERT's


@pytest.mark.parametrize("kind", ["mse", "kl"])
@pytest.mark.parametrize("student_heads", [4, 2])
def test_attention_loss_matches_reference(kind, student_heads):
    mask = _mask(2, 5, seed=3)
    s, t = _attention(2, student_heads, 5, mask, 1), _attention(2, 4, 5, mask, 2)
    fast = losses.attention_loss(s, t, mask, kind)
    assert torch.allclose(fast, losses.attention_loss_reference(s, t, mask, kind), atol=1e-5)
    assert float(losses.attention_loss(t, t, mask, kind)) == pytest.approx(0.0, abs=1e-5)


def test_unknown_loss_kind_is_rejected():
    with pytest.raises(ValueError, match="cosine"):
        losses.hidden_state_loss(torch.randn(1, 2, 3), torch.randn(1, 2, 3), torch.ones(1, 2), "l1")

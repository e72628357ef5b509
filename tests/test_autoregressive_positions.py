"""Tests for autoregressive.positions: the sinusoidal table against its formula and its
rotation property; rotary embeddings preserve norms and make q·k depend on the offset only;
learned positions; bad input."""

import math

import pytest
import torch

from autoregressive import LearnedPositions, RotaryEmbedding, sinusoidal_positions

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sinusoidal_formula():
    pe = sinusoidal_positions(50, 16, dtype=torch.float64)
    for t in (0, 7, 49):
        for i in range(8):
            w = 10_000 ** (-2 * i / 16)
            assert pe[t, 2 * i].item() == pytest.approx(math.sin(t * w), abs=1e-12)
            assert pe[t, 2 * i + 1].item() == pytest.approx(math.cos(t * w), abs=1e-12)
    assert torch.allclose(sinusoidal_positions(5, 16, start=10, dtype=torch.float64), pe[10:15])


def test_sinusoidal_shift_is_a_fixed_rotation():
    """PE[t + k] = R_k PE[t] with R_k block-diagonal 2×2 rotations independent of t."""
    d, k = 8, 3
    pe = sinusoidal_positions(40, d, dtype=torch.float64)
    w = 10_000 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    c, s = (k * w).cos(), (k * w).sin()
    sin_t, cos_t = pe[:-k, 0::2], pe[:-k, 1::2]
    assert torch.allclose(pe[k:, 0::2], sin_t * c + cos_t * s, atol=1e-12)
    assert torch.allclose(pe[k:, 1::2], cos_t * c - sin_t * s, atol=1e-12)


def test_rotary_relative_property_and_norms():
    rope = RotaryEmbedding(8)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, 1, 8, generator=g, dtype=torch.float64)
    k = torch.randn(1, 1, 1, 8, generator=g, dtype=torch.float64)

    def score(m, n):
        return (rope(q, m) * rope(k, n)).sum().item()

    assert score(5, 2) == pytest.approx(score(13, 10), abs=1e-12)
    assert score(0, 0) == pytest.approx((q * k).sum().item(), abs=1e-12)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-6)
    x = torch.randn(2, 3, 6, 8, generator=g, dtype=torch.float64)
    assert torch.allclose(rope(x, 4).norm(dim=-1), x.norm(dim=-1), atol=1e-12)
    # position m of a sequence = the same vector rotated alone at start m
    assert torch.allclose(rope(x, 4)[:, :, 2:3], rope(x[:, :, 2:3], 6), atol=1e-12)


def test_rotary_pair_rotation_by_hand():
    rope = RotaryEmbedding(2)
    x = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    out = rope(x, 3)[0, 0]
    assert torch.allclose(out, torch.tensor([math.cos(3), math.sin(3)], dtype=torch.float64))


def test_learned_positions_and_bad_input():
    pos = LearnedPositions(10, 4)
    assert pos(3, start=2).shape == (3, 4)
    assert torch.equal(pos(3, start=2), pos.weight[2:5])
    with pytest.raises(ValueError, match="exceed"):
        pos(5, start=6)
    with pytest.raises(ValueError, match="even"):
        sinusoidal_positions(4, 5)
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(7)
    with pytest.raises(ValueError, match="base"):
        sinusoidal_positions(4, 4, base=-1.0)
    with pytest.raises(ValueError, match="length"):
        sinusoidal_positions(0, 4)
    with pytest.raises(ValueError, match=r"\(\.\.\., T, 8\)"):
        RotaryEmbedding(8)(torch.zeros(1, 3, 4))

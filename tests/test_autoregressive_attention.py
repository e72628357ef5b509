"""Tests for autoregressive.attention: SDPA written out against torch's fused kernel and against a
hand computation; the 1/√d scaling; both mask alignments and the KV-cache mismatch of the
top-left one; MultiHeadAttention against torch.nn.MultiheadAttention with copied weights; the
KV cache equal to a full pass; bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from autoregressive import LayerKVCache, MultiHeadAttention, causal_mask
from autoregressive import scaled_dot_product_attention as sdpa

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def qkv(b=2, h=3, tq=5, tk=5, d=8, dv=6, seed=0, dtype=torch.float64):
    g = gen(seed)
    return (torch.randn(b, h, tq, d, generator=g, dtype=dtype),
            torch.randn(b, h, tk, d, generator=g, dtype=dtype),
            torch.randn(b, h, tk, dv, generator=g, dtype=dtype))


def test_sdpa_by_hand_on_one_query():
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    v = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    s = torch.tensor([1.0, 0.0, -1.0]) / math.sqrt(2)
    w = s.exp() / s.exp().sum()
    out, weights = sdpa(q, k, v, return_weights=True)
    assert torch.allclose(weights[0], w.double(), atol=1e-15)
    assert torch.allclose(out[0, 0], (w.double() * v[:, 0]).sum(), atol=1e-15)


@pytest.mark.parametrize("tq,tk", [(5, 5), (1, 7), (3, 9)])
def test_sdpa_matches_torch_with_bottom_right_mask(tq, tk):
    q, k, v = qkv(tq=tq, tk=tk)
    mask = causal_mask(tq, tk)
    assert torch.allclose(sdpa(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, mask),
                          atol=1e-12)
    assert torch.allclose(sdpa(q, k, v), F.scaled_dot_product_attention(q, k, v), atol=1e-12)


def test_torch_is_causal_is_top_left_aligned():
    """DESIGN.md §9: is_causal=True equals our top-left mask, and differs from the bottom-right
    one as soon as T_q < T_k (the KV-cache case)."""
    q, k, v = qkv(tq=3, tk=7)
    torch_causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(torch_causal, sdpa(q, k, v, causal_mask(3, 7, align="top_left")),
                          atol=1e-12)
    assert not torch.allclose(torch_causal, sdpa(q, k, v, causal_mask(3, 7)), atol=1e-3)


def test_mask_alignments():
    assert causal_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]
    assert causal_mask(2, 4, align="top_left").tolist() == [[True, False, False, False],
                                                            [True, True, False, False]]
    assert torch.equal(causal_mask(4, align="top_left"), causal_mask(4))
    # the newest query of a cache sees every key only with bottom-right alignment
    assert bool(causal_mask(1, 6)[0].all()) and int(causal_mask(1, 6, align="top_left").sum()) == 1


def test_masked_keys_get_zero_weight_and_do_not_matter():
    q, k, v = qkv(tq=4, tk=4)
    mask = causal_mask(4)
    _, w = sdpa(q, k, v, mask, return_weights=True)
    assert float(w.masked_select(~mask).abs().max()) == 0.0
    assert torch.allclose(w.sum(-1), torch.ones(()).double())
    k2, v2 = k.clone(), v.clone()
    k2[..., 3, :] += 100.0
    v2[..., 3, :] -= 50.0                      # only the last query may see key 3
    a, b = sdpa(q, k, v, mask), sdpa(q, k2, v2, mask)
    assert torch.allclose(a[..., :3, :], b[..., :3, :], atol=1e-12)


def test_scaling_keeps_logit_variance_at_one():
    """q·k/√d has variance 1 for independent standard normal entries, whatever d (unscaled: d).
    The standard error of the sample variance is √((m₄ − 1)/n) with m₄ = E s⁴ = 3 + 6/d."""
    g = gen(3)
    n = 20_000
    for d in (4, 64, 512):
        q = torch.randn(n, d, generator=g, dtype=torch.float64)
        k = torch.randn(n, d, generator=g, dtype=torch.float64)
        dots = (q * k).sum(-1)
        se = math.sqrt((2 + 6 / d) / n)
        assert abs((dots / math.sqrt(d)).var().item() - 1) < 5 * se
        assert abs(dots.var().item() / d - 1) < 5 * se


def test_gradcheck():
    q, k, v = (t.requires_grad_() for t in qkv(b=1, h=1, tq=3, tk=4, d=3, dv=2))
    assert torch.autograd.gradcheck(lambda q, k, v: sdpa(q, k, v, causal_mask(3, 4)), (q, k, v))


@pytest.mark.parametrize("fused", [True, False])
def test_mha_matches_torch_multihead_attention(fused):
    torch.manual_seed(0)
    d, h = 12, 3
    ours = MultiHeadAttention(d, h, fused=fused).double()
    ref = torch.nn.MultiheadAttention(d, h, batch_first=True).double()
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.in_proj.weight)
        ref.in_proj_bias.copy_(ours.in_proj.bias)
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    x = torch.randn(2, 6, d, generator=gen(1), dtype=torch.float64)
    # torch's attn_mask is True where attention is NOT allowed
    expected, _ = ref(x, x, x, attn_mask=~causal_mask(6), need_weights=False)
    assert torch.allclose(ours(x), expected, atol=1e-12)
    expected_full, _ = ref(x, x, x, need_weights=False)
    assert torch.allclose(ours(x, causal=False), expected_full, atol=1e-12)


def test_mha_fused_and_written_out_agree_and_weights_are_kept():
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 4)
    x = torch.randn(3, 9, 16, generator=gen(2))
    fused = m(x)
    assert m.last_weights is None
    written = m(x, need_weights=True)
    assert torch.allclose(fused, written, atol=1e-5)
    assert m.last_weights.shape == (3, 4, 9, 9)


def test_kv_cache_equals_full_pass():
    torch.manual_seed(0)
    m = MultiHeadAttention(8, 2).double()
    x = torch.randn(2, 7, 8, generator=gen(4), dtype=torch.float64)
    full = m(x)
    cache = LayerKVCache(2, 2, 10, 4, dtype=torch.float64)
    pieces = []
    for a, b in [(0, 3), (3, 4), (4, 7)]:
        pieces.append(m(x[:, a:b], cache=cache))
        cache.length = b
    assert torch.allclose(torch.cat(pieces, 1), full, atol=1e-12)


def test_bad_input():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="broadcast"):
        sdpa(q, k, v, torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="boolean"):
        sdpa(q, k, v, torch.ones(5, 5))
    with pytest.raises(ValueError, match="no key"):
        sdpa(q, k, v, torch.zeros(5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="same last dimension"):
        sdpa(q, k[..., :3], v)
    with pytest.raises(ValueError, match="number of keys"):
        sdpa(q, k, v[..., :2, :])
    with pytest.raises(ValueError, match="divide"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="align"):
        causal_mask(3, align="diagonal")
    with pytest.raises(ValueError, match="t_q"):
        causal_mask(0)
    m = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match="d_model"):
        m(torch.zeros(1, 3, 5))
    cache = LayerKVCache(1, 2, 4, 4)
    with pytest.raises(ValueError, match="at most 4"):
        m(torch.zeros(1, 5, 8), cache=cache)

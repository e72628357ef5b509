"""Tests for ssm.mamba: selective_scan against a literal transcription of mamba's
selective_scan_ref (both scans, every option), the LTI special case against its convolution
kernel, state continuation, gradcheck; the block's recurrent step and chunked passes equal the
full pass, causality; MambaLM follows the LM protocol (cache = re-running, generate with the
cache = without, the cache does not grow, lm_step trains it); mamba's initialisation;
hypothesis properties (homogeneity in u, causality); every ValueError."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from autoregressive import generate, lm_step
from ssm import MambaBlock, MambaCache, MambaLM, SelectiveSSM, selective_scan

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64
SCANS = ("fused", "sequential", "parallel")


def rand(*shape, seed=0, low=-1.0, high=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=F64) * (high - low) + low


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=False, return_last_state=False):
    """mamba_ssm/ops/selective_scan_interface.py's selective_scan_ref (real A, B and C
    (b, n, l)), transcribed line by line."""
    dtype_in = u.dtype
    u = u.float() if u.dtype != F64 else u
    delta = delta.float() if delta.dtype != F64 else delta
    if delta_bias is not None:
        delta = delta + delta_bias[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, dstate = u.shape[0], A.shape[0], A.shape[1]
    x = A.new_zeros((batch, dim, dstate))
    ys = []
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    last_state = None
    for i in range(u.shape[2]):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        y = torch.einsum("bdn,bn->bd", x, C[:, :, i])
        if i == u.shape[2] - 1:
            last_state = x
        ys.append(y)
    y = torch.stack(ys, dim=2)
    out = y if D is None else y + u * D[:, None]
    if z is not None:
        out = out * F.silu(z)
    out = out.to(dtype=dtype_in)
    return out if not return_last_state else (out, last_state)


def inputs(b=2, d=3, n=4, length=9, seed=0):
    return dict(u=rand(b, d, length, seed=seed), delta=rand(b, d, length, seed=seed + 1),
                A=-rand(d, n, seed=seed + 2, low=0.1, high=2.0),
                B=rand(b, n, length, seed=seed + 3), C=rand(b, n, length, seed=seed + 4))


@pytest.mark.parametrize("scan", SCANS)
def test_selective_scan_equals_the_reference(scan):
    x = inputs()
    D, z, bias = rand(3, seed=10), rand(2, 3, 9, seed=11), rand(3, seed=12)
    assert torch.allclose(selective_scan(**x, scan=scan), selective_scan_ref(**x), atol=1e-12)
    y, h = selective_scan(**x, D=D, z=z, delta_bias=bias, delta_softplus=True,
                          return_last_state=True, scan=scan)
    y_ref, h_ref = selective_scan_ref(**x, D=D, z=z, delta_bias=bias, delta_softplus=True,
                                      return_last_state=True)
    assert torch.allclose(y, y_ref, atol=1e-12) and torch.allclose(h, h_ref, atol=1e-12)
    x32 = {k: v.float() for k, v in x.items()}
    assert selective_scan(**x32, scan=scan).dtype == torch.float32


def test_lti_special_case_is_a_convolution():
    """Δ, B, C constant in time: y = K * u with K_k = Σ_n C_n exp(ΔA_n)^k Δ B_n (per channel)."""
    b, d, n, L = 2, 3, 5, 16
    u = rand(b, d, L, seed=1)
    dt = rand(d, seed=2, low=0.05, high=0.5)
    A = -rand(d, n, seed=3, low=0.1, high=3.0)
    Bn, Cn = rand(n, seed=4), rand(n, seed=5)
    y = selective_scan(u, dt[None, :, None].expand(b, d, L), A,
                       Bn[None, :, None].expand(b, n, L), Cn[None, :, None].expand(b, n, L))
    k = torch.arange(L, dtype=F64)
    K = ((Cn * Bn)[None, :, None] * dt[:, None, None]
         * torch.exp(dt[:, None, None] * A[:, :, None] * k)).sum(1)         # (d, L)
    conv = torch.stack([sum(K[:, j] * u[..., t - j] for j in range(t + 1))
                        for t in range(L)], -1)
    assert torch.allclose(y, conv, atol=1e-12)


@pytest.mark.parametrize("scan", SCANS)
def test_state_continuation_and_gradcheck(scan):
    x = inputs(length=10, seed=3)
    y, h = selective_scan(**x, return_last_state=True, scan=scan)
    first = {k: (v[..., :4] if k in ("u", "delta", "B", "C") else v) for k, v in x.items()}
    rest = {k: (v[..., 4:] if k in ("u", "delta", "B", "C") else v) for k, v in x.items()}
    y1, h1 = selective_scan(**first, return_last_state=True, scan=scan)
    y2, h2 = selective_scan(**rest, h0=h1, return_last_state=True, scan=scan)
    assert torch.allclose(torch.cat([y1, y2], -1), y, atol=1e-12)
    assert torch.allclose(h2, h, atol=1e-12)
    small = {k: v.detach().clone().requires_grad_() for k, v in inputs(1, 2, 3, 5, 7).items()}
    D, z = rand(2, seed=1).requires_grad_(), rand(1, 2, 5, seed=2).requires_grad_()
    h0 = rand(1, 2, 3, seed=3).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda u, delta, A, B, C, D, z, h0: selective_scan(u, delta, A, B, C, D, z, h0=h0,
                                                           delta_softplus=True, scan=scan),
        (*small.values(), D, z, h0))


def block(scan="fused", d=8, seed=0, **kw):
    torch.manual_seed(seed)
    return MambaBlock(d, d_state=4, scan=scan, **kw).double()


def test_block_step_equals_the_full_pass_and_chunks():
    m = block()
    x = rand(2, 13, 8, seed=1)
    full = m(x)
    state, outs = None, []
    for t in range(13):
        y, state = m.step(x[:, t], state)
        outs.append(y)
    assert torch.allclose(torch.stack(outs, 1), full, atol=1e-12)
    y1, s = m.forward_with_state(x[:, :5])
    y2, s = m.forward_with_state(x[:, 5:6], s)
    y3, _ = m.step(x[:, 6], s)
    y4, s4 = m.forward_with_state(x[:, 7:], m.step(x[:, 6], s)[1])
    assert torch.allclose(torch.cat([y1, y2, y3[:, None], y4], 1), full, atol=1e-12)
    assert s4[0].shape == (2, 16, 3) and s4[1].shape == (2, 16, 4)   # (conv window, h)
    for scan in ("sequential", "parallel"):                          # same weights (same seed)
        assert torch.allclose(block(scan)(x), full, atol=1e-12)
    for k in (1, 2):                                                 # narrow conv windows too
        mk = block(d_conv=k)
        st_, outs = None, []
        for t in range(6):
            y, st_ = mk.step(x[:, t], st_)
            outs.append(y)
        assert torch.allclose(torch.stack(outs, 1), mk(x[:, :6]), atol=1e-12)


def test_block_is_causal_and_its_ssm_initialisation_is_mambas():
    m = block(d=16)
    x = rand(1, 10, 16, seed=2)
    x2 = x.clone()
    x2[:, 6:] += 1.0
    assert torch.allclose(m(x)[:, :6], m(x2)[:, :6], atol=1e-14)
    assert not torch.allclose(m(x)[:, 6:], m(x2)[:, 6:])
    s = SelectiveSSM(32, d_state=8, dt_min=1e-3, dt_max=1e-1)
    A = -torch.exp(s.A_log)
    assert torch.allclose(A, -torch.arange(1, 9, dtype=torch.float32).repeat(32, 1))
    dt = F.softplus(s.dt_proj.bias)                                   # Δ at zero input
    assert bool((dt >= 1e-3 * (1 - 1e-5)).all() and (dt <= 1e-1 * (1 + 1e-5)).all())
    assert torch.equal(s.D, torch.ones(32))
    assert m.ssm.dt_rank == 1 and MambaBlock(48).ssm.dt_rank == 3   # ⌈d_model / 16⌉


def lm(scan="fused", seed=0, vocab=11, d=16, layers=2):
    torch.manual_seed(seed)
    return MambaLM(vocab, d, layers, d_state=4, scan=scan).double()


def test_lm_protocol_cache_equals_rerunning():
    m = lm()
    assert m.block_size is None and m.vocab_size == 11
    idx = torch.randint(11, (3, 17), generator=torch.Generator().manual_seed(1))
    full = m(idx)
    assert full.shape == (3, 17, 11)
    cache = m.init_cache(3)
    steps = torch.cat([m(idx[:, t:t + 1], cache=cache) for t in range(17)], 1)
    assert torch.allclose(steps, full, atol=1e-12) and cache.length == 17
    cache = m.init_cache(3)
    parts = torch.cat([m(idx[:, :6], cache=cache), m(idx[:, 6:7], cache=cache),
                       m(idx[:, 7:], cache=cache)], 1)
    assert torch.allclose(parts, full, atol=1e-12)
    sizes = [sum(s.numel() for st_ in cache.states for s in st_)]
    m(idx[:, :5], cache=cache)
    sizes.append(sum(s.numel() for st_ in cache.states for s in st_))
    assert sizes[0] == sizes[1] == 2 * 3 * 32 * (3 + 4)              # O(1) in the length
    for scan in ("sequential", "parallel"):
        assert torch.allclose(lm(scan)(idx), full, atol=1e-12)
    # out-projections scaled by 1/sqrt(n_layers) at initialisation
    torch.manual_seed(0)
    one = MambaLM(11, 16, 1, d_state=4)
    torch.manual_seed(0)
    four = MambaLM(11, 16, 4, d_state=4)
    assert torch.allclose(four.layers[0].out_proj.weight * 2, one.layers[0].out_proj.weight)


def test_fused_gradients_equal_autograd_through_the_scans():
    idx = torch.randint(11, (2, 9), generator=torch.Generator().manual_seed(4))
    grads = {}
    for scan in SCANS:
        m = lm(scan)
        torch.nn.functional.cross_entropy(m(idx).flatten(0, 1), idx.flatten()).backward()
        grads[scan] = [p.grad for p in m.parameters()]
    for scan in ("sequential", "parallel"):
        assert all(torch.allclose(g, f, atol=1e-12) for g, f in zip(grads[scan], grads["fused"]))


def test_generate_with_the_cache_equals_without():
    m = lm(seed=3).float()
    prompt = torch.randint(11, (2, 5), generator=torch.Generator().manual_seed(2))
    a = generate(m, prompt, 25, greedy=True, kv_cache=True)
    b = generate(m, prompt, 25, greedy=True, kv_cache=False)
    assert torch.equal(a, b) and a.shape == (2, 30)
    s1 = generate(m, prompt, 25, kv_cache=True, generator=torch.Generator().manual_seed(5))
    s2 = generate(m, prompt, 25, kv_cache=False, generator=torch.Generator().manual_seed(5))
    assert torch.equal(s1, s2)


def test_lm_step_trains_it():
    m = lm(seed=1, layers=1).float()
    x = torch.randint(11, (4, 12), generator=torch.Generator().manual_seed(0))
    y = torch.roll(x, -1, 1)
    step = lm_step(m, torch.optim.Adam(m.parameters(), lr=1e-2))
    first = step((x, y))["loss"]
    for _ in range(40):
        last = step((x, y))["loss"]
    assert first > math.log(11) - 0.2 and last < 0.5 * first


@settings(max_examples=20, deadline=None)
@given(c=st.floats(-4, 4), seed=st.integers(0, 1000), L=st.integers(1, 12),
       scan=st.sampled_from(SCANS))
def test_property_homogeneous_in_u_and_causal(c, seed, L, scan):
    x = inputs(1, 2, 3, L, seed)
    D = rand(2, seed=seed + 9)
    y = selective_scan(**x, D=D, scan=scan)
    assert torch.allclose(selective_scan(**{**x, "u": c * x["u"]}, D=D, scan=scan), c * y,
                          atol=1e-10)
    later = {k: v.clone() for k, v in x.items()}
    for k in ("u", "delta", "B", "C"):
        later[k][..., L // 2 + 1:] += 0.5
    assert torch.allclose(selective_scan(**later, D=D, scan=scan)[..., :L // 2 + 1],
                          y[..., :L // 2 + 1], atol=1e-14)


def test_bad_input():
    x = inputs()
    with pytest.raises(ValueError, match="u must be a float tensor"):
        selective_scan(**{**x, "u": x["u"][0]})
    with pytest.raises(ValueError, match="delta must be"):
        selective_scan(**{**x, "delta": x["delta"][..., :-1]})
    with pytest.raises(ValueError, match="A must be"):
        selective_scan(**{**x, "A": x["A"][:2]})
    with pytest.raises(ValueError, match="B must be"):
        selective_scan(**{**x, "B": x["B"][:, :3]})
    with pytest.raises(ValueError, match="C must be"):
        selective_scan(**{**x, "C": x["C"].long()})
    with pytest.raises(ValueError, match="D must be"):
        selective_scan(**x, D=rand(4))
    with pytest.raises(ValueError, match="z must be"):
        selective_scan(**x, z=rand(2, 3, 8))
    with pytest.raises(ValueError, match="delta_bias must be"):
        selective_scan(**x, delta_bias=rand(2))
    with pytest.raises(ValueError, match="h0 must be"):
        selective_scan(**x, h0=rand(2, 3, 5))
    with pytest.raises(ValueError, match="scan must be one of"):
        selective_scan(**x, scan="cuda")
    with pytest.raises(ValueError, match="scan must be one of"):
        MambaLM(11, 16, 1, scan="cuda")
    with pytest.raises(ValueError, match="d_inner must be"):
        SelectiveSSM(0)
    with pytest.raises(ValueError, match="dt_min <= dt_max"):
        SelectiveSSM(4, dt_min=0.1, dt_max=0.01)
    with pytest.raises(ValueError, match="d_model must be"):
        MambaBlock(0)
    with pytest.raises(ValueError, match="expand must be"):
        MambaBlock(8, expand=0)
    m = block()
    with pytest.raises(ValueError, match="x must be a float tensor"):
        m(rand(2, 5, 7))
    with pytest.raises(ValueError, match="x must be a float tensor"):
        m.step(rand(2, 5, 8))
    with pytest.raises(ValueError, match="state must be"):
        m.step(rand(2, 8), (rand(2, 16, 3), rand(2, 16, 5)))
    with pytest.raises(ValueError, match="state must be"):
        m.forward_with_state(rand(2, 4, 8), rand(2, 16, 3))
    model = lm()
    with pytest.raises(ValueError, match="idx must be an int64"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="tokens must lie"):
        model(torch.full((1, 3), 11))
    with pytest.raises(ValueError, match="at least one token"):
        model(torch.zeros(2, 0, dtype=torch.int64))
    with pytest.raises(ValueError, match="cache must come from"):
        model(torch.zeros(2, 3, dtype=torch.int64), cache=object())
    with pytest.raises(ValueError, match="cache must come from"):
        model(torch.zeros(2, 3, dtype=torch.int64), cache=MambaCache(2, 5))
    with pytest.raises(ValueError, match="holds 3 sequences"):
        model(torch.zeros(2, 3, dtype=torch.int64), cache=model.init_cache(3))
    with pytest.raises(ValueError, match="n_layers must be"):
        MambaLM(11, 16, 0)
    with pytest.raises(ValueError, match="batch_size must be"):
        model.init_cache(0)


def test_delta_is_the_step_the_recurrence_uses():
    # one token through step() with h = 0 and B, C as computed: h_1 = Δ B u, so y − D u = Δ u (B·C)
    torch.manual_seed(0)
    ssm = SelectiveSSM(8, d_state=4)
    x = torch.randn(3, 8)
    delta = ssm.delta(x)
    assert delta.shape == (3, 8) and bool((delta > 0).all())
    _, B, C = ssm.x_proj(x).split([ssm.dt_rank, 4, 4], dim=-1)
    y, _ = ssm.step(x, torch.zeros(3, 8, 4))
    torch.testing.assert_close(y - ssm.D * x, delta * x * (B * C).sum(-1, keepdim=True))

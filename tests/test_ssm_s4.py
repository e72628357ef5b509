"""Tests for ssm.s4: the S4D initialisations, the kernel against scipy's ZOH of the equivalent
real system, the three computations of the layer (convolution, chunks with a state, the
recurrence) agreeing, causality, gradients (gradcheck in float64), the block, the classifier,
the LM protocol (cache = full pass, generation with and without the cache), the parameter
groups, and bad input."""

import math

import numpy as np
import pytest
import torch
from scipy.signal import cont2discrete

from autoregressive import generate
from ssm.lti import ssm_scan
from ssm.s4 import S4D, S4LM, S4Block, S4Classifier, s4d_A, s4d_kernel, ssm_param_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def test_s4d_inits():
    A = s4d_A(3, 8, "lin")
    assert A.shape == (3, 4) and A.is_complex()
    np.testing.assert_allclose(A.real.numpy(), -0.5)
    np.testing.assert_allclose(A[1].imag.numpy(), math.pi * np.arange(4), rtol=1e-6)
    A = s4d_A(2, 8, "inv")
    n = np.arange(4)
    np.testing.assert_allclose(A[0].imag.numpy(), 8 / math.pi * (8 / (2 * n + 1) - 1), rtol=1e-6)


def random_system(H=3, N2=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    A = torch.complex(-torch.rand(H, N2, generator=g, dtype=dtype) - 0.1,
                      3 * torch.randn(H, N2, generator=g, dtype=dtype))
    B = torch.randn(H, N2, generator=g, dtype=cdtype)
    C = torch.randn(H, N2, generator=g, dtype=cdtype)
    log_dt = torch.log(0.05 + 0.2 * torch.rand(H, generator=g, dtype=dtype))
    return log_dt, A, B, C


def test_kernel_equals_scipy_zoh_of_the_real_system():
    """Mode n, x = x_r + i x_i with A_n = a + ib, is the real 2-state system
    (x_r, x_i)' = [[a, −b], [b, a]] (x_r, x_i) + (Re B_n, Im B_n) u, read out by
    y = 2 Re(C_n x) = 2 Re C_n x_r − 2 Im C_n x_i; scipy discretises that (ZOH) independently."""
    log_dt, A, B, C = random_system()
    L = 30
    K = s4d_kernel(log_dt, A, B, C, L)
    assert K.shape == (3, L) and K.dtype == torch.float64
    for h in range(3):
        N2 = A.shape[1]
        Ar = np.zeros((2 * N2, 2 * N2))
        Br = np.zeros((2 * N2, 1))
        Cr = np.zeros((1, 2 * N2))
        for n in range(N2):
            a, b = A[h, n].real.item(), A[h, n].imag.item()
            Ar[2 * n:2 * n + 2, 2 * n:2 * n + 2] = [[a, -b], [b, a]]
            Br[2 * n:2 * n + 2, 0] = [B[h, n].real.item(), B[h, n].imag.item()]
            Cr[0, 2 * n:2 * n + 2] = [2 * C[h, n].real.item(), -2 * C[h, n].imag.item()]
        dt = math.exp(log_dt[h].item())
        Ad, Bd, Cd, _, _ = cont2discrete((Ar, Br, Cr, np.zeros((1, 1))), dt, method="zoh")
        ref, x = [], Bd[:, 0]
        for _ in range(L):
            ref.append((Cd @ x).item())
            x = Ad @ x
        np.testing.assert_allclose(K[h].numpy(), ref, rtol=1e-9, atol=1e-12)


def test_kernel_gradcheck():
    log_dt, A, B, C = random_system(H=2, N2=3)
    for t in (log_dt, A, C):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda d, a, c: s4d_kernel(d, a, B, c, 12), (log_dt, A, C))


def layer(H=4, N=8, seed=0, **kw):
    torch.manual_seed(seed)
    return S4D(H, N, **kw).double()


def test_convolution_recurrence_and_chunks_agree():
    s4 = layer()
    u = torch.randn(2, 25, 4, dtype=torch.float64)
    y = s4(u)
    assert y.shape == u.shape
    x, ys = None, []
    for t in range(25):
        y_t, x = s4.step(u[:, t], x)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, atol=1e-10, rtol=0)
    state, parts = None, []
    for a, b in ((0, 1), (1, 9), (9, 25)):
        part, state = s4.forward_with_state(u[:, a:b], state)
        parts.append(part)
    torch.testing.assert_close(torch.cat(parts, 1), y, atol=1e-10, rtol=0)
    torch.testing.assert_close(state, x, atol=1e-10, rtol=0)


def test_layer_equals_each_channels_scan():
    """ssm.lti's recurrence per channel (complex diagonal Ā, B̄, C), y = 2 Re(C x) + D u."""
    s4 = layer(H=3, N=6)
    u = torch.randn(2, 17, 3, dtype=torch.float64)
    A_bar, B_bar = s4.discrete()
    C = torch.view_as_complex(s4.C)
    with torch.no_grad():
        y = s4(u)
        for h in range(3):
            y_h = ssm_scan(A_bar[h], B_bar[h], C[h], u[..., h:h + 1].to(C.dtype))
            torch.testing.assert_close(y[..., h], 2 * y_h[..., 0].real + s4.D[h] * u[..., h],
                                       atol=1e-10, rtol=0)


def test_layer_is_causal_with_the_D_skip():
    s4 = layer(init="inv")
    u = torch.randn(1, 20, 4, dtype=torch.float64)
    v = u.clone()
    v[0, 12] += 1.0
    dy = s4(v) - s4(u)
    assert dy[0, :12].abs().max() < 1e-12 and dy[0, 12:].abs().max() > 1e-3
    K = s4.kernel(20)
    torch.testing.assert_close(dy[0, 12], K[:, 0] + s4.D, atol=1e-10, rtol=0)
    torch.testing.assert_close(dy[0, 13:, 2], K[2, 1:8], atol=1e-10, rtol=0)  # the impulse response


def test_initial_dt_range_and_stable_A():
    torch.manual_seed(0)
    s4 = S4D(64, 16, dt_min=1e-3, dt_max=1e-1)
    dt = torch.exp(s4.log_dt.detach())
    assert float(dt.min()) >= 1e-3 * (1 - 1e-5) and float(dt.max()) <= 1e-1 * (1 + 1e-5)
    with torch.no_grad():
        s4.log_A_real.fill_(5.0)
    assert bool((s4.A.real < 0).all())


def test_block_residual_and_classifier_shapes():
    torch.manual_seed(0)
    block = S4Block(6, 8, dropout=0.1)
    x = torch.randn(3, 10, 6)
    assert block(x).shape == x.shape
    with torch.no_grad():
        block.mix.weight.zero_()
        block.mix.bias.zero_()
    torch.testing.assert_close(block(x), x)  # GLU of zeros is zero: the block is the identity
    model = S4Classifier(1, 8, 2, 10, d_state=8)
    assert model(torch.randn(5, 16, 1)).shape == (5, 10)


def test_classifier_learns_a_task_that_needs_memory():
    """The class is the sign of the first input; the mean of the rest carries no information."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 32, 1, generator=g)
    y = (x[:, 0, 0] > 0).long()
    model = S4Classifier(1, 16, 1, 2, d_state=16)
    opt = torch.optim.AdamW(ssm_param_groups(model, lr=1e-2), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        xt = torch.randn(256, 32, 1, generator=g)
        acc = (model(xt).argmax(-1) == (xt[:, 0, 0] > 0).long()).float().mean()
    assert acc > 0.9


def test_lm_protocol_cache_and_generation():
    torch.manual_seed(0)
    model = S4LM(11, 16, 2, d_state=8).eval()
    assert model.block_size is None and model.vocab_size == 11
    idx = torch.randint(11, (2, 13))
    with torch.no_grad():
        full = model(idx)
        assert full.shape == (2, 13, 11)
        cache = model.init_cache(2)
        parts = [model(idx[:, a:b], cache=cache) for a, b in ((0, 5), (5, 6), (6, 13))]
    assert cache.length == 13
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)
    with_cache = generate(model, idx[:, :4], 10, greedy=True, kv_cache=True)
    without = generate(model, idx[:, :4], 10, greedy=True, kv_cache=False)
    assert torch.equal(with_cache, without)
    # tied weights: embedding counted once
    n = sum(p.numel() for p in model.parameters())
    untied = S4LM(11, 16, 2, d_state=8, tie_weights=False)
    assert sum(p.numel() for p in untied.parameters()) == n + 11 * 16


def test_lm_is_causal():
    torch.manual_seed(0)
    model = S4LM(7, 8, 1, d_state=4).eval()
    idx = torch.randint(7, (1, 12))
    other = idx.clone()
    other[0, 8] = (other[0, 8] + 1) % 7
    with torch.no_grad():
        d = (model(other) - model(idx)).abs().amax(-1)[0]
    assert float(d[:8].max()) < 1e-6 and float(d[8:].min()) > 1e-6


def test_param_groups_split_ssm_parameters():
    model = S4Classifier(1, 8, 2, 3, d_state=4)
    groups = ssm_param_groups(model, lr=1e-2, weight_decay=0.1, ssm_lr=1e-3)
    assert len(groups[1]["params"]) == 6  # 2 layers × (log_dt, log_A_real, A_imag)
    assert groups[1]["lr"] == 1e-3 and groups[1]["weight_decay"] == 0.0
    assert groups[0]["weight_decay"] == 0.1
    n = sum(len(g["params"]) for g in groups)
    assert n == len(list(model.parameters()))
    assert ssm_param_groups(model, lr=1e-4)[1]["lr"] == 1e-4  # min(lr, ssm_lr)


def test_bad_input():
    log_dt, A, B, C = random_system(H=2, N2=3)
    with pytest.raises(ValueError, match="even"):
        s4d_A(2, 7)
    with pytest.raises(ValueError, match="init"):
        s4d_A(2, 8, "legs")
    with pytest.raises(ValueError, match="A must be a complex"):
        s4d_kernel(log_dt, A.real, B, C, 5)
    with pytest.raises(ValueError, match="C must be a complex"):
        s4d_kernel(log_dt, A, B, C[:, :2], 5)
    with pytest.raises(ValueError, match="log_dt"):
        s4d_kernel(log_dt[:1], A, B, C, 5)
    with pytest.raises(ValueError, match="L must be"):
        s4d_kernel(log_dt, A, B, C, 0)
    with pytest.raises(ValueError, match="Hurwitz"):
        s4d_kernel(log_dt, A + 1.0, B, C, 5)
    with pytest.raises(ValueError, match="dt_min"):
        S4D(4, 8, dt_min=0.2, dt_max=0.1)
    with pytest.raises(ValueError, match="dt_min"):
        S4D(4, 8, dt_min=-1.0)
    s4 = S4D(4, 8)
    with pytest.raises(ValueError, match=r"u must be a float tensor \(B, L, H\)"):
        s4(torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="state"):
        s4.forward_with_state(torch.zeros(2, 5, 4), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="u_t"):
        s4.step(torch.zeros(2, 5, 4))
    with pytest.raises(ValueError, match="dropout"):
        S4Block(4, 8, dropout=1.0)
    with pytest.raises(ValueError, match="unsqueeze"):
        S4Classifier(1, 8, 1, 10, d_state=4)(torch.zeros(2, 16))
    lm = S4LM(5, 8, 1, d_state=4)
    with pytest.raises(ValueError, match="tokens must lie"):
        lm(torch.full((1, 3), 5))
    with pytest.raises(ValueError, match="init_cache"):
        lm(torch.zeros(2, 3, dtype=torch.int64), cache=lm.init_cache(1))

"""Tests for evaluation.domain_adaptation: the GRL's gradient, DANN's schedule, CORAL against a
direct covariance, MMD² against a double loop and the Gaussian closed form, the proxy A-distance
against a known Bayes error, and the training step."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from evaluation import (
    DomainAdaptationNet,
    GradientReversal,
    adaptation_step,
    coral_loss,
    dann_lambda,
    grad_reverse,
    mmd2,
    proxy_a_distance,
)

f64 = dict(dtype=torch.float64)


@pytest.fixture(autouse=True)
def one_thread():
    """Small matrices: one thread is fastest, and far faster on a loaded, shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- gradient reversal
@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 2.5])
def test_grl_is_identity_forward_and_minus_lam_backward(lam):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, generator=gen, **f64, requires_grad=True)
    upstream = torch.randn(5, 3, generator=gen, **f64)
    out = grad_reverse(x, lam)
    assert torch.equal(out, x)
    (g,) = torch.autograd.grad(out, x, upstream)
    assert torch.equal(g, -lam * upstream)          # exactly: one multiplication


def test_grl_jacobian_is_minus_lam_times_the_forward_one():
    # the GRL's Jacobian (what backward applies) is -lam I, though its forward is the identity
    lam = 0.7
    x = torch.randn(4, **f64, requires_grad=True)
    jac = torch.autograd.functional.jacobian(lambda v: grad_reverse(v, lam), x)
    assert torch.allclose(jac, -lam * torch.eye(4, **f64), atol=0, rtol=0)
    # composed: sin(R(x)) has forward sin(x), so finite differences give cos(x), while autograd
    # gives -lam cos(x)
    (g,) = torch.autograd.grad(torch.sin(grad_reverse(x, lam)).sum(), x)
    assert torch.allclose(g, -lam * torch.cos(x.detach()), rtol=0, atol=1e-15)
    fd = torch.tensor([(math.sin(v + 1e-6) - math.sin(v - 1e-6)) / 2e-6 for v in x.tolist()], **f64)
    assert torch.allclose(g, -lam * fd, atol=1e-8)


def test_gradient_reversal_module_and_a_shared_backward():
    # a feature h feeds a "classifier" loss directly and a "domain" loss through the GRL:
    # dL/dh = dL_c/dh - lam dL_d/dh
    lam = 0.4
    h = torch.randn(6, 2, **f64, requires_grad=True)
    grl = GradientReversal(lam)
    assert grl.lam == lam and "lam=0.4" in repr(grl)
    loss_c, loss_d = (h ** 2).sum(), (3 * grl(h)).sum()
    (g,) = torch.autograd.grad(loss_c + loss_d, h)
    assert torch.allclose(g, 2 * h.detach() - lam * 3, rtol=0, atol=1e-15)


def test_grl_bad_input():
    with pytest.raises(ValueError, match="lam must be a finite number >= 0"):
        grad_reverse(torch.ones(2), -0.1)
    with pytest.raises(ValueError, match="lam must be"):
        GradientReversal(float("nan"))
    with pytest.raises(ValueError, match="lam must be"):
        grad_reverse(torch.ones(2), True)
    with pytest.raises(ValueError, match="floating-point tensor"):
        grad_reverse(torch.ones(2, dtype=torch.int64), 1.0)


# ---------------------------------------------------------------- DANN's schedule
def test_dann_lambda_schedule():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0) == pytest.approx(math.tanh(5.0), abs=1e-15)   # 2σ(γ) − 1 = tanh(γ/2)
    ps = np.linspace(0, 1, 11)
    values = [dann_lambda(float(p)) for p in ps]
    assert all(b > a for a, b in zip(values, values[1:]))
    assert dann_lambda(0.5, gamma=2.0) == pytest.approx(math.tanh(0.5), abs=1e-15)
    for bad in (-0.1, 1.1, float("nan"), "0.5"):
        with pytest.raises(ValueError, match="p \\(training progress\\)"):
            dann_lambda(bad)
    with pytest.raises(ValueError, match="gamma"):
        dann_lambda(0.5, gamma=0.0)


# ---------------------------------------------------------------- CORAL
def test_coral_against_numpy_covariance():
    gen = torch.Generator().manual_seed(1)
    h_s = torch.randn(40, 5, generator=gen, **f64) * torch.arange(1, 6, **f64)
    h_t = torch.randn(30, 5, generator=gen, **f64) @ torch.randn(5, 5, generator=gen, **f64)
    C_s, C_t = np.cov(h_s.numpy(), rowvar=False), np.cov(h_t.numpy(), rowvar=False)
    expected = np.sum((C_s - C_t) ** 2) / (4 * 5 ** 2)
    assert float(coral_loss(h_s, h_t)) == pytest.approx(expected, rel=1e-12)
    assert float(coral_loss(h_t, h_s)) == pytest.approx(expected, rel=1e-12)   # symmetric


def test_coral_ignores_means_and_is_zero_for_equal_covariances():
    gen = torch.Generator().manual_seed(2)
    h = torch.randn(20, 3, generator=gen, **f64)
    assert float(coral_loss(h, h + 5.0)) == pytest.approx(0.0, abs=1e-12)
    # the gradient flows (it is a training loss) and matches the closed form
    # dL/dC_s = (C_s − C_t) / (2 d²); check one direction numerically in float64
    h_s = torch.randn(10, 3, generator=gen, **f64, requires_grad=True)
    h_t = torch.randn(12, 3, generator=gen, **f64)
    assert torch.autograd.gradcheck(lambda a: coral_loss(a, h_t), (h_s,))


def test_coral_bad_input():
    with pytest.raises(ValueError, match="at least 2 samples"):
        coral_loss(torch.ones(1, 3), torch.ones(5, 3))
    with pytest.raises(ValueError, match="same feature dimension"):
        coral_loss(torch.ones(4, 3), torch.ones(5, 2))
    with pytest.raises(ValueError, match="shape \\(n, d\\)"):
        coral_loss(torch.ones(4), torch.ones(5, 2))


# ---------------------------------------------------------------- MMD
def mmd2_loop(x, y, sigmas):
    """The unbiased estimator written as plain sums over index pairs."""
    def k(a, b):
        return sum(math.exp(-float(((a - b) ** 2).sum()) / (2 * s * s)) for s in sigmas)
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd2_matches_a_double_loop():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(7, 3, generator=gen, **f64)
    y = torch.randn(9, 3, generator=gen, **f64) + 0.5
    for sigmas in ([1.0], [0.5, 2.0]):
        value = mmd2(x, y, sigmas if len(sigmas) > 1 else sigmas[0])
        assert float(value) == pytest.approx(mmd2_loop(x, y, sigmas), rel=1e-12, abs=1e-14)
        assert float(mmd2(y, x, sigmas)) == pytest.approx(float(value), rel=1e-12, abs=1e-14)
    # the default bandwidths: 2^k times the median pooled distance, k = -2..2
    z = torch.cat([x, y])
    d = torch.cdist(z, z)
    med = float(d[~torch.eye(len(z), dtype=torch.bool)].median())
    assert float(mmd2(x, y)) == pytest.approx(
        mmd2_loop(x, y, [med * 2.0 ** k for k in range(-2, 3)]), rel=1e-10)


def gaussian_mmd2(delta2, s, sigma, d):
    """MMD² of N(μ_x, s² I_d) and N(μ_y, s² I_d), ‖μ_x − μ_y‖² = delta2, kernel
    exp(−‖a − b‖²/(2σ²)): X − X' ~ N(0, 2 s² I) gives E k(X, X') = (σ²/(σ² + 2s²))^{d/2}, and
    X − Y ~ N(μ_x − μ_y, 2 s² I) multiplies it by exp(−delta2 / (2(σ² + 2s²)))."""
    c = (sigma ** 2 / (sigma ** 2 + 2 * s ** 2)) ** (d / 2)
    return 2 * c * (1 - math.exp(-delta2 / (2 * (sigma ** 2 + 2 * s ** 2))))


def test_mmd2_against_the_gaussian_closed_form_by_monte_carlo():
    n, d, s, sigma = 300, 2, 1.0, 1.5
    mu = torch.tensor([1.0, 0.0], **f64)
    expected = gaussian_mmd2(1.0, s, sigma, d)
    gen = torch.Generator().manual_seed(4)
    values = torch.stack([mmd2(torch.randn(n, d, generator=gen, **f64) * s,
                               torch.randn(n, d, generator=gen, **f64) * s + mu, sigma)
                          for _ in range(16)])
    # unbiased: the mean of 16 estimates is within 5 standard errors (measured spread) of the
    # closed form; and a single estimate's spread is O(1/√n) for distinct laws
    se = float(values.std()) / math.sqrt(len(values))
    assert abs(float(values.mean()) - expected) < 5 * se
    assert float(values.std()) < 0.3 * expected


def test_mmd2_of_one_law_is_zero_within_its_null_spread():
    # under p = q the unbiased MMD² has mean 0 exactly and a spread of order 1/n; 30 estimates
    # average within 5 standard errors of 0, and are of both signs
    n, sigma = 120, 1.0
    gen = torch.Generator().manual_seed(5)
    values = torch.stack([mmd2(torch.randn(n, 3, generator=gen, **f64),
                               torch.randn(n, 3, generator=gen, **f64), sigma)
                          for _ in range(30)])
    se = float(values.std()) / math.sqrt(len(values))
    assert abs(float(values.mean())) < 5 * se
    assert bool((values < 0).any()) and bool((values > 0).any())
    # and the spread is far below a real difference's MMD² (mean shift 1 in one coordinate)
    assert float(values.std()) < 0.1 * gaussian_mmd2(1.0, 1.0, sigma, 3)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 8), st.integers(2, 8), st.integers(1, 4), st.integers(0, 10_000))
def test_mmd2_symmetric_and_biased_form_nonnegative(m, n, d, seed):
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(m, d, generator=gen, **f64), torch.randn(n, d, generator=gen, **f64)
    u = float(mmd2(x, y, [0.5, 1.0]))
    assert u == pytest.approx(float(mmd2(y, x, [0.5, 1.0])), rel=1e-10, abs=1e-12)
    # the unbiased estimate with the i = j terms put back is the biased V-statistic
    # ‖mean φ(x) − mean φ(y)‖² in the kernel's feature space, which is >= 0
    def k(a, b):
        return sum(torch.exp(-torch.cdist(a, b) ** 2 / (2 * w * w)) for w in (0.5, 1.0))
    s_xx, s_yy = float(k(x, x).sum()), float(k(y, y).sum())
    tr_x, tr_y = 2.0 * m, 2.0 * n                      # k(a, a) = 1 per bandwidth
    biased = (u - (s_xx - tr_x) / (m * (m - 1)) + s_xx / m**2
              - (s_yy - tr_y) / (n * (n - 1)) + s_yy / n**2)
    direct = s_xx / m**2 + s_yy / n**2 - 2 * float(k(x, y).mean())
    assert biased == pytest.approx(direct, rel=1e-9, abs=1e-10)
    assert biased >= -1e-10


def test_mmd2_bad_input():
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match="at least 2 samples"):
        mmd2(x[:1], x)
    with pytest.raises(ValueError, match="same feature dimension"):
        mmd2(x, torch.randn(5, 3))
    with pytest.raises(ValueError, match="bandwidth must be a positive"):
        mmd2(x, x, [1.0, -1.0])
    with pytest.raises(ValueError, match="empty sequence"):
        mmd2(x, x, [])


# ---------------------------------------------------------------- proxy A-distance
def test_proxy_a_distance_of_one_law_is_near_zero():
    gen = torch.Generator().manual_seed(6)
    n = 1000
    d_A = proxy_a_distance(torch.randn(n, 4, generator=gen), torch.randn(n, 4, generator=gen))
    # eps is the balanced error on n/2 + n/2 held-out points: sd √(1/4 / n); d_A = 2 − 4 eps has
    # sd 4 √(1/(4n)) = 2/√n ≈ 0.045; allow 5 of them
    assert abs(d_A) < 5 * 2 / math.sqrt(n)


def test_proxy_a_distance_is_two_for_separable_features():
    gen = torch.Generator().manual_seed(7)
    h_s = torch.randn(300, 3, generator=gen)
    assert proxy_a_distance(h_s, torch.randn(200, 3, generator=gen) + 20.0) == 2.0


def test_proxy_a_distance_against_the_bayes_error_of_two_gaussians():
    # N(0, I) vs N(Δ e_1, I), equal weights: the Bayes classifier is linear, its balanced error
    # is Φ(−Δ/2); logistic regression on n/2 per domain approaches it (excess error O(d/n))
    n, delta = 4000, 1.5
    gen = torch.Generator().manual_seed(8)
    h_s = torch.randn(n, 3, generator=gen, **f64)
    h_t = torch.randn(n, 3, generator=gen, **f64)
    h_t[:, 0] += delta
    eps_bayes = scipy.stats.norm.cdf(-delta / 2)
    expected = 2 * (1 - 2 * eps_bayes)
    # held-out sd of eps: √(eps(1 − eps) / n) (balanced over 2 × n/2 points); 5 sd in d_A = 4 eps
    tol = 4 * 5 * math.sqrt(eps_bayes * (1 - eps_bayes) / n) + 4 * 0.01
    assert proxy_a_distance(h_s, h_t) == pytest.approx(expected, abs=tol)
    # more separated -> larger
    h_t[:, 0] += 1.0
    assert proxy_a_distance(h_s, h_t) > expected + 0.2


def test_proxy_a_distance_averages_its_splits():
    gen = torch.Generator().manual_seed(12)
    h_s, h_t = torch.randn(60, 2, generator=gen), torch.randn(50, 2, generator=gen) + 0.7
    singles = [proxy_a_distance(h_s, h_t, seed=s) for s in (3, 4, 5)]
    assert len(set(singles)) > 1                      # the split matters...
    assert proxy_a_distance(h_s, h_t, seed=3, n_splits=3) == pytest.approx(np.mean(singles))


def test_proxy_a_distance_bad_input():
    with pytest.raises(ValueError, match="n >= 4"):
        proxy_a_distance(torch.ones(3, 2), torch.ones(10, 2))
    with pytest.raises(ValueError, match="same feature dimension"):
        proxy_a_distance(torch.ones(5, 2), torch.ones(10, 3))
    with pytest.raises(ValueError, match="l2 must be"):
        proxy_a_distance(torch.ones(5, 2), torch.ones(5, 2), l2=-1.0)
    with pytest.raises(ValueError, match="n_splits must be an integer >= 1"):
        proxy_a_distance(torch.ones(5, 2), torch.ones(5, 2), n_splits=0)


# ---------------------------------------------------------------- the training step
def small_net(discriminator=True):
    torch.manual_seed(0)
    return DomainAdaptationNet(nn.Linear(4, 3), nn.Linear(3, 2),
                               nn.Linear(3, 1) if discriminator else None)


def test_dann_step_reverses_the_domain_gradient_into_the_features():
    # one DANN step's feature gradient = d(class loss)/dθ_f − lam · d(domain loss)/dθ_f
    gen = torch.Generator().manual_seed(9)
    x_s, x_t = torch.randn(8, 4, generator=gen), torch.randn(8, 4, generator=gen) + 1
    y_s = torch.randint(0, 2, (8,), generator=gen)
    steps = 4
    net = small_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.0)      # lr 0: read the gradients, keep θ
    step = adaptation_step(net, opt, "dann", steps=steps)
    step((x_s, y_s, x_t))                                 # call 0: p = 0, lam = 0
    metrics = step((x_s, y_s, x_t))                       # call 1: p = 1/4
    lam = dann_lambda(1 / steps)
    assert metrics["lam"] == pytest.approx(lam)
    g_step = net.feature.weight.grad.clone()
    # the two parts, computed separately without the GRL
    f = net.feature
    h = f(torch.cat([x_s, x_t]))
    class_loss = nn.functional.cross_entropy(net.classifier(h[:8]), y_s)
    dom = torch.cat([torch.zeros(8), torch.ones(8)])
    dom_loss = nn.functional.binary_cross_entropy_with_logits(net.discriminator(h).squeeze(1), dom)
    (g_c,) = torch.autograd.grad(class_loss, f.weight, retain_graph=True)
    (g_d,) = torch.autograd.grad(dom_loss, f.weight)
    assert torch.allclose(g_step, g_c - lam * g_d, atol=1e-6)
    assert metrics["align_loss"] == pytest.approx(dom_loss.item(), rel=1e-6)
    # the discriminator itself gets the plain (un-reversed) gradient: it minimises its loss
    (g_D,) = torch.autograd.grad(
        nn.functional.binary_cross_entropy_with_logits(
            net.discriminator(h.detach()).squeeze(1), dom), net.discriminator.weight)
    assert torch.allclose(net.discriminator.weight.grad, g_D, atol=1e-6)


@pytest.mark.parametrize("method", ["coral", "mmd"])
def test_coral_and_mmd_steps_add_the_ramped_penalty(method):
    gen = torch.Generator().manual_seed(10)
    x_s, x_t = torch.randn(8, 4, generator=gen), 2 * torch.randn(8, 4, generator=gen)
    y_s = torch.randint(0, 2, (8,), generator=gen)
    net = small_net(discriminator=False)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    step = adaptation_step(net, opt, method, steps=2, weight=3.0, bandwidths=1.0)
    step((x_s, y_s, x_t))
    metrics = step((x_s, y_s, x_t))                       # p = 1/2
    lam = dann_lambda(0.5)
    h_s, h_t = net.features(x_s), net.features(x_t)
    penalty = coral_loss(h_s, h_t) if method == "coral" else mmd2(h_s, h_t, 1.0)
    loss = nn.functional.cross_entropy(net.classifier(h_s), y_s) + 3.0 * lam * penalty
    (g,) = torch.autograd.grad(loss, net.feature.weight)
    assert torch.allclose(net.feature.weight.grad, g, atol=1e-6)
    assert metrics["align_loss"] == pytest.approx(penalty.item(), rel=1e-5, abs=1e-7)


def test_source_step_trains_a_classifier():
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(64, 4, generator=gen)
    y = (x[:, 0] > 0).long()
    net = small_net(discriminator=False)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    step = adaptation_step(net, opt, "source", steps=100)
    first = step((x, y, x))["class_loss"]
    for _ in range(100):
        last = step((x, y, x))["class_loss"]
    assert last < 0.3 * first
    assert float((net(x).argmax(1) == y).float().mean()) > 0.95


def test_adaptation_step_bad_input():
    net = small_net(discriminator=False)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="method must be one of"):
        adaptation_step(net, opt, "adabn", steps=10)
    with pytest.raises(ValueError, match="needs a model with a discriminator"):
        adaptation_step(net, opt, "dann", steps=10)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        adaptation_step(net, opt, "coral", steps=0)
    with pytest.raises(ValueError, match="model must be a DomainAdaptationNet"):
        adaptation_step(nn.Linear(2, 2), opt, "coral", steps=10)
    with pytest.raises(ValueError, match="batch must be \\(x_s, y_s, x_t\\)"):
        adaptation_step(net, opt, "coral", steps=10)((torch.ones(2, 4), torch.zeros(2)))
    with pytest.raises(ValueError, match="feature must be an nn.Module"):
        DomainAdaptationNet("f", nn.Linear(2, 2))
    with pytest.raises(ValueError, match="has no discriminator"):
        net.domain_logits(torch.ones(2, 3))

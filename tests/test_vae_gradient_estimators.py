"""vae.gradient_estimators against closed-form gradients and variances of E_q f for a diagonal
Gaussian q = N(μ, diag σ²), φ = (μ, logvar).

Monte Carlo tolerances come from the sample size: a mean is within 5 standard errors s/√n of its
exact value, a variance within 5 standard errors √((m₄ − s⁴)/n) (m₄ the fourth central moment).
"""

import math

import pytest
import torch

from vae.gradient_estimators import (
    GradientSamples,
    reparameterized_gradient,
    score_function_gradient,
)

N = 50_000
D64 = torch.float64
MU = torch.tensor([0.5, -1.0, 2.0], dtype=D64)
LOGVAR = torch.tensor([0.0, -1.0, 0.5], dtype=D64)
A = torch.tensor([0.3, -0.2, 0.5], dtype=D64)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def sq(z):
    return z.pow(2).sum(-1)


def lin(z):
    return z @ A


def mean_se(g):
    return g.mean(0), g.std(0) / math.sqrt(g.shape[0])


def var_se(g):
    c = g - g.mean(0)
    s2 = c.pow(2).mean(0)
    return g.var(0), ((c.pow(4).mean(0) - s2 ** 2).clamp_min(0) / g.shape[0]).sqrt()


def assert_unbiased(est: GradientSamples, exact_mu, exact_logvar, k=5.0):
    for g, exact in ((est.mu, exact_mu), (est.logvar, exact_logvar)):
        m, se = mean_se(g)
        assert ((m - exact).abs() <= k * se + 1e-12).all(), (m, exact, se)


def assert_variance(g, exact, k=5.0):
    v, se = var_se(g)
    assert ((v - exact).abs() <= k * se + 1e-12).all(), (v, exact, se)


def assert_smaller_variance(g_small, g_large, k=5.0):
    v1, se1 = var_se(g_small)
    v2, se2 = var_se(g_large)
    assert (v2 - v1 > k * (se1 ** 2 + se2 ** 2).sqrt()).all(), (v1, v2)


SIGMA2 = LOGVAR.exp()
EXACT = {  # f: (∇_μ E f, ∇_logvar E f)
    "square": (sq, 2 * MU, SIGMA2),                       # E Σ z² = Σ (μ² + σ²)
    "linear": (lin, A, torch.zeros(3, dtype=D64)),        # E a·z = a·μ
}


def exp_f(z):
    return (z @ A).exp()


# E exp(a·z) = exp(a·μ + ½ Σ a² σ²): ∇_μ = a E, ∇_logvar = ½ a² σ² E
E_EXP = math.exp(float(A @ MU + 0.5 * (A ** 2 * SIGMA2).sum()))
EXACT["exp"] = (exp_f, A * E_EXP, 0.5 * A ** 2 * SIGMA2 * E_EXP)


@pytest.mark.parametrize("name", sorted(EXACT))
@pytest.mark.parametrize("baseline", [None, "mean", "optimal", 1.5])
def test_score_function_is_unbiased(name, baseline):
    f, g_mu, g_logvar = EXACT[name]
    est = score_function_gradient(f, MU, LOGVAR, N, baseline=baseline, generator=gen(1))
    assert est.mu.shape == est.logvar.shape == est.z.shape == (N, 3) and est.f.shape == (N,)
    assert_unbiased(est, g_mu, g_logvar)


@pytest.mark.parametrize("name", sorted(EXACT))
def test_reparameterized_is_unbiased(name):
    f, g_mu, g_logvar = EXACT[name]
    est = reparameterized_gradient(f, MU, LOGVAR, N, generator=gen(2))
    assert est.mu.shape == est.logvar.shape == (N, 3)
    assert_unbiased(est, g_mu, g_logvar)


def test_score_is_the_closed_form_gaussian_score():
    # with f ≡ 1 and no baseline the terms are ∇ log q: ε/σ and ½(ε² − 1)
    est = score_function_gradient(lambda z: torch.ones(z.shape[:-1], dtype=z.dtype), MU, LOGVAR,
                                  1000, generator=gen(3))
    sigma = (0.5 * LOGVAR).exp()
    eps = (est.z - MU) / sigma
    torch.testing.assert_close(est.mu, eps / sigma)
    torch.testing.assert_close(est.logvar, 0.5 * (eps ** 2 - 1))


def test_reparameterized_terms_are_the_pathwise_derivative():
    est = reparameterized_gradient(sq, MU, LOGVAR, 1000, generator=gen(4))
    sigma = (0.5 * LOGVAR).exp()
    eps = (est.z - MU) / sigma
    torch.testing.assert_close(est.mu, 2 * est.z)                        # ∇_z Σ z² = 2z
    torch.testing.assert_close(est.logvar, 2 * est.z * 0.5 * sigma * eps)   # · ∂z/∂logvar
    torch.testing.assert_close(est.f, sq(est.z))


def test_linear_f_variances_match_closed_forms():
    # f = a·z, c = a·μ, S = Σ_k a_k² σ_k². Score: Var g^μ_j = (c² + S)/σ_j² + a_j²,
    # Var g^logvar_j = ½ (c² + S) + 2 a_j² σ_j².
    # Pathwise: Var g^μ = 0, Var g^logvar_j = ¼ a_j² σ_j².
    c, s = float(A @ MU), float((A ** 2 * SIGMA2).sum())
    for b in (0.0, c):  # the exact mean of f as the baseline replaces c by c − b = 0
        est = score_function_gradient(lin, MU, LOGVAR, N, baseline=b, generator=gen(5))
        assert_variance(est.mu, ((c - b) ** 2 + s) / SIGMA2 + A ** 2)
        assert_variance(est.logvar, 0.5 * ((c - b) ** 2 + s) + 2 * A ** 2 * SIGMA2)
    rep = reparameterized_gradient(lin, MU, LOGVAR, N, generator=gen(6))
    torch.testing.assert_close(rep.mu, A.expand(N, 3))      # zero variance: ∇_z f = a
    assert_variance(rep.logvar, 0.25 * A ** 2 * SIGMA2)


@pytest.mark.parametrize("name", ["square", "linear"])
def test_score_function_variance_exceeds_reparameterized(name):
    f = EXACT[name][0]
    sf = score_function_gradient(f, MU, LOGVAR, N, generator=gen(7)).stacked()
    rep = reparameterized_gradient(f, MU, LOGVAR, N, generator=gen(8)).stacked()
    assert_smaller_variance(rep, sf)


@pytest.mark.parametrize("baseline", ["mean", "optimal", "exact"])
def test_baseline_reduces_variance_and_keeps_the_mean(baseline):
    f, g_mu, g_logvar = EXACT["square"]
    b = float((MU ** 2 + SIGMA2).sum()) if baseline == "exact" else baseline
    plain = score_function_gradient(f, MU, LOGVAR, N, generator=gen(9))
    reduced = score_function_gradient(f, MU, LOGVAR, N, baseline=b, generator=gen(9))
    torch.testing.assert_close(reduced.z, plain.z)           # the same samples
    assert_unbiased(reduced, g_mu, g_logvar)
    assert_smaller_variance(reduced.stacked(), plain.stacked())


def test_optimal_baseline_beats_the_mean_baseline_on_average():
    # Var g_j(b) is minimised at b*_j; the leave-one-out estimate is close to it at this n
    f = EXACT["square"][0]
    opt = score_function_gradient(f, MU, LOGVAR, N, baseline="optimal", generator=gen(10))
    mean = score_function_gradient(f, MU, LOGVAR, N, baseline="mean", generator=gen(10))
    assert opt.stacked().var(0).sum() < mean.stacked().var(0).sum()


def test_score_function_handles_a_non_differentiable_f():
    # f = 1[z_0 > 0]: E f = Φ(μ_0/σ_0); ∇_μ0 = φ(μ_0/σ_0)/σ_0, ∇_logvar0 = −φ(μ_0/σ_0) μ_0/(2σ_0)
    def step(z):
        return (z[..., 0] > 0).to(z.dtype)

    m, s = float(MU[0]), math.exp(0.5 * float(LOGVAR[0]))
    pdf = math.exp(-0.5 * (m / s) ** 2) / math.sqrt(2 * math.pi)
    exact_mu = torch.tensor([pdf / s, 0.0, 0.0], dtype=D64)
    exact_logvar = torch.tensor([-pdf * m / (2 * s), 0.0, 0.0], dtype=D64)
    est = score_function_gradient(step, MU, LOGVAR, N, baseline="mean", generator=gen(11))
    assert_unbiased(est, exact_mu, exact_logvar)
    with pytest.raises(ValueError, match="differentiable"):
        reparameterized_gradient(step, MU, LOGVAR, 10)


def test_batch_shapes_generator_and_detached_outputs():
    mu = torch.zeros(4, 2, requires_grad=True)
    logvar = torch.zeros(4, 2, requires_grad=True)
    for fn in (score_function_gradient, reparameterized_gradient):
        a = fn(sq, mu, logvar, 7, generator=gen(12))
        b = fn(sq, mu, logvar, 7, generator=gen(12))
        assert a.mu.shape == a.logvar.shape == (7, 4, 2) and a.f.shape == (7, 4)
        assert a.stacked().shape == (7, 4, 4)
        torch.testing.assert_close(a.stacked(), b.stacked())
        assert not a.mu.requires_grad and a.mu.dtype == torch.float32
    assert mu.grad is None
    with torch.no_grad():   # works inside no_grad too
        assert reparameterized_gradient(sq, mu, logvar, 3).mu.shape == (3, 4, 2)
        assert score_function_gradient(sq, mu, logvar, 3, baseline="mean").mu.shape == (3, 4, 2)


def test_baseline_tensor_broadcasts_over_rows():
    mu, logvar = torch.zeros(4, 2, dtype=D64), torch.zeros(4, 2, dtype=D64)
    b = torch.arange(4, dtype=D64)
    est = score_function_gradient(sq, mu, logvar, 5, baseline=b, generator=gen(13))
    torch.testing.assert_close(est.mu, (est.f - b)[..., None] * est.z)   # score = z at μ=0, σ=1


def test_bad_input():
    ok = (sq, MU, LOGVAR, 10)
    with pytest.raises(ValueError, match="same shape"):
        score_function_gradient(sq, MU, LOGVAR[:2], 10)
    with pytest.raises(ValueError, match="float tensor"):
        reparameterized_gradient(sq, torch.zeros(3, dtype=torch.long), LOGVAR, 10)
    for fn in (score_function_gradient, reparameterized_gradient):
        with pytest.raises(ValueError, match="n must be"):
            fn(sq, MU, LOGVAR, 0)
        with pytest.raises(ValueError, match="n must be"):
            fn(sq, MU, LOGVAR, 2.0)
        with pytest.raises(ValueError, match="shape"):
            fn(lambda z: z, MU, LOGVAR, 10)                  # (n, d) instead of (n,)
        with pytest.raises(ValueError, match="NaN"):
            fn(lambda z: sq(z) * math.nan, MU, LOGVAR, 10)
        with pytest.raises(ValueError, match="generator"):
            fn(*ok, generator=0)
    with pytest.raises(ValueError, match="n >= 2"):
        score_function_gradient(sq, MU, LOGVAR, 1, baseline="mean")
    with pytest.raises(ValueError, match="baseline must be one of"):
        score_function_gradient(*ok, baseline="median")
    with pytest.raises(ValueError, match="baseline must be None"):
        score_function_gradient(*ok, baseline=True)
    with pytest.raises(ValueError, match="broadcast"):
        score_function_gradient(*ok, baseline=torch.zeros(3, dtype=D64))

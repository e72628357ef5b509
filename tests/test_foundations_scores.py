"""Tests for foundations.scores: Langevin against exact AR(1)/Lyapunov recursions, Tweedie against
closed forms and quadrature, DSM = ESM + C against the Gaussian closed form.

Monte Carlo tolerances: a mean of n i.i.d. terms has standard error sd / sqrt(n); a sample
variance of Gaussian values has standard error v sqrt(2 / (n - 1)); a sample covariance entry
(i, j) of a Gaussian has variance (V_ii V_jj + V_ij²) / n. Every comparison allows 4 standard
errors (a false failure about once in 16,000 per comparison) and fails by many standard errors if
the convention (e.g. the η/2 drift) or the formula were wrong.
"""

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import scipy.stats
import torch
from conftest import random_mixture as shared_random_mixture
from hypothesis import given, settings
from hypothesis import strategies as st

from foundations import (
    GaussianMixture,
    annealed_langevin_sample,
    autograd_score,
    dsm_loss,
    esm_loss,
    gaussian_mixture_posterior_mean,
    langevin_sample,
    tweedie_denoise,
)

F64 = dict(dtype=torch.float64)


def random_mixture(k=3, d=2, seed=0, dtype=torch.float64):
    return shared_random_mixture(k, d, seed, dtype, spread=2.0, jitter=0.3)


# ----------------------------------------------------------------------------- the score

def test_autograd_score_matches_the_closed_form_with_batch_dims():
    gm = random_mixture()
    x = 3 * torch.randn(4, 5, 2, **F64)
    with torch.no_grad():
        closed = gm.score(x)
    torch.testing.assert_close(autograd_score(gm.log_prob, x), closed, rtol=1e-10, atol=1e-10)


def test_autograd_score_of_a_gaussian_is_linear():
    x = torch.randn(10, 3, **F64)
    score = autograd_score(lambda z: -0.5 * (z - 1.0).pow(2).sum(-1) / 4.0, x)
    torch.testing.assert_close(score, -(x - 1.0) / 4.0)


# ----------------------------------------------------------------------------- Langevin

def test_langevin_1d_gaussian_follows_the_exact_ar1_law():
    # On N(m, s²) ULA is x' = m + ρ (x - m) + √η ε with ρ = 1 - η / (2 s²). From x_0 = 0:
    # E x_t = m + ρ^t (0 - m), Var x_t = v (1 - ρ^{2t}), v = s² / (1 - η / (4 s²)).
    m, s2, eta, n = 1.0, 0.25, 0.25, 40_000
    rho = 1 - eta / (2 * s2)
    v = s2 / (1 - eta / (4 * s2))
    g = torch.Generator().manual_seed(0)
    x0 = torch.zeros(n, 1, **F64)
    for t in (3, 60):
        x = langevin_sample(lambda z: -(z - m) / s2, x0, eta, t, generator=g)[:, 0]
        mean_t, var_t = m - rho**t * m, v * (1 - rho ** (2 * t))
        assert abs(x.mean().item() - mean_t) < 4 * math.sqrt(var_t / n)
        assert abs(x.var().item() - var_t) < 4 * var_t * math.sqrt(2 / (n - 1))
    # the O(η) bias is real and is resolved here: v exceeds s² by 1/3, about 50 s.e.
    assert x.var().item() - s2 > 20 * v * math.sqrt(2 / (n - 1))


def test_langevin_2d_gaussian_stationary_covariance_solves_the_lyapunov_equation():
    # x' = μ + A (x - μ) + √η ε with A = I - (η/2) Σ⁻¹; the stationary covariance V solves
    # V = A V Aᵀ + η I, computed independently by scipy.
    mu = torch.tensor([0.5, -1.0], **F64)
    sigma = torch.tensor([[1.0, 0.6], [0.6, 0.8]], **F64)
    precision = torch.linalg.inv(sigma)
    eta, n = 0.3, 40_000
    a = np.eye(2) - 0.5 * eta * precision.numpy()
    v = torch.from_numpy(scipy.linalg.solve_discrete_lyapunov(a, eta * np.eye(2)))
    g = torch.Generator().manual_seed(1)
    x0 = mu + torch.randn(n, 2, generator=g, **F64) @ torch.linalg.cholesky(sigma).T
    x = langevin_sample(lambda z: -(z - mu) @ precision, x0, eta, 300, generator=g)
    assert ((x.mean(0) - mu).abs() < 4 * (v.diagonal() / n).sqrt()).all()
    cov = torch.cov(x.T)
    se = ((v.diagonal()[:, None] * v.diagonal()[None, :] + v**2) / n).sqrt()
    assert ((cov - v).abs() < 4 * se).all(), (cov, v)
    assert ((cov - sigma).abs() > 4 * se).any()  # ... and the bias away from Σ is visible


def test_langevin_is_reproducible_with_a_generator_and_keeps_dtype():
    x0 = torch.randn(50, 2)
    a = langevin_sample(lambda z: -z, x0, 0.1, 20, generator=torch.Generator().manual_seed(3))
    b = langevin_sample(lambda z: -z, x0, 0.1, 20, generator=torch.Generator().manual_seed(3))
    c = langevin_sample(lambda z: -z, x0, 0.1, 20, generator=torch.Generator().manual_seed(4))
    assert a.dtype == torch.float32 and a.shape == x0.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not a.requires_grad


def test_langevin_accepts_a_score_that_uses_autograd():
    x0 = torch.randn(20, 2, **F64)
    x = langevin_sample(lambda z: autograd_score(lambda w: -0.5 * w.pow(2).sum(-1), z), x0, 0.1,
                        5, generator=torch.Generator().manual_seed(0))
    y = langevin_sample(lambda z: -z, x0, 0.1, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, y)


def test_langevin_reports_divergence():
    with pytest.raises(FloatingPointError, match="diverged"):
        langevin_sample(lambda z: -z / 0.01, torch.ones(5, 1), 1.0, 400)  # η ≫ 4 s²


def test_annealed_langevin_matches_the_exact_gaussian_recursion():
    # Target N(0, s²), score of p_σ = N(0, s² + σ²) is -x / (s² + σ²). Level i uses
    # α_i = ε σ_i² / σ_L²: the mean and variance follow m ← ρ m, v ← ρ² v + α, ρ = 1 - α / (2 τ²).
    s2, sigmas, eps, steps, n = 0.5, [3.0, 1.0, 0.3], 0.01, 40, 40_000
    seen = []

    def score(x, sigma):
        seen.append(sigma)
        return -x / (s2 + sigma**2)

    g = torch.Generator().manual_seed(5)
    x = annealed_langevin_sample(score, torch.full((n, 1), 2.0, **F64), sigmas, eps, steps,
                                 generator=g)[:, 0]
    m, v = 2.0, 0.0
    for sigma in sigmas:
        alpha, tau2 = eps * sigma**2 / sigmas[-1] ** 2, s2 + sigma**2
        rho = 1 - alpha / (2 * tau2)
        for _ in range(steps):
            m, v = rho * m, rho**2 * v + alpha
    assert seen == [s for s in sigmas for _ in range(steps)]
    assert abs(x.mean().item() - m) < 4 * math.sqrt(v / n)
    assert abs(x.var().item() - v) < 4 * v * math.sqrt(2 / (n - 1))
    # the last level has not forgotten the earlier, wider ones: the whole schedule is checked,
    # not just the last level's stationary variance τ² / (1 - α / (4 τ²))
    v_last = tau2 / (1 - alpha / (4 * tau2))
    assert abs(v - v_last) > 10 * v * math.sqrt(2 / (n - 1))


# ----------------------------------------------------------------------------- Tweedie

def test_tweedie_for_a_gaussian_prior_is_the_shrinkage_estimator():
    mu0, s2 = torch.tensor([1.0, -2.0], **F64), 0.7
    prior = GaussianMixture(torch.ones(1, **F64), mu0[None], scales=torch.tensor([s2**0.5], **F64))
    y = 3 * torch.randn(100, 2, **F64)
    for sigma in (0.1, 1.0, 3.0):
        exact = mu0 + s2 / (s2 + sigma**2) * (y - mu0)  # E[x|y] = y s²/(s²+σ²) when μ0 = 0
        tweedie = tweedie_denoise(y, sigma, lambda z, s=sigma: -(z - mu0) / (s2 + s**2))
        torch.testing.assert_close(tweedie, exact, rtol=1e-12, atol=1e-12)
        with torch.no_grad():
            torch.testing.assert_close(gaussian_mixture_posterior_mean(prior, y, sigma), exact,
                                       rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sigma", [0.05, 0.5, 2.0])
def test_tweedie_with_the_smoothed_score_is_the_mixture_posterior_mean(sigma):
    gm = random_mixture(k=4, d=3, seed=2)
    y = 4 * torch.randn(200, 3, **F64)
    with torch.no_grad():
        a = tweedie_denoise(y, sigma, gm.smoothed(sigma).score)
        b = gaussian_mixture_posterior_mean(gm, y, sigma)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_mixture_posterior_mean_matches_quadrature_in_1d():
    gm = GaussianMixture(torch.tensor([0.2, 0.5, 0.3], **F64),
                         torch.tensor([[-3.0], [0.5], [2.0]], **F64),
                         scales=torch.tensor([0.4, 1.0, 0.3], **F64))
    w, mu, sd = (gm.weights.detach().numpy(), gm.means.detach().numpy()[:, 0],
                 gm.scale_tril.detach().numpy()[:, 0, 0])

    def prior(x):
        return float(np.sum(w * scipy.stats.norm.pdf(x, mu, sd)))

    for sigma in (0.3, 1.5):
        for y in (-4.0, -1.0, 0.7, 2.5):
            def lik(x, y=y, sigma=sigma):
                return prior(x) * scipy.stats.norm.pdf(y, x, sigma)

            num = scipy.integrate.quad(lambda x, f=lik: x * f(x), -15, 15, points=[-3, 0.5, 2],
                                       epsabs=1e-13, epsrel=1e-12, limit=200)[0]
            den = scipy.integrate.quad(lik, -15, 15, points=[-3, 0.5, 2], epsabs=1e-13,
                                       epsrel=1e-12, limit=200)[0]
            with torch.no_grad():
                ours = gaussian_mixture_posterior_mean(gm, torch.tensor([[y]], **F64), sigma)
            assert ours.item() == pytest.approx(num / den, rel=1e-8, abs=1e-9)


def test_posterior_mean_float32_and_batch_dims():
    gm64 = random_mixture()
    gm = GaussianMixture(gm64.weights.detach().float(), gm64.means.detach().float(),
                         gm64.covariances.detach().float())
    y = torch.randn(2, 7, 2)
    with torch.no_grad():
        out = gaussian_mixture_posterior_mean(gm, y, 0.5)
        ref = gaussian_mixture_posterior_mean(gm64, y.double(), 0.5)
    assert out.shape == (2, 7, 2) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.05, 3.0))
def test_posterior_mean_is_monotone_in_1d(seed, sigma):
    # d E[x|y] / dy = Var(x | y) / σ² >= 0 (differentiate Tweedie's formula once more)
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(3, generator=g, **F64) + 0.05
    gm = GaussianMixture(w / w.sum(), 4 * torch.randn(3, 1, generator=g, **F64),
                         scales=torch.rand(3, generator=g, **F64) + 0.1)
    y = torch.linspace(-10, 10, 401, **F64)[:, None]
    with torch.no_grad():
        m = gaussian_mixture_posterior_mean(gm, y, sigma)[:, 0]
    assert (m[1:] - m[:-1] >= -1e-9).all()


# ----------------------------------------------------------------------------- DSM and ESM

def test_dsm_equals_esm_plus_the_constant_for_linear_models_on_gaussian_data():
    # x ~ N(μ, Σ), y = x + σε ~ N(μ, S), S = Σ + σ²I, P = S⁻¹, true score -P(y - μ).
    # For s(y) = A y + b: ESM = tr(M S Mᵀ) + ‖M μ + b - P μ‖², M = A + P, exactly;
    # C = D/σ² - E‖P(y - μ)‖² = D/σ² - tr(P); DSM = ESM + C.
    mu = torch.tensor([1.0, -0.5], **F64)
    cov = torch.tensor([[1.0, 0.3], [0.3, 0.5]], **F64)
    sigma, n, d = 0.5, 100_000, 2
    s = cov + sigma**2 * torch.eye(d, **F64)
    p = torch.linalg.inv(s)
    c = d / sigma**2 - torch.trace(p).item()
    g = torch.Generator().manual_seed(7)
    models = [(torch.zeros(d, d, **F64), torch.zeros(d, **F64)),
              (-p, p @ mu),                                     # the true score: ESM = 0
              (torch.tensor([[-2.0, 0.5], [0.0, -0.3]], **F64), torch.tensor([0.3, 1.0], **F64))]
    dsm_means = []
    for a, b in models:
        x = mu + torch.randn(n, d, generator=g, **F64) @ torch.linalg.cholesky(cov).T
        eps = torch.randn(n, d, generator=g, **F64)

        def model(y, a=a, b=b):
            return y @ a.T + b

        dsm = dsm_loss(model, x, sigma, eps, reduction="none")
        esm = esm_loss(model, x + sigma * eps, lambda y: -(y - mu) @ p, reduction="none")
        m_mat = a + p
        esm_exact = (torch.trace(m_mat @ s @ m_mat.T) + (m_mat @ mu + b - p @ mu).pow(2).sum())
        for terms, exact in ((dsm, esm_exact.item() + c), (esm, esm_exact.item()),
                             (dsm - esm, c)):
            se = terms.std().item() / math.sqrt(n)
            assert abs(terms.mean().item() - exact) < 4 * se + 1e-12, (terms.mean(), exact, se)
        dsm_means.append(dsm.mean().item())
    assert max(dsm_means) - min(dsm_means) > 1.0  # the models really differ


def test_dsm_loss_with_given_noise_is_the_formula_over_any_event_shape():
    x = torch.randn(6, 2, 3, 3, **F64)
    eps = torch.randn_like(x)
    model = torch.tanh
    sigma = 0.7
    expected = (model(x + sigma * eps) + eps / sigma).pow(2).sum((1, 2, 3))
    torch.testing.assert_close(dsm_loss(model, x, sigma, eps, reduction="none"), expected)
    torch.testing.assert_close(dsm_loss(model, x, sigma, eps), expected.mean())
    torch.testing.assert_close(esm_loss(model, x, torch.sin),
                               (torch.tanh(x) - torch.sin(x)).pow(2).sum((1, 2, 3)).mean())


def test_dsm_loss_draws_reproducible_noise_and_is_non_negative():
    x = torch.randn(30, 2)
    a = dsm_loss(torch.sin, x, 0.3, generator=torch.Generator().manual_seed(1))
    b = dsm_loss(torch.sin, x, 0.3, generator=torch.Generator().manual_seed(1))
    assert a.dtype == torch.float32 and a.ndim == 0 and torch.equal(a, b) and a.item() >= 0


def test_dsm_and_esm_gradcheck():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 2, generator=g, **F64)
    eps = torch.randn(5, 2, generator=g, **F64)
    a = torch.randn(2, 2, generator=g, **F64, requires_grad=True)
    b = torch.randn(2, generator=g, **F64, requires_grad=True)
    xr = x.clone().requires_grad_(True)

    def dsm(a, b, x):
        return dsm_loss(lambda y: torch.tanh(y @ a.T + b), x, 0.4, eps)

    def esm(a, b, x):
        return esm_loss(lambda y: torch.tanh(y @ a.T + b), x, torch.sin)

    assert torch.autograd.gradcheck(dsm, (a, b, xr))
    assert torch.autograd.gradcheck(esm, (a, b, xr))


# ----------------------------------------------------------------------------- bad input

def test_value_errors():
    x = torch.randn(4, 2)
    score = lambda z: -z  # noqa: E731
    bad = [
        lambda: langevin_sample(score, x, 0.0, 10),
        lambda: langevin_sample(score, x, -1.0, 10),
        lambda: langevin_sample(score, x, float("nan"), 10),
        lambda: langevin_sample(score, x, 0.1, 0),
        lambda: langevin_sample(score, x, 0.1, 2.5),
        lambda: langevin_sample(score, x, 0.1, True),
        lambda: langevin_sample(score, torch.randn(4), 0.1, 10),
        lambda: langevin_sample(score, torch.randn(4, 2, 2), 0.1, 10),
        lambda: langevin_sample(score, torch.zeros(4, 2, dtype=torch.long), 0.1, 10),
        lambda: langevin_sample(lambda z: z[:, :1], x, 0.1, 10),
        lambda: annealed_langevin_sample(lambda z, s: -z, x, [1.0, 2.0], 0.1, 5),
        lambda: annealed_langevin_sample(lambda z, s: -z, x, [1.0, 1.0], 0.1, 5),
        lambda: annealed_langevin_sample(lambda z, s: -z, x, [1.0, -0.1], 0.1, 5),
        lambda: annealed_langevin_sample(lambda z, s: -z, x, [], 0.1, 5),
        lambda: annealed_langevin_sample(lambda z, s: -z, x, [[1.0]], 0.1, 5),
        lambda: annealed_langevin_sample(lambda z, s: -z, x, [1.0], 0.0, 5),
        lambda: annealed_langevin_sample(lambda z, s: -z, x, [1.0], 0.1, 0),
        lambda: tweedie_denoise(x, 0.0, score),
        lambda: tweedie_denoise(x, -1.0, score),
        lambda: tweedie_denoise(x, torch.ones(2), score),
        lambda: tweedie_denoise(torch.randn(4), 0.5, score),
        lambda: tweedie_denoise(x, 0.5, lambda z: z.sum(1)),
        lambda: gaussian_mixture_posterior_mean(random_mixture(), x.double(), 0.0),
        lambda: gaussian_mixture_posterior_mean(random_mixture(), torch.randn(4, 3, **F64), 1.0),
        lambda: gaussian_mixture_posterior_mean("not a mixture", x, 1.0),
        lambda: gaussian_mixture_posterior_mean(random_mixture(), x, 1.0),  # float32 y, f64 prior
        lambda: dsm_loss(score, x, 0.0),
        lambda: dsm_loss(score, x, 0.5, eps=torch.randn(4, 3)),
        lambda: dsm_loss(score, x, 0.5, reduction="sum"),
        lambda: dsm_loss(score, torch.randn(4), 0.5),
        lambda: esm_loss(score, x, lambda z: z[:, :1]),
        lambda: esm_loss(score, x, score, reduction="max"),
        lambda: autograd_score(lambda z: z, x),
        lambda: autograd_score(lambda z: z.sum(-1), torch.zeros(3, 2, dtype=torch.long)),
    ]
    for i, call in enumerate(bad):
        with pytest.raises(ValueError):
            call()
            pytest.fail(f"case {i} raised nothing")

"""Tests for foundations.latent: EM for Gaussian mixtures and probabilistic PCA, against closed
forms, autograd stationarity, scipy and scikit-learn."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from conftest import random_mixture as shared_random_mixture
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import PCA

from foundations import (
    PPCA,
    GaussianMixture,
    em_fit,
    em_lower_bound,
    em_m_step,
    ppca_fit,
    ppca_log_likelihood,
    ppca_posterior,
)

F64 = torch.float64


def random_mixture(k=3, d=2, seed=0, spread=3.0, dtype=F64):
    return shared_random_mixture(k, d, seed, dtype, spread=spread, jitter=0.2, weight_floor=0.2,
                                 cov_scale=0.3)


def random_responsibilities(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(n, k, generator=g, dtype=F64), dim=1)


def bound_by_hand(x, mixture, q):
    """F(q, θ) from the mixture's own (differentiable) component_log_prob."""
    a = torch.log_softmax(mixture.logits, 0) + mixture.component_log_prob(x)
    return (q * a - torch.special.xlogy(q, q)).sum(1).mean()


# ---------------------------------------------------------------- EM for Gaussian mixtures


@pytest.mark.parametrize("reg", [0.0, 0.05])
def test_m_step_is_the_weighted_closed_form(reg):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 2, generator=g, dtype=F64)
    r = random_responsibilities(40, 3, seed=4)
    gm = em_m_step(x, r, reg=reg)
    xn, rn = x.numpy(), r.numpy()
    for k in range(3):  # the textbook formulas, one component at a time, in NumPy
        n_k = rn[:, k].sum()
        mu = (rn[:, k, None] * xn).sum(0) / n_k
        scatter = sum(rn[i, k] * np.outer(xn[i] - mu, xn[i] - mu) for i in range(40))
        cov = (scatter + reg * np.eye(2)) / (n_k + 1) if reg > 0 else scatter / n_k
        np.testing.assert_allclose(gm.weights[k].item(), n_k / 40, rtol=1e-12)
        np.testing.assert_allclose(gm.means[k].detach().numpy(), mu, rtol=1e-12)
        np.testing.assert_allclose(gm.covariances[k].detach().numpy(), cov, rtol=1e-10)


@pytest.mark.parametrize("reg", [0.0, 0.05])
def test_m_step_is_a_stationary_point_of_the_bound(reg):
    # The M step maximises F(r, θ) + (1/N) Σ_k log p(Σ_k); its gradient in every unconstrained
    # parameter (logits, means, Cholesky factors) must vanish there.
    g = torch.Generator().manual_seed(5)
    x = torch.randn(60, 2, generator=g, dtype=F64)
    r = random_responsibilities(60, 3, seed=6)
    gm = em_m_step(x, r, reg=reg)
    objective = bound_by_hand(x, gm, r)
    if reg > 0:
        cov = gm.covariances
        objective = objective - 0.5 * (torch.logdet(cov)
                                       + reg * torch.linalg.inv(cov).diagonal(0, -2, -1).sum(-1)
                                       ).sum() / 60
    grads = torch.autograd.grad(objective, list(gm.parameters()))
    for grad in grads:
        assert grad.abs().max().item() < 1e-10


def test_bound_is_loglik_minus_kl_and_tight_at_the_posterior():
    gm = random_mixture()
    x = gm.sample(30, generator=torch.Generator().manual_seed(1))
    q = random_responsibilities(30, 3, seed=2)
    post = gm.posterior(x).detach()
    ll = gm.log_prob(x).mean().detach()
    kl = (q * (q.log() - post.log())).sum(1).mean()
    torch.testing.assert_close(em_lower_bound(x, gm, q), ll - kl, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(em_lower_bound(x, gm, post), ll, rtol=1e-12, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), temperature=st.floats(0.01, 10.0))
def test_bound_never_exceeds_the_log_likelihood(seed, temperature):
    gm = random_mixture(seed=seed % 7)
    x = gm.sample(20, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    q = torch.softmax(torch.randn(20, 3, generator=g, dtype=F64) / temperature, dim=1)
    assert em_lower_bound(x, gm, q).item() <= gm.log_prob(x).mean().item() + 1e-12


def matched_errors(estimated, true):
    cost = torch.cdist(estimated, true).numpy()
    rows, cols = linear_sum_assignment(cost)
    return cost[rows, cols]


def test_em_is_monotone_and_recovers_a_well_separated_mixture():
    truth = GaussianMixture(torch.tensor([0.2, 0.3, 0.5], dtype=F64),
                            torch.tensor([[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0]], dtype=F64),
                            scales=torch.tensor([0.5, 0.8, 0.6], dtype=F64))
    n = 3_000
    x = truth.sample(n, generator=torch.Generator().manual_seed(0))
    result = em_fit(x, 3, iterations=200, tol=1e-10, reg=0.0, seed=1)
    # float64 evaluation of an average of N log-densities of size ~3 is good to ~1e-14; the
    # tolerance 1e-11 is a thousand times that and far below any genuine decrease.
    assert result.log_likelihood.diff().min().item() > -1e-11
    assert result.converged
    # each centre within 5 standard errors: sd of a mean of n π_k points is scale / √(n π_k)
    err = matched_errors(result.mixture.means.detach(), truth.means.detach())
    se = (truth.covariances.diagonal(0, -2, -1).sum(-1).sqrt()
          / (n * truth.weights).sqrt()).max().item()
    assert err.max() < 5 * se
    # and it ends at least as high as the truth itself (it maximises the likelihood)
    assert result.log_likelihood[-1].item() >= truth.log_prob(x).mean().item()


def test_em_with_a_prior_survives_a_dead_component_and_is_monotone():
    # Two components start on the same point: one of them loses everything. With reg > 0 its
    # covariance stays reg·I and J never decreases; with reg = 0 the M step would be singular.
    g = torch.Generator().manual_seed(2)
    x = torch.cat([torch.randn(100, 2, generator=g, dtype=F64) * 0.1 + 3,
                   torch.randn(100, 2, generator=g, dtype=F64) * 0.1 - 3])
    init = GaussianMixture(torch.full((3,), 1 / 3, dtype=F64),
                           torch.stack([x[0], x[0], x[150]]), scales=torch.full((3,), 0.01,
                                                                                 dtype=F64))
    result = em_fit(x, init, iterations=100, tol=0.0, reg=1e-4)
    assert torch.isfinite(result.objective).all()
    assert result.objective.diff().min().item() > -1e-11
    assert init.means[1].tolist() == x[0].tolist()  # the start was copied, not changed


def test_em_float32_and_init_by_k():
    x = random_mixture(spread=6.0).sample(500, generator=torch.Generator().manual_seed(0))
    result = em_fit(x.float(), 3, iterations=50)
    assert result.mixture.means.dtype == torch.float32
    assert result.log_likelihood.dtype == torch.float32
    assert len(result.log_likelihood) == len(result.objective) <= 51
    assert torch.isfinite(result.log_likelihood).all()


def test_em_bad_inputs():
    x = torch.randn(10, 2, dtype=F64)
    with pytest.raises(ValueError, match="k must"):
        em_fit(x, 0)
    with pytest.raises(ValueError, match="k must"):
        em_fit(x, 11)
    with pytest.raises(ValueError, match="init must"):
        em_fit(x, 2.5)
    with pytest.raises(ValueError, match="D = 3"):
        em_fit(x, random_mixture(d=3))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        em_fit(torch.randn(10, dtype=F64), 2)
    with pytest.raises(ValueError, match="non-finite"):
        em_fit(torch.tensor([[0.0, math.nan], [1.0, 2.0]], dtype=F64), 1)
    with pytest.raises(ValueError, match="iterations"):
        em_fit(x, 2, iterations=-1)
    with pytest.raises(ValueError, match="reg"):
        em_fit(x, 2, reg=-1.0)
    with pytest.raises(ValueError, match="tol"):
        em_fit(x, 2, tol=-1.0)
    r = random_responsibilities(10, 2)
    with pytest.raises(ValueError, match="shape"):
        em_m_step(x, r[:5])
    with pytest.raises(ValueError, match="sum to one"):
        em_m_step(x, 2 * r)
    with pytest.raises(ValueError, match="non-negative"):
        em_m_step(x, r - 0.6)
    with pytest.raises(ValueError, match="collapsed"):
        em_m_step(x, torch.eye(2, dtype=F64)[torch.tensor([0] * 9 + [1])])  # one point on k=1
    with pytest.raises(ValueError, match="columns"):
        em_lower_bound(x, random_mixture(k=3), r)


# ---------------------------------------------------------------- probabilistic PCA


def random_ppca(d=6, q=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(d, q, generator=g, dtype=F64), torch.randn(d, generator=g, dtype=F64),
            torch.tensor(0.3, dtype=F64))


def low_rank_data(n=400, d=6, q=2, seed=0, dtype=F64):
    W, mu, sigma2 = random_ppca(d, q, seed)
    g = torch.Generator().manual_seed(seed + 100)
    z = torch.randn(n, q, generator=g, dtype=F64)
    x = z @ W.T + mu + sigma2.sqrt() * torch.randn(n, d, generator=g, dtype=F64)
    return x.to(dtype)


def test_ppca_log_likelihood_matches_scipy_and_the_trace_form():
    W, mu, sigma2 = random_ppca()
    C = W @ W.T + sigma2 * torch.eye(6, dtype=F64)
    x = 2 * torch.randn(4, 5, 6, dtype=F64)  # two batch dimensions
    ours = ppca_log_likelihood(x, W, mu, sigma2)
    assert ours.shape == (4, 5)
    ref = scipy.stats.multivariate_normal(mu.numpy(), C.numpy()).logpdf(x.numpy())
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-11)
    flat = x.reshape(-1, 6)
    S = (flat - mu).T @ (flat - mu) / len(flat)
    trace_form = -0.5 * (6 * math.log(2 * math.pi) + torch.logdet(C)
                         + torch.trace(torch.linalg.solve(C, S)))
    torch.testing.assert_close(ours.mean(), trace_form, rtol=1e-12, atol=1e-12)


def test_ppca_log_likelihood_gradcheck():
    W, mu, sigma2 = random_ppca(d=4, q=2)
    x = torch.randn(5, 4, dtype=F64)
    params = (W.requires_grad_(), mu.requires_grad_(), sigma2.requires_grad_())
    assert torch.autograd.gradcheck(lambda W, mu, s: ppca_log_likelihood(x, W, mu, s), params)


def test_ppca_fit_is_stationary_and_matches_sklearn():
    x = low_rank_data()
    fitted = ppca_fit(x, 2)
    assert isinstance(fitted, PPCA) and fitted.W.shape == (6, 2) and fitted.sigma2.shape == ()
    W, mu, s = (t.clone().requires_grad_() for t in fitted)
    ll = ppca_log_likelihood(x, W, mu, s).mean()
    for grad in torch.autograd.grad(ll, (W, mu, s)):
        assert grad.abs().max().item() < 1e-10
    # scikit-learn's PCA gives the same model, with covariances normalised by N - 1
    pca = PCA(n_components=2).fit(x.numpy())
    C = fitted.W @ fitted.W.T + fitted.sigma2 * torch.eye(6, dtype=F64)
    np.testing.assert_allclose(C.numpy(), pca.get_covariance() * (len(x) - 1) / len(x),
                               rtol=1e-9, atol=1e-12)
    # span(W) = the top principal subspace: all cosines of the principal angles are one
    Q, _ = torch.linalg.qr(fitted.W)
    cosines = torch.linalg.svdvals(torch.from_numpy(pca.components_) @ Q)
    torch.testing.assert_close(cosines, torch.ones(2, dtype=F64), rtol=0, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), size=st.floats(1e-3, 1.0))
def test_ppca_fit_beats_every_perturbation(seed, size):
    x = low_rank_data(n=200)
    W, mu, s = ppca_fit(x, 2)
    best = ppca_log_likelihood(x, W, mu, s).mean().item()
    g = torch.Generator().manual_seed(seed)
    W2 = W + size * torch.randn(W.shape, generator=g, dtype=F64)
    mu2 = mu + size * torch.randn(mu.shape, generator=g, dtype=F64)
    s2 = s * math.exp(size * torch.randn(1, generator=g, dtype=F64).item())
    assert ppca_log_likelihood(x, W2, mu2, s2).mean().item() <= best + 1e-12
    # a rotation W R leaves C = W Wᵀ + σ² I, hence the likelihood, unchanged
    R, _ = torch.linalg.qr(torch.randn(2, 2, generator=g, dtype=F64))
    torch.testing.assert_close(ppca_log_likelihood(x, W @ R, mu, s).mean().item(), best,
                               rtol=1e-12, atol=1e-12)


def test_ppca_posterior_is_gaussian_conditioning():
    W, mu, sigma2 = random_ppca()
    C = W @ W.T + sigma2 * torch.eye(6, dtype=F64)
    x = torch.randn(7, 6, dtype=F64)
    mean, cov = ppca_posterior(x, W, mu, sigma2)
    # joint (z, x) is Gaussian with Cov(z, x) = Wᵀ: E[z|x] = Wᵀ C⁻¹ (x - μ), Cov = I - Wᵀ C⁻¹ W
    torch.testing.assert_close(mean, torch.linalg.solve(C, (x - mu).T).T @ W)
    torch.testing.assert_close(cov, torch.eye(2, dtype=F64) - W.T @ torch.linalg.solve(C, W))


def test_ppca_float32():
    x = low_rank_data(dtype=torch.float32)
    fitted = ppca_fit(x, 2)
    assert fitted.W.dtype == torch.float32
    ll = ppca_log_likelihood(x, *fitted)
    ref = ppca_log_likelihood(x.double(), *ppca_fit(x.double(), 2))
    torch.testing.assert_close(ll.double(), ref, rtol=1e-4, atol=1e-4)


def test_ppca_bad_inputs():
    x = low_rank_data()
    W, mu, s = ppca_fit(x, 2)
    for q in (0, 6, 2.0, True):
        with pytest.raises(ValueError, match="q must"):
            ppca_fit(x, q)
    with pytest.raises(ValueError, match="N >= 2"):
        ppca_fit(x[:1], 2)
    with pytest.raises(ValueError, match="non-finite"):
        ppca_fit(torch.where(x > 2, math.inf, x), 2)
    with pytest.raises(ValueError, match="zero"):  # 3 points in 6-D: a plane, σ² would be 0
        ppca_fit(x[:3], 3)
    with pytest.raises(ValueError, match="W must have D = 6"):
        ppca_log_likelihood(x, W[:5], mu, s)
    with pytest.raises(ValueError, match="mu must"):
        ppca_log_likelihood(x, W, mu[:5], s)
    with pytest.raises(ValueError, match="sigma2"):
        ppca_log_likelihood(x, W, mu, 0.0)
    with pytest.raises(ValueError, match="sigma2"):
        ppca_posterior(x, W, mu, torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="non-finite"):
        ppca_log_likelihood(x.clone().fill_(math.nan), W, mu, s)
    with pytest.raises(ValueError, match=r"\(D, q\)"):
        ppca_posterior(x, W.flatten(), mu, s)

"""Tests for foundations.densities against torch.distributions, scipy and closed forms."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from conftest import random_mixture
from hypothesis import given, settings
from hypothesis import strategies as st

from foundations import GaussianMixture, gaussian_log_prob, gaussian_mle, mle_step
from utils.training import fit


def test_gaussian_log_prob_matches_scipy():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 3, generator=g, dtype=torch.float64)
    cov = a @ a.T + torch.eye(3, dtype=torch.float64)
    mean = torch.randn(3, generator=g, dtype=torch.float64)
    x = torch.randn(10, 3, generator=g, dtype=torch.float64)
    ours = gaussian_log_prob(x, mean, torch.linalg.cholesky(cov))
    ref = scipy.stats.multivariate_normal(mean.numpy(), cov.numpy()).logpdf(x.numpy())
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mixture_log_prob_matches_torch_distributions(dtype):
    gm = random_mixture(k=4, d=3, dtype=dtype)
    ref = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=gm.weights),
        torch.distributions.MultivariateNormal(gm.means, scale_tril=gm.scale_tril),
    )
    x = 2 * torch.randn(5, 7, 3, dtype=dtype)  # two batch dimensions
    ours = gm.log_prob(x)
    assert ours.shape == (5, 7) and ours.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(ours, ref.log_prob(x), rtol=tol, atol=tol)


def test_constructor_roundtrip_and_scales():
    gm = random_mixture()
    w, mu, cov = gm.weights.detach(), gm.means.detach(), gm.covariances.detach()
    again = GaussianMixture(w, mu, cov)
    torch.testing.assert_close(again.covariances, cov)
    torch.testing.assert_close(again.weights, w)
    iso = GaussianMixture(torch.tensor([1.0]), torch.zeros(1, 2), scales=torch.tensor([0.5]))
    torch.testing.assert_close(iso.covariances[0], 0.25 * torch.eye(2))
    diag = GaussianMixture(torch.tensor([1.0]), torch.zeros(1, 2),
                           scales=torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(diag.covariances[0], torch.diag(torch.tensor([1.0, 4.0])))


def test_density_integrates_to_one():
    gm = GaussianMixture(torch.tensor([0.3, 0.7], dtype=torch.float64),
                         torch.tensor([[-1.0, 0.0], [1.5, 0.5]], dtype=torch.float64),
                         scales=torch.tensor([0.5, 0.8], dtype=torch.float64))
    t = torch.linspace(-6, 7, 801, dtype=torch.float64)
    xx, yy = torch.meshgrid(t, t, indexing="ij")
    p = gm.log_prob(torch.stack([xx, yy], -1)).exp()
    dx = float(t[1] - t[0])
    assert p.sum().item() * dx * dx == pytest.approx(1.0, abs=1e-6)


def test_posterior_is_bayes_rule():
    gm = random_mixture(k=3)
    x = torch.randn(6, 2, dtype=torch.float64)
    joint = gm.weights * gm.component_log_prob(x).exp()
    torch.testing.assert_close(gm.posterior(x), joint / joint.sum(-1, keepdim=True))


def test_sample_moments_match_mixture_moments():
    gm = random_mixture(k=3, d=2)
    n = 200_000
    x = gm.sample(n, generator=torch.Generator().manual_seed(0))
    w, mu, cov = gm.weights.detach(), gm.means.detach(), gm.covariances.detach()
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (cov + mu[:, :, None] * mu[:, None, :])).sum(0)
    total_cov = second - mean[:, None] * mean[None, :]
    se = (torch.diagonal(total_cov) / n).sqrt()  # standard error of each coordinate's mean
    assert torch.all((x.mean(0) - mean).abs() < 5 * se)
    torch.testing.assert_close(torch.cov(x.T), total_cov, rtol=0.03, atol=0.03)


def test_sample_is_reproducible_with_generator():
    gm = random_mixture()
    a = gm.sample(10, generator=torch.Generator().manual_seed(3))
    b = gm.sample(10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_gaussian_mle_is_the_closed_form():
    x = torch.randn(500, 3, dtype=torch.float64) @ torch.tensor(
        [[1.0, 0.0, 0.0], [0.5, 2.0, 0.0], [0.0, -1.0, 0.3]], dtype=torch.float64)
    mean, cov = gaussian_mle(x)
    torch.testing.assert_close(mean, x.mean(0))
    torch.testing.assert_close(cov, torch.cov(x.T, correction=0))


def test_gradient_ascent_reaches_the_gaussian_mle():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=g, dtype=torch.float64) @ torch.tensor(
        [[1.0, 0.0], [0.8, 0.5]], dtype=torch.float64) + torch.tensor([2.0, -1.0],
                                                                        dtype=torch.float64)
    f64 = dict(dtype=torch.float64)
    model = GaussianMixture(torch.ones(1, **f64), torch.zeros(1, 2, **f64),
                            scales=torch.ones(1, **f64))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    fit(mle_step(model, opt), lambda s: x, 1500, models=model, optimizers=opt,
        device=torch.device("cpu"), progress=False)
    mean, cov = gaussian_mle(x)
    torch.testing.assert_close(model.means[0].detach(), mean, atol=1e-4, rtol=0)
    torch.testing.assert_close(model.covariances[0].detach(), cov, atol=1e-4, rtol=0)


def test_from_data_seeds_distinct_well_separated_modes():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    g = torch.Generator().manual_seed(0)
    x = centres.repeat_interleave(100, 0) + 0.1 * torch.randn(400, 2, generator=g)
    gm = GaussianMixture.from_data(x, 4, seed=0)
    nearest = torch.cdist(gm.means.detach(), centres).argmin(1)
    assert sorted(nearest.tolist()) == [0, 1, 2, 3]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 10_000))
def test_posterior_sums_to_one_and_log_prob_bounded_by_components(k, d, seed):
    gm = random_mixture(k=k, d=d, seed=seed)
    x = torch.randn(8, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(gm.posterior(x).sum(-1), torch.ones(8, dtype=torch.float64))
    comp = gm.component_log_prob(x)
    lp = gm.log_prob(x)
    # log Σ π_k p_k lies between min_k log p_k and max_k log p_k (a weighted mean of densities)
    assert torch.all(lp <= comp.max(-1).values + 1e-9)
    assert torch.all(lp >= comp.min(-1).values - 1e-9)


def test_gradcheck_log_prob():
    gm = random_mixture(k=2, d=2)
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gm.log_prob, (x,))


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (([0.5, 0.6], torch.zeros(2, 2)), dict(scales=[1.0, 1.0]), "sum to one"),
        (([1.5, -0.5], torch.zeros(2, 2)), dict(scales=[1.0, 1.0]), "non-negative"),
        (([1.0], torch.zeros(1, 2)), dict(scales=[0.0]), "positive"),
        (([1.0], torch.zeros(1, 2)), dict(scales=[[1.0, 1.0, 1.0]]), "scales must have shape"),
        (([1.0], torch.zeros(2)), dict(scales=[1.0]), r"\(K, D\)"),
        (([0.5, 0.5], torch.zeros(1, 2)), dict(scales=[1.0]), "weights must have shape"),
        (([1.0], torch.zeros(1, 2)), dict(), "exactly one"),
        (([1.0], torch.zeros(1, 2), torch.eye(2)[None]), dict(scales=[1.0]), "exactly one"),
        (([1.0], torch.zeros(1, 2), torch.eye(3)[None]), dict(), "covariances must have shape"),
        (([1.0], torch.zeros(1, 2), torch.tensor([[[1.0, 2.0], [2.0, 1.0]]])), dict(),
         "not positive definite"),
        (([1.0], torch.zeros(1, 2), torch.tensor([[[1.0, 0.5], [0.0, 1.0]]])), dict(), "symmetric"),
    ],
)
def test_mixture_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(*args, **kwargs)


def test_methods_bad_input():
    gm = random_mixture(d=2)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        gm.log_prob(torch.zeros(4, 3, dtype=torch.float64))
    for n in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="n must be"):
            gm.sample(n)
    with pytest.raises(ValueError, match="k must be"):
        GaussianMixture.from_data(torch.zeros(5, 2), 0)
    with pytest.raises(ValueError, match="N >= k"):
        GaussianMixture.from_data(torch.zeros(3, 2), 4)
    with pytest.raises(ValueError, match="positive diagonal"):
        gaussian_log_prob(torch.zeros(2), torch.zeros(2), -torch.eye(2))
    with pytest.raises(ValueError, match="scale_tril"):
        gaussian_log_prob(torch.zeros(2), torch.zeros(2), torch.eye(3))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        gaussian_mle(torch.zeros(3))
    assert math.isfinite(gm.log_prob(torch.zeros(2, dtype=torch.float64)).item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_score_matches_autograd(dtype):
    gm = random_mixture(k=3, d=3, dtype=dtype)
    x = torch.randn(4, 5, 3, dtype=dtype, requires_grad=True)
    (grad,) = torch.autograd.grad(gm.log_prob(x).sum(), x)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(gm.score(x), grad, rtol=tol, atol=tol)


def test_smoothed_is_the_density_of_noisy_samples():
    gm = random_mixture(k=2, d=2)
    noisy = gm.smoothed(0.7)
    torch.testing.assert_close(noisy.covariances - gm.covariances,
                               0.49 * torch.eye(2, dtype=torch.float64).expand(2, 2, 2))
    n = 100_000
    g = torch.Generator().manual_seed(0)
    y = gm.sample(n, generator=g) + 0.7 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    # P(y_1 > 0) from samples vs from the smoothed density on a grid
    t = torch.linspace(-15, 15, 601, dtype=torch.float64)
    xx, yy = torch.meshgrid(t, t, indexing="xy")
    with torch.no_grad():
        p = noisy.log_prob(torch.stack([xx, yy], -1)).exp()
    dx = float(t[1] - t[0])
    prob = float(p[xx > 0].sum() * dx * dx)
    assert abs(float((y[:, 0] > 0).double().mean()) - prob) < 5 * (prob * (1 - prob) / n) ** 0.5
    with pytest.raises(ValueError, match="sigma"):
        gm.smoothed(-1.0)


def test_mle_step_stops_before_the_update_on_a_nan_loss():
    from utils.training import NonFiniteLossError

    model = torch.nn.Linear(2, 2)
    model.log_prob = lambda x: model(x).sum(-1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLossError, match="nll is nan"):
        mle_step(model, opt)(torch.full((4, 2), float("nan")))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())) and not opt.state

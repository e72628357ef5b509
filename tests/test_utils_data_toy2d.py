"""Tests for utils.data.toy2d: samples against the densities they claim, and the densities
against scipy."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from utils.data import TOY2D_NAMES, toy2d, toy2d_log_prob, toy2d_mixture

N_LARGE = 20_000
P_FLOOR = 1e-3  # a goodness-of-fit p-value below this fails the test (the seed is fixed)


@pytest.mark.parametrize("name", TOY2D_NAMES)
@pytest.mark.parametrize("n", [1, 2, 501])
def test_shape_and_dtype(name, n):
    x = toy2d(name, n)
    assert x.shape == (n, 2)
    assert x.dtype == torch.float32
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_deterministic_given_seed_and_different_across_seeds(name):
    assert torch.equal(toy2d(name, 300, seed=7), toy2d(name, 300, seed=7))
    assert not torch.equal(toy2d(name, 300, seed=7), toy2d(name, 300, seed=8))


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_does_not_touch_global_rng(name):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    toy2d(name, 50, seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_mixture_centres():
    mu, sigma = toy2d_mixture("ring8")
    assert mu.shape == (8, 2) and mu.dtype == torch.float32 and sigma == 0.02
    angle = torch.atan2(mu[:, 1].double(), mu[:, 0].double()) % (2 * math.pi)
    torch.testing.assert_close(mu.norm(dim=1), torch.full((8,), 2.0))
    torch.testing.assert_close(angle, 2 * math.pi * torch.arange(8).double() / 8)
    mu, sigma = toy2d_mixture("grid25")
    assert mu.shape == (25, 2) and sigma == 0.05
    expected = {(-4.0 + 2 * i, -4.0 + 2 * j) for i in range(5) for j in range(5)}
    assert {tuple(row) for row in mu.tolist()} == expected


def test_mixture_returns_fresh_tensors():
    mu, _ = toy2d_mixture("ring8")
    mu.zero_()
    assert toy2d_mixture("ring8")[0].norm(dim=1).min() > 1.9


def _nearest_centre(x, mu):
    distance = torch.cdist(x.double(), mu.double())  # (n, K)
    return distance.min(dim=1)


@pytest.mark.parametrize("name", ["ring8", "grid25"])
def test_distance_to_nearest_centre_is_chi_2(name):
    # Components are >= 1.5 apart, i.e. >= 30 sigma, so the nearest centre is the one a point
    # came from and |x - mu| / sigma follows the chi distribution with 2 degrees of freedom:
    # P(|x - mu| <= 3 sigma) = 1 - exp(-9/2).
    mu, sigma = toy2d_mixture(name)
    d, _ = _nearest_centre(toy2d(name, N_LARGE, seed=3), mu)
    p = 1 - math.exp(-9 / 2)
    fraction = (d <= 3 * sigma).double().mean().item()
    assert abs(fraction - p) <= 5 * math.sqrt(p * (1 - p) / N_LARGE)
    # The whole distribution: (d / sigma)^2 ~ chi^2(2).
    assert scipy.stats.kstest((d / sigma).numpy() ** 2, scipy.stats.chi2(df=2).cdf).pvalue > P_FLOOR


@pytest.mark.parametrize("name", ["ring8", "grid25"])
def test_modes_equally_weighted(name):
    mu, _ = toy2d_mixture(name)
    _, k = _nearest_centre(toy2d(name, N_LARGE, seed=4), mu)
    counts = np.bincount(k.numpy(), minlength=len(mu))
    assert counts.min() > 0
    assert scipy.stats.chisquare(counts).pvalue > P_FLOOR


@pytest.mark.parametrize("name", ["ring8", "grid25"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_mixture_log_prob_matches_scipy(name, dtype):
    mu, sigma = toy2d_mixture(name)
    rng = np.random.default_rng(0)
    points = np.concatenate([toy2d(name, 200, seed=5).double().numpy(),
                             rng.uniform(-5, 5, size=(200, 2))])
    components = [scipy.stats.multivariate_normal(m, sigma**2 * np.eye(2)) for m in mu.double()]
    per_component = np.stack([c.logpdf(points) for c in components], axis=1)
    expected = logsumexp(per_component, axis=1) - math.log(len(mu))
    log_p = toy2d_log_prob(name, torch.tensor(points, dtype=dtype))
    assert log_p.shape == (400,) and log_p.dtype == dtype
    rtol = 1e-10 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(log_p.double().numpy(), expected, rtol=rtol, atol=rtol)


def test_checkerboard_samples_lie_on_black_squares_uniformly():
    x = toy2d("checkerboard", N_LARGE, seed=6)
    assert ((x >= -4) & (x < 4)).all()
    square = torch.floor(x / 2).long()  # (a, b) in -2..1
    assert ((square[:, 0] + square[:, 1]) % 2 == 0).all()
    assert (toy2d_log_prob("checkerboard", x) == -math.log(32)).all()
    cell = (square[:, 0] + 2) * 4 + (square[:, 1] + 2)
    counts = np.bincount(cell.numpy(), minlength=16)
    black_counts = counts[counts > 0]
    assert len(black_counts) == 8
    assert scipy.stats.chisquare(black_counts).pvalue > P_FLOOR


def test_checkerboard_density_integrates_to_one():
    # Monte Carlo over the box [-5, 5]^2 (area 100), which contains the support:
    # integral = 100 E_U[p(U)], and 100 p(U) takes the values 100/32 and 0.
    n = 200_000
    u = 10 * torch.rand(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 5
    values = 100 * toy2d_log_prob("checkerboard", u).exp()
    estimate = values.mean().item()
    assert abs(estimate - 1.0) <= 5 * values.std().item() / math.sqrt(n)


def test_checkerboard_log_prob_at_known_points():
    points = torch.tensor([[0.5, 0.5], [1.0, -1.0], [-4.0, -4.0], [-3.0, 3.0], [3.5, 2.5],
                           [5.0, 0.5], [0.5, -4.5], [4.0, 0.5]])
    inside = torch.tensor([True, False, True, False, True, False, False, False])
    log_p = toy2d_log_prob("checkerboard", points)
    assert torch.equal(log_p == -math.log(32), inside)
    assert torch.isneginf(log_p[~inside]).all()


@settings(max_examples=200, deadline=None)
@given(st.floats(-6, 6, allow_nan=False), st.floats(-6, 6, allow_nan=False))
def test_checkerboard_log_prob_matches_parity_rule(x, y):
    log_p = toy2d_log_prob("checkerboard", torch.tensor([[x, y]], dtype=torch.float64)).item()
    black = -4 <= x < 4 and -4 <= y < 4 and (math.floor(x / 2) + math.floor(y / 2)) % 2 == 0
    assert log_p == (-math.log(32) if black else -math.inf)


def test_swissroll_lies_near_its_curve():
    # x = (t cos t, t sin t) / 3.5 + 0.1 eps: every point is within 5 noise stds of the curve
    # (P(|eps| > 5) = exp(-12.5) per point).
    x = toy2d("swissroll", 1000, seed=2).double()
    t = torch.linspace(1.5 * math.pi, 4.5 * math.pi, 20_000, dtype=torch.float64)
    curve = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) / 3.5
    assert torch.cdist(x, curve).min(dim=1).values.max() < 0.5
    assert x.abs().max() < 4.5


def test_moons_lie_near_the_scaled_sklearn_moons_and_are_centred():
    from sklearn.datasets import make_moons

    x = toy2d("moons", 4000, seed=2).double()
    clean, _ = make_moons(10_000, noise=None, shuffle=False)
    mean = torch.tensor([0.5, 0.25], dtype=torch.float64)
    curve = math.sqrt(2) * (torch.from_numpy(clean) - mean)
    noise_std = math.sqrt(2) * 0.05
    assert torch.cdist(x[:1000], curve).min(dim=1).values.max() < 5.5 * noise_std
    # make_moons spaces the angles evenly (linspace), so the mean misses (0, 0) by O(1/n) plus
    # noise of std 0.07 / sqrt(n) ~ 0.001; the noiseless per-coordinate variances average
    # 2 (0.75 + 0.244) / 2 = 0.994.
    assert x.mean(dim=0).abs().max() < 0.01
    assert abs(x.var(dim=0).mean() - 0.994) < 0.03


@pytest.mark.parametrize("name", ["ring8", "grid25", "swissroll", "moons", "checkerboard"])
def test_ranges(name):
    x = toy2d(name, 5000, seed=9)
    assert x.abs().max() < 4.5


def test_bad_name():
    with pytest.raises(ValueError, match=r"name must be one of .*'ring8'.*got 'ring9'"):
        toy2d("ring9", 10)
    with pytest.raises(ValueError, match="name must be one of"):
        toy2d_log_prob("spiral", torch.zeros(3, 2))


@pytest.mark.parametrize("n", [0, -5, 2.5, 3.0, True, "10", None])
def test_bad_n(n):
    with pytest.raises(ValueError, match=r"n must be an integer >= 1, got"):
        toy2d("ring8", n)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match="seed must be an integer"):
        toy2d("ring8", 10, seed=seed)


def test_numpy_integer_n_is_accepted():
    assert toy2d("moons", np.int64(7)).shape == (7, 2)


@pytest.mark.parametrize("name", ["swissroll", "moons", "checkerboard"])
def test_mixture_of_a_non_mixture(name):
    with pytest.raises(ValueError, match=r"Gaussian mixtures \('ring8', 'grid25'\), got"):
        toy2d_mixture(name)


@pytest.mark.parametrize("name", ["swissroll", "moons"])
def test_log_prob_without_closed_form(name):
    with pytest.raises(ValueError, match=r"closed-form densities of .*got '.*', which has none"):
        toy2d_log_prob(name, torch.zeros(3, 2))


@pytest.mark.parametrize("x", [torch.zeros(3, 3), torch.zeros(2), torch.zeros(3, 2, 1),
                               torch.zeros(3, 2, dtype=torch.int64), np.zeros((3, 2))])
def test_log_prob_bad_points(x):
    with pytest.raises(ValueError, match=r"x must be a floating-point tensor of shape \(N, 2\)"):
        toy2d_log_prob("ring8", x)

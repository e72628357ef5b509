"""Tests for vae.relaxed: Gumbel-softmax samples on the simplex, the Gumbel-max law of their
argmax (Monte Carlo, chi-square), the τ → 0 limit, the straight-through variant, the Concrete
density against torch.distributions, the temperature schedule, the KL to the uniform prior, and
bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch.distributions import Categorical, RelaxedOneHotCategorical, kl_divergence

from vae.relaxed import (
    categorical_kl_uniform,
    gumbel_softmax,
    relaxed_log_prob,
    temperature_schedule,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_samples_lie_on_the_simplex():
    logits = torch.randn(7, 3, 5, generator=gen(1), dtype=torch.float64) * 3
    for tau in (0.1, 1.0, 10.0):
        y = gumbel_softmax(logits, tau, generator=gen(2))
        assert y.shape == logits.shape and y.dtype == torch.float64
        assert bool((y >= 0).all())
        torch.testing.assert_close(y.sum(-1), torch.ones(7, 3, dtype=torch.float64))


def test_argmax_is_distributed_as_softmax_of_logits():
    """The Gumbel-max trick at τ = 0.5 (so that misplacing τ, e.g. ℓ/τ + g, changes the law):
    a chi-square goodness-of-fit test on n draws at level 1e-4."""
    n, logits = 40_000, torch.tensor([1.0, 0.0, -1.0, 2.0, 0.5], dtype=torch.float64)
    y = gumbel_softmax(logits.expand(n, 5), 0.5, generator=gen(3))
    counts = torch.bincount(y.argmax(-1), minlength=5).double()
    expected = n * torch.softmax(logits, -1)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < stats.chi2.ppf(1 - 1e-4, df=4)
    # the test has power: it rejects softmax(ℓ / τ), the law a misplaced τ would give
    wrong = n * torch.softmax(logits / 0.5, -1)
    assert float(((counts - wrong) ** 2 / wrong).sum()) > stats.chi2.ppf(1 - 1e-4, df=4)


def test_tends_to_one_hot_as_tau_goes_to_zero():
    logits = torch.randn(500, 6, generator=gen(4), dtype=torch.float64)
    taus = [5.0, 1.0, 0.3, 0.1, 0.01]
    # the same noise for every τ: the largest coordinate is non-increasing in τ, sample by sample
    maxes = [gumbel_softmax(logits, t, generator=gen(5)).max(-1).values for t in taus]
    for hot, cold in zip(maxes, maxes[1:]):
        assert bool((cold >= hot - 1e-12).all())
    assert float(maxes[-1].mean()) > 0.99 and float(maxes[0].mean()) < 0.5
    # the limit is the one-hot vector of the Gumbel-max sample
    hard = gumbel_softmax(logits, 0.01, hard=True, generator=gen(5))
    assert bool((hard.argmax(-1) == gumbel_softmax(logits, 5.0, generator=gen(5)).argmax(-1)).all())


def test_hard_is_exactly_one_hot_with_the_soft_gradient():
    logits = torch.randn(64, 4, generator=gen(6), requires_grad=True)
    w = torch.randn(64, 4, generator=gen(7))
    hard = gumbel_softmax(logits, 0.7, hard=True, generator=gen(8))
    assert bool(((hard == 0) | (hard == 1)).all()) and bool((hard.sum(-1) == 1).all())
    (g_hard,) = torch.autograd.grad((w * hard).sum(), logits)
    soft = gumbel_softmax(logits, 0.7, generator=gen(8))
    assert bool((hard.argmax(-1) == soft.argmax(-1)).all())
    (g_soft,) = torch.autograd.grad((w * soft).sum(), logits)
    torch.testing.assert_close(g_hard, g_soft)
    assert float(g_soft.abs().sum()) > 0


def test_gradient_float64_gradcheck():
    logits = torch.randn(3, 4, generator=gen(9), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda ell: gumbel_softmax(ell, 0.8, generator=gen(10)),
                                    (logits,))


def test_deterministic_given_generator_and_follows_dtype():
    logits = torch.randn(5, 3, generator=gen(11))
    a, b = gumbel_softmax(logits, 1.0, generator=gen(12)), gumbel_softmax(logits, 1.0,
                                                                         generator=gen(12))
    assert torch.equal(a, b) and a.dtype == torch.float32
    assert not torch.equal(a, gumbel_softmax(logits, 1.0, generator=gen(13)))


def test_relaxed_log_prob_matches_torch_distributions():
    logits = torch.randn(10, 4, generator=gen(14), dtype=torch.float64)
    for tau in (0.3, 1.0, 2.5):
        y = gumbel_softmax(logits, tau, generator=gen(15))
        expected = RelaxedOneHotCategorical(torch.tensor(tau, dtype=torch.float64),
                                            logits=logits).log_prob(y)
        torch.testing.assert_close(relaxed_log_prob(y, logits, tau), expected)


def test_relaxed_density_integrates_to_one_for_two_categories():
    """K = 2: the density in y_1 on (0, 1) integrates to one (trapezoid on a fine grid)."""
    y1 = torch.linspace(1e-6, 1 - 1e-6, 200_001, dtype=torch.float64)
    y = torch.stack([y1, 1 - y1], -1)
    p = relaxed_log_prob(y, torch.tensor([0.3, -0.4], dtype=torch.float64), 1.5).exp()
    assert abs(float(torch.trapezoid(p, y1)) - 1) < 1e-3


def test_temperature_schedule_values():
    assert temperature_schedule(0) == 1.0
    assert temperature_schedule(1000, tau0=2.0, tau_min=0.1, rate=1e-3) == \
        pytest.approx(2.0 * math.exp(-1.0))
    assert temperature_schedule(10**7) == 0.5                 # the floor
    assert temperature_schedule(999, rate=1e-3, every=500) == \
        pytest.approx(math.exp(-0.5))                          # updated every 500 steps
    assert temperature_schedule(123, rate=0.0) == 1.0
    taus = [temperature_schedule(t, rate=1e-3) for t in range(0, 3000, 100)]
    assert all(a >= b for a, b in zip(taus, taus[1:])) and min(taus) == 0.5


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), st.integers(2, 7), st.floats(-30, 30), st.integers(0, 2**31 - 1))
def test_categorical_kl_uniform_matches_torch(n, k, scale, seed):
    logits = torch.randn(3, n, k, generator=gen(seed), dtype=torch.float64) * scale
    kl = categorical_kl_uniform(logits)
    uniform = Categorical(logits=torch.zeros(3, n, k, dtype=torch.float64))
    expected = kl_divergence(Categorical(logits=logits), uniform).sum(-1)
    torch.testing.assert_close(kl, expected)
    assert bool((kl >= -1e-12).all()) and bool((kl <= n * math.log(k) + 1e-9).all())


def test_categorical_kl_uniform_shapes_and_zero():
    assert categorical_kl_uniform(torch.zeros(4, 3, 2, 5)).shape == (4,)
    torch.testing.assert_close(categorical_kl_uniform(torch.zeros(4, 5)), torch.zeros(4))
    one = torch.tensor([[0.0, -1e4, -1e4]])                     # (almost) a point mass
    torch.testing.assert_close(categorical_kl_uniform(one), torch.tensor([math.log(3)]))


@pytest.mark.parametrize("tau", [0, -1.0, float("nan"), float("inf"), "1", True,
                                 torch.tensor([1.0, 2.0])])
def test_gumbel_softmax_rejects_bad_tau(tau):
    with pytest.raises(ValueError, match="tau"):
        gumbel_softmax(torch.zeros(2, 3), tau)


@pytest.mark.parametrize("logits", [torch.zeros(2, 3, dtype=torch.int64), torch.tensor(1.0),
                                    torch.zeros(2, 0), [0.0, 1.0],
                                    torch.tensor([0.0, float("nan")]),
                                    torch.tensor([0.0, float("inf")])])
def test_gumbel_softmax_rejects_bad_logits(logits):
    with pytest.raises(ValueError, match="logits"):
        gumbel_softmax(logits, 1.0)


@pytest.mark.parametrize("kwargs", [dict(step=-1), dict(step=1.5), dict(tau0=0),
                                    dict(tau_min=-0.1), dict(tau0=0.4, tau_min=0.5),
                                    dict(rate=-1e-3), dict(rate=float("nan")), dict(rate="x"),
                                    dict(every=0)])
def test_temperature_schedule_rejects_bad_arguments(kwargs):
    kwargs = {"step": 10, **kwargs}
    with pytest.raises(ValueError):
        temperature_schedule(**kwargs)


@pytest.mark.parametrize("logits", [torch.zeros(5), torch.zeros(2, 0),
                                    torch.tensor([[0.0, float("inf")]])])
def test_categorical_kl_uniform_rejects_bad_logits(logits):
    with pytest.raises(ValueError, match="logits"):
        categorical_kl_uniform(logits)


def test_relaxed_log_prob_rejects_bad_input():
    logits = torch.zeros(2, 3)
    y = torch.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="y must"):
        relaxed_log_prob(torch.full((2, 4), 0.25), logits, 1.0)     # wrong K
    with pytest.raises(ValueError, match="y must"):
        relaxed_log_prob(torch.tensor([[0.5, 0.5, 0.0]] * 2), logits, 1.0)  # on the boundary
    with pytest.raises(ValueError, match="y must"):
        relaxed_log_prob(torch.full((2, 3), 0.5), logits, 1.0)      # does not sum to one
    with pytest.raises(ValueError, match="tau"):
        relaxed_log_prob(y, logits, 0.0)
    with pytest.raises(ValueError, match="logits"):
        relaxed_log_prob(y, torch.full((2, 3), float("nan")), 1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gumbel_softmax_follows_the_device():
    logits = torch.randn(5, 4, device="cuda", dtype=torch.float64)
    g = torch.Generator(device="cuda").manual_seed(0)
    y = gumbel_softmax(logits, 0.5, hard=True, generator=g)
    assert y.is_cuda and y.dtype == torch.float64 and bool((y.sum(-1) == 1).all())
    assert categorical_kl_uniform(logits[None]).is_cuda

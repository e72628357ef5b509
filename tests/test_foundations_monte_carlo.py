"""Tests for foundations.monte_carlo against numpy/scipy, closed forms and Monte Carlo tolerances
derived from the sample size."""

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Normal

from foundations import (
    ISEstimate,
    MCEstimate,
    effective_sample_size,
    importance_sampling,
    mc_estimate,
)


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------- mc_estimate


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mc_estimate_matches_numpy_mean_and_ddof1_std(dtype):
    values = torch.randn(37, 3, 2, generator=gen(0), dtype=torch.float64).exp().to(dtype)
    est = mc_estimate(values)
    assert isinstance(est, MCEstimate) and est.n == 37
    assert est.mean.shape == (3, 2) and est.mean.dtype == dtype and est.stderr.dtype == dtype
    v = values.double().numpy()
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(est.mean.double().numpy(), v.mean(0), rtol=tol)
    # the standard error uses the unbiased sample standard deviation (ddof = 1)
    np.testing.assert_allclose(est.stderr.double().numpy(), v.std(0, ddof=1) / math.sqrt(37),
                               rtol=tol)


def test_confidence_interval_uses_the_normal_quantile():
    est = mc_estimate(torch.randn(20, 4, generator=gen(1), dtype=torch.float64))
    for alpha in (0.01, 0.05, 0.3173, 0.5):
        lo, hi = est.confidence_interval(alpha)
        z = scipy.stats.norm.ppf(1 - alpha / 2)
        torch.testing.assert_close(lo, est.mean - z * est.stderr, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(hi, est.mean + z * est.stderr, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("level", [0.68, 0.95, 0.99])
def test_confidence_intervals_reach_nominal_coverage(level):
    # R = 4000 independent estimates of E[x] = 0 from n = 400 normal samples each. For normal
    # data the z-interval's coverage is P(|t_399| <= z), below the level by < 0.001. Each run
    # covers or not independently: the coverage is binomial with s.e. sqrt(p(1-p)/R) <= 0.0074,
    # and we allow 4 of them (a false failure about once in 16,000 runs).
    reps, n = 4_000, 400
    est = mc_estimate(torch.randn(n, reps, generator=gen(2), dtype=torch.float64))
    lo, hi = est.confidence_interval(alpha=1 - level)
    coverage = ((lo <= 0) & (0 <= hi)).double().mean().item()
    assert abs(coverage - level) < 4 * math.sqrt(level * (1 - level) / reps), coverage


def test_mc_estimate_is_unbiased_with_variance_sigma2_over_n():
    # E[x^2] = 1, Var[x^2] = 2 for x ~ N(0, 1). 2000 estimates of n = 50: their average has s.e.
    # sqrt(2 / (50 * 2000)) = 0.0045; their variance estimate has relative s.e.
    # sqrt(2/(R-1) + 12/(n R)) = 0.035 (kurtosis of chi^2_1 is 12, divided by n).
    reps, n = 2_000, 50
    est = mc_estimate(torch.randn(n, reps, generator=gen(3), dtype=torch.float64).square())
    assert abs(est.mean.mean().item() - 1) < 4 * math.sqrt(2 / (n * reps))
    ratio = n * est.mean.var().item() / 2
    assert abs(ratio - 1) < 4 * math.sqrt(2 / (reps - 1) + 12 / (n * reps))
    # the reported standard errors are, on average, the true one sqrt(2/n) (s is biased low by
    # O(1/n) only; the average of 2000 of them has a relative s.e. of about 0.01)
    assert abs(est.stderr.mean().item() / math.sqrt(2 / n) - 1) < 0.06


def test_mc_estimate_gradcheck():
    values = torch.randn(6, 2, generator=gen(4), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: tuple(mc_estimate(v)[:2]), (values,))


# ---------------------------------------------------------------------------- importance sampling


def test_importance_sampling_with_q_equal_p_is_plain_monte_carlo():
    x = torch.randn(500, generator=gen(5), dtype=torch.float64)
    log_p = Normal(0.0, 1.0).log_prob(x)
    f = torch.stack([x, x.square()], -1)  # (n, 2): f is vector-valued
    plain = mc_estimate(f)
    for self_normalised in (False, True):
        est = importance_sampling(f, log_p, log_p, self_normalised=self_normalised)
        assert isinstance(est, ISEstimate) and est.n == 500
        torch.testing.assert_close(est.mean, plain.mean, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(est.ess, torch.tensor(500.0, dtype=torch.float64), rtol=1e-12,
                                   atol=0)
    est = importance_sampling(f, log_p, log_p)
    torch.testing.assert_close(est.stderr, plain.stderr, rtol=1e-12, atol=1e-14)
    # SNIS's delta-method se: sum_i (f_i - mean)^2 / n^2 = s^2 (n - 1) / n^2
    snis = importance_sampling(f, log_p, log_p, self_normalised=True)
    torch.testing.assert_close(snis.stderr, plain.stderr * math.sqrt(499 / 500), rtol=1e-12,
                               atol=0)


def _is_example(n, seed, dtype=torch.float64):
    # target p = N(1, 1), proposal q = N(0, 2^2), f(x) = x, E_p[f] = 1
    x = 2 * torch.randn(n, generator=gen(seed), dtype=dtype)
    return x, Normal(1.0, 1.0).log_prob(x), Normal(0.0, 2.0).log_prob(x)


def _quad_w2(g):
    # E_q[w^2 g] = ∫ g(x) p(x)^2 / q(x) dx by quadrature (p^2/q < e^-60 outside [-12, 14])
    p, q = scipy.stats.norm(1, 1), scipy.stats.norm(0, 2)
    return scipy.integrate.quad(lambda t: g(t) * math.exp(2 * p.logpdf(t) - q.logpdf(t)),
                                -12, 14, epsabs=1e-13, limit=200)[0]


def test_importance_sampling_is_unbiased_and_its_stderr_is_right():
    n = 200_000
    x, log_p, log_q = _is_example(n, 6)
    est = importance_sampling(x, log_p, log_q)
    var_exact = _quad_w2(lambda t: t**2) - 1.0  # n Var[mu_hat_IS] = E_q[w^2 f^2] - mu^2
    assert abs(est.mean.item() - 1.0) < 4 * math.sqrt(var_exact / n)
    # the relative s.e. of s^2 is sqrt(kurtosis + 2) / sqrt(n) < 0.02 here (the weights are
    # bounded, so w f has Gaussian-like tails); we allow 4 of them
    assert abs(n * est.stderr.item() ** 2 / var_exact - 1) < 0.08


def test_self_normalised_is_consistent_with_an_unnormalised_target():
    n = 200_000
    x, log_p, log_q = _is_example(n, 7)
    est = importance_sampling(x, log_p + 17.3, log_q, self_normalised=True)
    # the delta-method variance E_q[w^2 (f - mu)^2] / n, by quadrature
    var = _quad_w2(lambda t: (t - 1) ** 2)
    assert abs(est.mean.item() - 1.0) < 4 * math.sqrt(var / n)
    assert abs(n * est.stderr.item() ** 2 / var - 1) < 0.08


def test_snis_matches_numpy_weighted_average_and_delta_method_se():
    x, log_p, log_q = _is_example(300, 8)
    f = x.square()
    est = importance_sampling(f, log_p, log_q, self_normalised=True)
    w = np.exp((log_p - log_q).numpy())
    W = w / w.sum()
    mean = (W * f.numpy()).sum()
    np.testing.assert_allclose(est.mean.item(), mean, rtol=1e-12)
    np.testing.assert_allclose(est.stderr.item(), math.sqrt((W**2 * (f.numpy() - mean) ** 2).sum()),
                               rtol=1e-12)
    np.testing.assert_allclose(est.ess.item(), w.sum() ** 2 / (w**2).sum(), rtol=1e-12)


@pytest.mark.parametrize("shift", [-1000.0, -30.0, 0.0, 30.0, 1000.0])
def test_snis_is_invariant_to_scaling_p_by_a_constant(shift):
    x, log_p, log_q = _is_example(100, 9)
    ref = importance_sampling(x, log_p, log_q, self_normalised=True)
    est = importance_sampling(x, log_p + shift, log_q, self_normalised=True)
    for a, b in zip((est.mean, est.stderr, est.ess), (ref.mean, ref.stderr, ref.ess)):
        assert torch.isfinite(a)
        torch.testing.assert_close(a, b, rtol=1e-10, atol=0)


def test_plain_is_scales_with_the_weights_and_allows_zero_target_density():
    x, log_p, log_q = _is_example(100, 10)
    ref = importance_sampling(x, log_p, log_q)
    est = importance_sampling(x, log_p + 300.0, log_q)  # every weight times e^300
    torch.testing.assert_close(est.mean, ref.mean * math.exp(300.0), rtol=1e-10, atol=0)
    torch.testing.assert_close(est.stderr, ref.stderr * math.exp(300.0), rtol=1e-10, atol=0)
    # a target that is zero for x < 0: those samples get weight 0, no NaN
    log_p0 = torch.where(x < 0, torch.tensor(-math.inf, dtype=x.dtype), log_p)
    est0 = importance_sampling(x, log_p0, log_q)
    w = torch.exp(log_p - log_q) * (x >= 0)
    torch.testing.assert_close(est0.mean, (w * x).mean(), rtol=1e-12, atol=0)
    assert torch.isfinite(est0.stderr) and 1 <= est0.ess.item() <= 100


def test_importance_sampling_batched_matches_a_loop():
    g = gen(11)
    f = torch.randn(40, 3, 2, generator=g, dtype=torch.float64)  # (n, B, E)
    log_p = torch.randn(40, 3, generator=g, dtype=torch.float64)  # (n, B)
    log_q = torch.randn(40, 3, generator=g, dtype=torch.float64)
    for self_normalised in (False, True):
        est = importance_sampling(f, log_p, log_q, self_normalised=self_normalised)
        assert est.mean.shape == (3, 2) and est.stderr.shape == (3, 2) and est.ess.shape == (3,)
        for b in range(3):
            one = importance_sampling(f[:, b], log_p[:, b], log_q[:, b],
                                      self_normalised=self_normalised)
            torch.testing.assert_close(est.mean[b], one.mean)
            torch.testing.assert_close(est.stderr[b], one.stderr)
            torch.testing.assert_close(est.ess[b], one.ess)


def test_importance_sampling_float32():
    x, log_p, log_q = _is_example(1000, 12, dtype=torch.float32)
    for self_normalised in (False, True):
        est = importance_sampling(x, log_p, log_q, self_normalised=self_normalised)
        assert est.mean.dtype == est.stderr.dtype == est.ess.dtype == torch.float32
        ref = importance_sampling(x.double(), log_p.double(), log_q.double(),
                                  self_normalised=self_normalised)
        torch.testing.assert_close(est.mean.double(), ref.mean, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("self_normalised", [False, True])
def test_importance_sampling_gradcheck(self_normalised):
    g = gen(13)
    f = torch.randn(7, 2, generator=g, dtype=torch.float64, requires_grad=True)
    log_p = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)
    log_q = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)

    def fn(f, log_p, log_q):
        est = importance_sampling(f, log_p, log_q, self_normalised=self_normalised)
        return est.mean, est.stderr, est.ess

    assert torch.autograd.gradcheck(fn, (f, log_p, log_q))


# ---------------------------------------------------------------------------- effective sample size

log_weights = st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=60)


@settings(max_examples=100, deadline=None)
@given(log_weights, st.floats(-1000, 1000))
def test_ess_between_one_and_n_and_shift_invariant(lw, shift):
    log_w = torch.tensor(lw, dtype=torch.float64)
    ess = effective_sample_size(log_w).item()
    assert 1.0 <= ess <= len(lw)
    w = np.exp(np.array(lw) - max(lw))
    assert ess == pytest.approx(w.sum() ** 2 / (w**2).sum(), rel=1e-10)
    assert effective_sample_size(log_w + shift).item() == pytest.approx(ess, rel=1e-10)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 500), st.floats(-1000, 1000))
def test_ess_of_equal_weights_is_n(n, value):
    assert effective_sample_size(torch.full((n,), value, dtype=torch.float64)).item() == \
        pytest.approx(n, rel=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 500), st.floats(40, 1000))
def test_one_dominant_weight_gives_ess_near_one(n, gap):
    log_w = torch.zeros(n, dtype=torch.float64)
    log_w[n // 2] = gap  # one weight e^gap times every other
    # ESS = (e^g + n - 1)^2 / (e^2g + n - 1) = 1 + 2 (n - 1) e^-g + O(e^-2g) for large g
    assert effective_sample_size(log_w).item() == pytest.approx(1.0, abs=4 * n * math.exp(-gap)
                                                                + 1e-12)


def test_ess_with_log_weights_of_plus_minus_1000():
    ess = effective_sample_size(torch.tensor([1000.0, 1000.0, -1000.0, 999.0],
                                             dtype=torch.float64))
    w = np.exp(np.array([0.0, 0.0, -2000.0, -1.0]))
    assert ess.item() == pytest.approx(w.sum() ** 2 / (w**2).sum(), rel=1e-12)
    assert effective_sample_size(torch.tensor([-1000.0, -1000.0])).item() == pytest.approx(2.0)
    # zero weights (log w = -inf) count for nothing
    lw = torch.tensor([0.0, 0.0, -math.inf], dtype=torch.float64)
    assert effective_sample_size(lw).item() == pytest.approx(2.0, rel=1e-12)


def test_ess_batched_over_trailing_dimensions():
    lw = torch.randn(30, 4, 5, generator=gen(14), dtype=torch.float64)
    ess = effective_sample_size(lw)
    assert ess.shape == (4, 5)
    torch.testing.assert_close(ess[2, 3], effective_sample_size(lw[:, 2, 3]))


def test_ess_gradcheck():
    lw = torch.randn(6, 3, generator=gen(15), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(effective_sample_size, (lw,))


def test_ess_is_about_n_over_second_moment_of_the_weights():
    # p = N(0, 1), q = N(0, 2^2): ESS/n -> 1 / E_q[w^2] = sqrt(7) / 4. By the delta method the
    # s.d. of ESS/n is sqrt(g' Σ g / n) with the moments E_q[w^k] = s^(k-1)/sqrt(k - (k-1)/s^2);
    # it is about 0.0026 at n = 100,000.
    n, s = 100_000, 2.0
    x = s * torch.randn(n, generator=gen(16), dtype=torch.float64)
    ess = effective_sample_size(Normal(0.0, 1.0).log_prob(x) - Normal(0.0, s).log_prob(x))
    m2, m3, m4 = (s ** (k - 1) / math.sqrt(k - (k - 1) / s**2) for k in (2, 3, 4))
    grad = np.array([2 / m2, -1 / m2**2])
    sd = math.sqrt(grad @ np.array([[m2 - 1, m3 - m2], [m3 - m2, m4 - m2**2]]) @ grad / n)
    assert abs(ess.item() / n - 1 / m2) < 4 * sd


# ---------------------------------------------------------------------------- bad input

ok_f = torch.zeros(5)
ok_lp = torch.zeros(5)


@pytest.mark.parametrize(
    "fn, args, kwargs, match",
    [
        (mc_estimate, (torch.zeros(0),), {}, "n >= 2"),
        (mc_estimate, (torch.zeros(1, 3),), {}, "n >= 2"),
        (mc_estimate, (torch.zeros(()),), {}, r"\(n, \.\.\.\)"),
        (mc_estimate, (torch.arange(5),), {}, "float tensor"),
        (mc_estimate, ([1.0, 2.0],), {}, "float tensor"),
        (mc_estimate, (torch.tensor([1.0, math.nan]),), {}, "finite"),
        (importance_sampling, (torch.zeros(0), torch.zeros(0), torch.zeros(0)), {}, "n >= 2"),
        (importance_sampling, (ok_f, ok_lp, torch.zeros(4)), {}, "shape"),
        (importance_sampling, (torch.zeros(6), ok_lp, ok_lp), {}, "shape"),
        (importance_sampling, (torch.zeros(5, 2), torch.zeros(5, 3), torch.zeros(5, 3)), {},
         "shape"),
        (importance_sampling, (torch.zeros(5), torch.zeros(5, 2), torch.zeros(5, 2)), {}, "shape"),
        (importance_sampling, (ok_f, ok_lp, torch.tensor([0.0, 0, 0, 0, -math.inf])), {},
         "log_q must be finite"),
        (importance_sampling, (ok_f, torch.tensor([0.0, 0, 0, 0, math.nan]), ok_lp), {}, "NaN"),
        (importance_sampling, (ok_f, torch.tensor([0.0, 0, 0, 0, math.inf]), ok_lp), {}, r"\+inf"),
        (importance_sampling, (ok_f, torch.full((5,), -math.inf), ok_lp), {}, "every weight"),
        (importance_sampling, (ok_f, ok_lp, ok_lp), {"self_normalised": "yes"}, "True or False"),
        (importance_sampling, (ok_f, torch.zeros(5, dtype=torch.long), ok_lp), {}, "float"),
        (importance_sampling, (torch.tensor([0.0, 1, 2, 3, math.inf]), ok_lp, ok_lp), {},
         "finite"),
        (effective_sample_size, (torch.zeros(0),), {}, "n >= 1"),
        (effective_sample_size, (torch.zeros(()),), {}, "n >= 1"),
        (effective_sample_size, (torch.zeros(3, dtype=torch.long),), {}, "float"),
        (effective_sample_size, (torch.tensor([0.0, math.nan]),), {}, "NaN"),
        (effective_sample_size, (torch.tensor([0.0, math.inf]),), {}, r"\+inf"),
        (effective_sample_size, (torch.tensor([[0.0, -math.inf], [0.0, -math.inf]]),), {},
         "every weight"),
    ],
)
def test_bad_input(fn, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(*args, **kwargs)


@pytest.mark.parametrize("alpha", [0, 1, 1.5, -0.1, True, "0.05", float("nan")])
def test_confidence_interval_rejects_alpha_outside_0_1(alpha):
    est = mc_estimate(torch.randn(10, dtype=torch.float64))
    with pytest.raises(ValueError, match="alpha"):
        est.confidence_interval(alpha)
    is_est = importance_sampling(torch.randn(10), torch.zeros(10), torch.zeros(10))
    with pytest.raises(ValueError, match="alpha"):
        is_est.confidence_interval(alpha)

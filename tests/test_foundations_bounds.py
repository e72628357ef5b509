"""Tests for foundations.bounds: the ELBO (Monte Carlo and closed form) and the importance-weighted
bound, against scipy, exact expectations and the inequalities they must satisfy."""

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch
from conftest import random_mixture as shared_random_mixture
from hypothesis import given, settings
from hypothesis import strategies as st

from foundations import elbo, elbo_discrete, iw_bound

F64 = torch.float64
PROPERTY = settings(max_examples=25, deadline=None, derandomize=True)


def random_mixture(k=3, d=2, seed=0, dtype=F64):
    return shared_random_mixture(k, d, seed, dtype, spread=2.0)


def joint_log_prob(gm, x):
    """log p(x, z = k) = log π_k + log N(x; μ_k, Σ_k): (..., D) → (..., K)."""
    return gm.weights.log() + gm.component_log_prob(x)


def dirichlet(n, k, seed, concentration=1.0):
    g = np.random.default_rng(seed)
    return torch.from_numpy(g.dirichlet(np.full(k, concentration), size=n))


# ---------------------------------------------------------------- elbo_discrete (closed form)


def test_elbo_discrete_gap_is_kl_to_the_posterior_scipy():
    gm = random_mixture(k=4, d=2, seed=1)
    with torch.no_grad():
        x = gm.sample(30, generator=torch.Generator().manual_seed(2))  # (30, 2)
        log_p_xz = joint_log_prob(gm, x)  # (30, 4)
        q = dirichlet(30 * 8, 4, seed=3).reshape(8, 30, 4)  # 8 arbitrary q for every x
        gap = gm.log_prob(x) - elbo_discrete(log_p_xz, q)  # broadcast: (8, 30)
        post = gm.posterior(x)
    kl = scipy.stats.entropy(q.numpy(), np.broadcast_to(post.numpy(), q.shape), axis=-1)
    np.testing.assert_allclose(gap.numpy(), kl, rtol=0, atol=1e-12)
    assert gap.shape == (8, 30)


def test_elbo_discrete_is_tight_at_the_posterior_and_splits_into_likelihood_minus_kl():
    gm = random_mixture(k=3, seed=4)
    with torch.no_grad():
        x = gm.sample(20, generator=torch.Generator().manual_seed(5))
        log_p_xz = joint_log_prob(gm, x)
        torch.testing.assert_close(elbo_discrete(log_p_xz, gm.posterior(x)), gm.log_prob(x),
                                   rtol=0, atol=1e-12)
        # ELBO = E_q[log p(x | z)] - KL(q ‖ p(z)), the form a VAE optimises.
        q = dirichlet(20, 3, seed=6)
        expected = (q * gm.component_log_prob(x)).sum(-1).numpy() \
            - scipy.stats.entropy(q.numpy(), np.broadcast_to(gm.weights.numpy(), q.shape), axis=-1)
        np.testing.assert_allclose(elbo_discrete(log_p_xz, q).numpy(), expected, atol=1e-12)


def test_elbo_discrete_zero_mass_terms():
    log_p = torch.tensor([-1.0, -math.inf, -2.0], dtype=F64)
    # 0 · log 0 = 0 and 0 · (-inf) = 0: a one-hot q gives log p(x, z) of its value.
    assert elbo_discrete(log_p, torch.tensor([1.0, 0.0, 0.0], dtype=F64)).item() == -1.0
    # mass where p(x, z) = 0 makes the bound -inf
    assert elbo_discrete(log_p, torch.tensor([0.5, 0.5, 0.0], dtype=F64)).item() == -math.inf
    # the gradient stays finite where q = 0 and log p = -inf
    lp = log_p.clone().requires_grad_()
    elbo_discrete(lp, torch.tensor([0.3, 0.0, 0.7], dtype=F64)).backward()
    assert torch.isfinite(lp.grad).all()
    torch.testing.assert_close(lp.grad, torch.tensor([0.3, 0.0, 0.7], dtype=F64))


@PROPERTY
@given(k=st.integers(1, 6), d=st.integers(1, 3), seed=st.integers(0, 10_000),
       concentration=st.floats(0.05, 5.0))
def test_property_elbo_below_log_evidence_with_gap_kl(k, d, seed, concentration):
    gm = random_mixture(k=k, d=d, seed=seed)
    with torch.no_grad():
        x = gm.sample(5, generator=torch.Generator().manual_seed(seed + 1))
        q = dirichlet(5, k, seed=seed + 2, concentration=concentration)
        bound = elbo_discrete(joint_log_prob(gm, x), q)
        log_p = gm.log_prob(x)
        post = gm.posterior(x)
    assert bool((bound <= log_p + 1e-12).all())
    kl = scipy.stats.entropy(q.numpy(), post.numpy(), axis=-1)
    finite = np.isfinite(kl)  # a posterior that underflows to 0 under q > 0 makes scipy's KL inf
    np.testing.assert_allclose((log_p - bound).numpy()[finite], kl[finite], rtol=1e-9, atol=1e-11)


# ---------------------------------------------------------------- elbo and iw_bound (Monte Carlo)


def test_elbo_estimate_converges_to_the_closed_form():
    # z ~ q categorical; the estimate is a mean of S i.i.d. terms log w_s, so its standard error
    # is sd(log w) / sqrt(S); 4 standard errors fail by chance with probability 6e-5.
    gm = random_mixture(k=3, seed=7)
    with torch.no_grad():
        x = gm.sample(1, generator=torch.Generator().manual_seed(8))[0]
        log_p_xz = joint_log_prob(gm, x)  # (3,)
    q = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
    S = 20_000
    z = torch.multinomial(q, S, replacement=True, generator=torch.Generator().manual_seed(9))
    estimate = elbo(log_p_xz[z], q.log()[z]).item()
    se = (log_p_xz[z] - q.log()[z]).std().item() / math.sqrt(S)
    assert abs(estimate - elbo_discrete(log_p_xz, q).item()) < 4 * se


def test_iw_bound_with_one_sample_is_the_elbo_estimate():
    g = torch.Generator().manual_seed(10)
    log_p, log_q = torch.randn(1, 7, 3, generator=g, dtype=F64), torch.randn(1, 7, 3, generator=g,
                                                                             dtype=F64)
    torch.testing.assert_close(iw_bound(log_p, log_q), elbo(log_p, log_q), rtol=0, atol=0)
    torch.testing.assert_close(iw_bound(log_p, log_q), (log_p - log_q)[0], rtol=0, atol=0)


def test_iw_bound_of_identical_weights_is_that_weight():
    for k in (1, 2, 10, 1000):
        log_p = torch.full((k, 4), 3.7, dtype=F64)
        log_q = torch.full((k, 4), -1.2, dtype=F64)
        torch.testing.assert_close(iw_bound(log_p, log_q), torch.full((4,), 4.9, dtype=F64),
                                   rtol=0, atol=1e-13)


def test_iw_bound_matches_scipy_logsumexp_and_is_stable():
    g = torch.Generator().manual_seed(11)
    log_w = 30 * torch.randn(50, 6, generator=g, dtype=F64) + 1000.0  # e^1000 overflows
    ours = iw_bound(log_w, torch.zeros_like(log_w))
    ref = scipy.special.logsumexp(log_w.numpy(), axis=0) - math.log(50)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-14)
    assert torch.isfinite(iw_bound(-log_w, torch.zeros_like(log_w))).all()
    # weights of zero are allowed; all zero gives -inf
    log_p = torch.tensor([[0.0, -math.inf], [-math.inf, -math.inf]], dtype=F64)
    out = iw_bound(log_p, torch.zeros_like(log_p))
    assert out[0].item() == pytest.approx(math.log(0.5)) and out[1].item() == -math.inf


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_dtype_follows_the_inputs(dtype):
    log_p, log_q = torch.randn(5, 2, dtype=dtype), torch.randn(5, 2, dtype=dtype)
    assert elbo(log_p, log_q).dtype == dtype and iw_bound(log_p, log_q).dtype == dtype
    q = torch.softmax(torch.randn(2, 4, dtype=dtype), -1)
    assert elbo_discrete(torch.randn(2, 4, dtype=dtype), q).dtype == dtype


@PROPERTY
@given(log_w=st.lists(st.floats(-50, 50), min_size=1, max_size=30))
def test_property_elbo_estimate_never_exceeds_iw_estimate_on_the_same_samples(log_w):
    # mean of logs ≤ log of mean: Jensen on the empirical distribution of the samples.
    log_w = torch.tensor(log_w, dtype=F64)
    zeros = torch.zeros_like(log_w)
    assert elbo(log_w, zeros).item() <= iw_bound(log_w, zeros).item() + 1e-12


def compositions(k, m):
    """Every (n_1, ..., n_m) of non-negative integers with sum k."""
    if m == 1:
        yield (k,)
        return
    for n in range(k + 1):
        for rest in compositions(k - n, m - 1):
            yield (n, *rest)


def exact_iw_bounds(values, probs, ks):
    """L_K = E[log (1/K) Σ_k w_k] exactly, for weights i.i.d. on finitely many ``values`` with
    ``probs``: sum over every composition (n_1..n_m) of K, Multinomial(K, probs)-weighted, each
    term computed by iw_bound on K log-weights (one composition per batch column)."""
    m, out = len(values), []
    for k in ks:
        comps = list(compositions(k, m))
        cols = [torch.cat([torch.full((n,), v, dtype=F64) for n, v in zip(c, values.log())])
                for c in comps]
        log_w = torch.stack(cols, dim=1)  # (K, compositions)
        n = torch.tensor(comps, dtype=F64)
        log_pmf = math.lgamma(k + 1) - torch.lgamma(n + 1).sum(1) + (n * probs.log()).sum(1)
        out.append((log_pmf.exp() * iw_bound(log_w, torch.zeros_like(log_w))).sum().item())
    return out


@PROPERTY
@given(seed=st.integers(0, 10_000), m=st.integers(2, 4))
def test_property_exact_iw_bound_is_monotone_and_below_log_mean_weight(seed, m):
    # Burda et al.'s theorem, on exact expectations (no Monte Carlo): for any weight distribution,
    # E log w = L_1 ≤ L_2 ≤ ... ≤ log E w, strictly unless w is constant.
    g = np.random.default_rng(seed)
    values = torch.from_numpy(np.exp(g.normal(0, 1.5, m)))
    probs = torch.from_numpy(g.dirichlet(np.ones(m)))
    ks = [1, 2, 3, 4, 6, 8]
    bounds = exact_iw_bounds(values, probs, ks)
    assert bounds[0] == pytest.approx(float((probs * values.log()).sum()), abs=1e-12)
    assert all(a < b for a, b in zip(bounds, bounds[1:])), bounds
    assert bounds[-1] < math.log(float((probs * values).sum()))


def test_exact_iw_bound_tends_to_log_mean_weight_at_the_delta_method_rate():
    # With ε = w / E w - 1 (mean 0, variance χ², third moment μ₃) and ε̄ its mean over K samples,
    # log E w - L_K = E[-log(1 + ε̄)] = E[ε̄²]/2 - E[ε̄³]/3 + E[ε̄⁴]/4 - ...
    #               = χ²/(2K) + (3χ⁴/4 - μ₃/3)/K² + O(1/K³).
    # So r_K = K² (log E w - L_K) - K χ²/2 tends to c = 3χ⁴/4 - μ₃/3, its error halving with K.
    values = torch.tensor([0.5, 1.0, 3.0], dtype=F64)
    probs = torch.tensor([0.3, 0.5, 0.2], dtype=F64)
    mean = float((probs * values).sum())
    eps = values / mean - 1
    chi2, mu3 = float((probs * eps**2).sum()), float((probs * eps**3).sum())
    c = 3 * chi2**2 / 4 - mu3 / 3
    ks = [40, 80, 160]
    gaps = [math.log(mean) - b for b in exact_iw_bounds(values, probs, ks)]
    assert all(g > 0 for g in gaps)
    assert abs(ks[-1] * gaps[-1] / (chi2 / 2) - 1) < 0.01  # the first-order rate, within 1%
    errors = [abs(k**2 * g - k * chi2 / 2 - c) for k, g in zip(ks, gaps)]
    assert errors[-1] < 0.05 * c
    assert errors[2] < 0.6 * errors[1] < 0.36 * errors[0]  # the remainder is O(1/K)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), sigma=st.floats(0.5, 2.0))
def test_property_iw_bound_monotone_in_expectation(seed, sigma):
    # Log-normal weights log w ~ N(0, σ²). The K-sample estimates reuse the first K of 16 samples
    # (nested, as in Burda et al.'s proof), so consecutive differences d_r are paired; their mean
    # over R repetitions has standard error sd(d) / sqrt(R). Non-decreasing in expectation means
    # every mean difference is ≥ -4 standard errors (a chance failure has probability < 1e-4 per
    # pair); and the bound really tightens: L_16 - L_1 ≈ σ²/2 - (e^{σ²} - 1)/32 ≥ 0.11 is more
    # than 4 standard errors (about 0.011 at σ = 0.5, R = 4000).
    R, ks = 4_000, [1, 2, 4, 8, 16]
    g = torch.Generator().manual_seed(seed)
    log_w = sigma * torch.randn(ks[-1], R, generator=g, dtype=F64)
    est = {k: iw_bound(log_w[:k], torch.zeros_like(log_w[:k])) for k in ks}
    for a, b in zip(ks, ks[1:]):
        d = est[b] - est[a]
        assert d.mean().item() >= -4 * d.std().item() / math.sqrt(R)
    d = est[ks[-1]] - est[ks[0]]
    assert d.mean().item() > 4 * d.std().item() / math.sqrt(R)


def test_iw_estimate_matches_the_exact_expectation():
    # Monte Carlo L̂_K over R repetitions vs the exact L_K: within 4 standard errors.
    values, probs = torch.tensor([0.2, 1.0, 4.0], dtype=F64), torch.tensor([0.5, 0.3, 0.2],
                                                                            dtype=F64)
    (exact,) = exact_iw_bounds(values, probs, [5])
    R = 20_000
    idx = torch.multinomial(probs, 5 * R, replacement=True,
                            generator=torch.Generator().manual_seed(12)).reshape(5, R)
    log_w = values.log()[idx]
    est = iw_bound(log_w, torch.zeros_like(log_w))
    assert abs(est.mean().item() - exact) < 4 * est.std().item() / math.sqrt(R)


# ---------------------------------------------------------------- gradients and bad inputs


def test_gradcheck():
    g = torch.Generator().manual_seed(13)
    log_p = torch.randn(6, 3, generator=g, dtype=F64, requires_grad=True)
    log_q = torch.randn(6, 3, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(elbo, (log_p, log_q))
    assert torch.autograd.gradcheck(iw_bound, (log_p, log_q))
    logits = torch.randn(2, 4, generator=g, dtype=F64, requires_grad=True)
    log_p_xz = torch.randn(2, 4, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda lp, a: elbo_discrete(lp, torch.softmax(a, -1)),
                                    (log_p_xz, logits))


@pytest.mark.parametrize("fn", [elbo, iw_bound])
def test_estimators_reject_bad_inputs(fn):
    ok = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="same shape"):
        fn(ok, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="same shape"):
        fn(ok, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="at least one sample"):
        fn(torch.zeros(0, 3), torch.zeros(0, 3))
    with pytest.raises(ValueError, match="at least one sample"):
        fn(torch.tensor(0.0), torch.tensor(0.0))
    with pytest.raises(ValueError, match="float tensor"):
        fn(torch.zeros(4, 3, dtype=torch.long), ok)
    with pytest.raises(ValueError, match="float tensor"):
        fn(ok, [[0.0] * 3] * 4)
    with pytest.raises(ValueError, match="NaN"):
        fn(torch.full((4, 3), math.nan), ok)
    with pytest.raises(ValueError, match="finite"):
        fn(ok, torch.full((4, 3), -math.inf))


def test_elbo_discrete_rejects_bad_inputs():
    log_p = torch.zeros(2, 3, dtype=F64)
    q = torch.full((2, 3), 1 / 3, dtype=F64)
    with pytest.raises(ValueError, match="negative"):
        elbo_discrete(log_p, torch.tensor([[1.2, -0.2, 0.0]] * 2, dtype=F64))
    with pytest.raises(ValueError, match="sum to one"):
        elbo_discrete(log_p, torch.full((2, 3), 0.3, dtype=F64))
    with pytest.raises(ValueError, match="number K"):
        elbo_discrete(log_p, torch.full((2, 2), 0.5, dtype=F64))
    with pytest.raises(ValueError, match="broadcast"):
        elbo_discrete(torch.zeros(4, 3, dtype=F64), torch.full((3, 3), 1 / 3, dtype=F64))
    with pytest.raises(ValueError, match="float tensor"):
        elbo_discrete(torch.zeros(2, 3, dtype=torch.long), q)
    with pytest.raises(ValueError, match="K >= 1"):
        elbo_discrete(torch.zeros(2, 0, dtype=F64), torch.zeros(2, 0, dtype=F64))
    with pytest.raises(ValueError, match="NaN"):
        elbo_discrete(torch.full((2, 3), math.nan, dtype=F64), q)
    with pytest.raises(ValueError, match="probabilities"):
        elbo_discrete(log_p, torch.ones(2, 3, dtype=torch.long))

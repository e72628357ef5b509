"""Tests for divergences.f_divergences: KL, JS, TV against scipy, the f-divergence family against
the direct formulas, generators and conjugates (Fenchel–Young), and the variational bound."""

import math

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from divergences import (
    GENERATORS,
    FDivergence,
    f_divergence,
    get_generator,
    js,
    kl,
    tv,
    variational_bound,
)

F64 = torch.float64
PROPERTY = settings(max_examples=40, deadline=None, derandomize=True)
LOG2 = math.log(2.0)
NAMES = ("kl", "reverse_kl", "js", "tv", "pearson", "hellinger")


def dirichlet(n, k, seed, concentration=1.0):
    g = np.random.default_rng(seed)
    return torch.from_numpy(g.dirichlet(np.full(k, concentration), size=n))


# Probability vectors drawn by hypothesis: positive weights, normalised (some may be tiny).
def prob_pairs(min_k=2, max_k=8, zeros=False):
    lo = 0.0 if zeros else 1e-3

    @st.composite
    def strategy(draw):
        k = draw(st.integers(min_k, max_k))
        w = st.floats(lo, 1.0, allow_nan=False)
        a = torch.tensor(draw(st.lists(w, min_size=k, max_size=k)), dtype=F64) + 1e-12
        b = torch.tensor(draw(st.lists(w, min_size=k, max_size=k)), dtype=F64) + 1e-12
        return a / a.sum(), b / b.sum()

    return strategy()


# The direct formula of each named divergence, with p, q strictly positive.
DIRECT = {
    "kl": lambda p, q: (p * (p / q).log()).sum(-1),
    "reverse_kl": lambda p, q: (q * (q / p).log()).sum(-1),
    "js": lambda p, q: 0.5 * (p * (2 * p / (p + q)).log()).sum(-1)
    + 0.5 * (q * (2 * q / (p + q)).log()).sum(-1),
    "tv": lambda p, q: 0.5 * (p - q).abs().sum(-1),
    "pearson": lambda p, q: ((p - q) ** 2 / q).sum(-1),
    "hellinger": lambda p, q: ((p.sqrt() - q.sqrt()) ** 2).sum(-1),
}

# The derivative f'(u): the optimal critic is T*(x) = f'(p(x)/q(x)).
FPRIME = {
    "kl": lambda u: 1 + u.log(),
    "reverse_kl": lambda u: -1 / u,
    "js": lambda u: 0.5 * (2 * u / (u + 1)).log(),
    "tv": lambda u: 0.5 * torch.sign(u - 1),
    "pearson": lambda u: 2 * (u - 1),
    "hellinger": lambda u: 1 - 1 / u.sqrt(),
}


# ---------------------------------------------------------------- against scipy


def test_kl_matches_scipy_entropy_batched():
    p, q = dirichlet(20, 6, 0).reshape(4, 5, 6), dirichlet(20, 6, 1).reshape(4, 5, 6)
    ours = kl(p, q)
    assert ours.shape == (4, 5)
    ref = scipy.stats.entropy(p.numpy(), q.numpy(), axis=-1)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12, atol=1e-14)


def test_js_matches_scipy_jensenshannon_squared():
    p, q = dirichlet(30, 7, 2, 0.3), dirichlet(30, 7, 3, 0.3)
    ref = scipy.spatial.distance.jensenshannon(p.numpy(), q.numpy(), axis=-1) ** 2  # √JS, base e
    np.testing.assert_allclose(js(p, q).numpy(), ref, rtol=1e-10, atol=1e-12)


def test_zero_conventions():
    p = torch.tensor([0.5, 0.5, 0.0], dtype=F64)
    q = torch.tensor([0.25, 0.25, 0.5], dtype=F64)
    assert kl(p, q).item() == pytest.approx(math.log(2.0), rel=1e-12)  # 0 log 0 = 0
    assert kl(q, p).item() == math.inf  # q puts mass where p has none
    disjoint_p = torch.tensor([1.0, 0.0], dtype=F64)
    disjoint_q = torch.tensor([0.0, 1.0], dtype=F64)
    assert js(disjoint_p, disjoint_q).item() == pytest.approx(LOG2, rel=1e-12)
    assert tv(disjoint_p, disjoint_q).item() == pytest.approx(1.0, rel=1e-12)
    # f-divergences at disjoint supports: lim f(u)/u (+ f(0) on q's side).
    expected = {"kl": math.inf, "reverse_kl": math.inf, "js": LOG2, "tv": 1.0,
                "pearson": math.inf, "hellinger": 2.0}
    for name, value in expected.items():
        assert f_divergence(disjoint_p, disjoint_q, name).item() == pytest.approx(value), name


def test_float32_and_float64():
    p64, q64 = dirichlet(5, 4, 4), dirichlet(5, 4, 5)
    for fn in (kl, js, tv):
        a, b = fn(p64.float(), q64.float()), fn(p64, q64)
        assert a.dtype == torch.float32 and b.dtype == F64
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- properties


@PROPERTY
@given(prob_pairs(zeros=True))
def test_non_negative_bounds_and_pinsker(pq):
    p, q = pq
    d_kl, d_js, d_tv = kl(p, q).item(), js(p, q).item(), tv(p, q).item()
    assert d_kl >= -1e-12 and d_js >= 0.0 and d_tv >= 0.0
    assert d_js <= LOG2 + 1e-12
    assert d_tv <= 1.0 + 1e-12
    assert d_tv <= math.sqrt(d_kl / 2) + 1e-9  # Pinsker
    assert d_js <= d_tv * LOG2 + 1e-9  # JS ≤ TV log 2 (a known refinement of JS ≤ log 2)


@PROPERTY
@given(prob_pairs(zeros=True))
def test_symmetry_of_js_and_tv(pq):
    p, q = pq
    assert js(p, q).item() == pytest.approx(js(q, p).item(), abs=1e-14)
    assert tv(p, q).item() == pytest.approx(tv(q, p).item(), abs=1e-14)


@PROPERTY
@given(prob_pairs())
def test_zero_iff_equal(pq):
    p, q = pq
    for name in NAMES:
        assert abs(f_divergence(p, p, name).item()) < 1e-12
        if (p - q).abs().max() > 1e-3:
            assert f_divergence(p, q, name).item() > 0, name


@PROPERTY
@given(prob_pairs(), st.sampled_from(NAMES))
def test_f_divergence_equals_direct_formula(pq, name):
    p, q = pq
    ours = f_divergence(p, q, name).item()
    assert ours == pytest.approx(DIRECT[name](p, q).item(), rel=1e-9, abs=1e-12)
    if name in ("kl", "js", "tv"):
        assert ours == pytest.approx({"kl": kl, "js": js, "tv": tv}[name](p, q).item(),
                                     rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_fenchel_young_on_a_grid_and_tight_at_f_prime(name):
    gen = GENERATORS[name]
    u = torch.linspace(0.01, 10, 300, dtype=F64)[:, None]
    t = torch.linspace(-5, 5, 401, dtype=F64)[None, :]
    # f(u) + f*(t) ≥ u t everywhere (inf outside dom f* trivially satisfies it).
    assert bool((gen.f(u) + gen.conjugate(t) >= u * t - 1e-9).all())
    # ... with equality at t = f'(u), the supremum's maximiser (away from TV's kink at u = 1).
    u1 = u[(u - 1).abs() > 1e-6]
    t_star = FPRIME[name](u1)
    np.testing.assert_allclose((gen.f(u1) + gen.conjugate(t_star)).numpy(),
                               (u1 * t_star).numpy(), rtol=1e-9, atol=1e-9)
    assert gen.f(torch.ones(1, dtype=F64)).item() == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_activation_lands_in_domain_of_conjugate(name):
    gen = GENERATORS[name]
    v = torch.linspace(-30, 30, 601, dtype=F64)
    assert bool(torch.isfinite(gen.conjugate(gen.activation(v))).all())


@pytest.mark.parametrize("name", NAMES)
def test_variational_bound_exact_at_optimal_critic_and_below_otherwise(name):
    # p = (1/4, 3/4), q = (1/2, 1/2) as equally weighted atoms, so the sample means are the
    # exact expectations and the bound can be compared with D_f without Monte Carlo error.
    p = torch.tensor([0.25, 0.75], dtype=F64)
    q = torch.tensor([0.5, 0.5], dtype=F64)
    x_p, x_q = torch.tensor([0, 1, 1, 1]), torch.tensor([0, 1])
    t_star = FPRIME[name](p / q)
    exact = f_divergence(p, q, name).item()
    assert variational_bound(name, t_star[x_p], t_star[x_q]).item() == pytest.approx(exact,
                                                                                     rel=1e-12)
    gen = get_generator(name)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        t = gen.activation(3 * torch.randn(2, generator=g, dtype=F64))
        assert variational_bound(gen, t[x_p], t[x_q]).item() <= exact + 1e-12


def test_variational_bound_monte_carlo_kl_between_gaussians():
    # KL(N(1, 1) ‖ N(0, 1)) = 1/2, optimal critic T*(x) = 1 + log p/q = 1 + x − 1/2.
    # The estimate is a mean of N terms with sd ≈ sd(x) = 1 minus one of M terms with sd
    # sd(exp(T − 1)) = sd(exp(x − 1/2)) = sqrt(e − 1) ≈ 1.31; 5 standard errors of the sum.
    g = torch.Generator().manual_seed(1)
    n = 200_000
    x_p, x_q = 1 + torch.randn(n, generator=g, dtype=F64), torch.randn(n, generator=g, dtype=F64)
    est = variational_bound("kl", 0.5 + x_p, 0.5 + x_q).item()
    se = math.sqrt((1.0 + (math.e - 1)) / n)
    assert abs(est - 0.5) < 5 * se


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("fn", [kl, js, tv, *[
    (lambda p, q, n=n: f_divergence(p, q, n)) for n in NAMES]])
def test_gradcheck(fn):
    # Differentiate through a softmax, so every perturbed input is still a distribution
    # (perturbing p directly would break "sums to one" and be rejected, rightly).
    g = torch.Generator().manual_seed(6)
    a = torch.randn(3, 5, generator=g, dtype=F64, requires_grad=True)
    b = torch.randn(3, 5, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: fn(a.softmax(-1), b.softmax(-1)), (a, b))


def test_gradcheck_variational_bound():
    t_p = torch.randn(7, dtype=F64, requires_grad=True)
    for name in NAMES:
        gen = GENERATORS[name]
        fn = lambda a, b, gen=gen: variational_bound(gen, gen.activation(a),  # noqa: E731
                                                      gen.activation(b))
        t_q = torch.randn(5, dtype=F64, requires_grad=True)
        assert torch.autograd.gradcheck(fn, (t_p, t_q)), name


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", [kl, js, tv, lambda p, q: f_divergence(p, q, "kl")])
def test_bad_probabilities_raise(fn):
    good = torch.tensor([0.5, 0.5], dtype=F64)
    with pytest.raises(ValueError, match="non-negative"):
        fn(torch.tensor([1.5, -0.5], dtype=F64), good)
    with pytest.raises(ValueError, match="sum to one"):
        fn(good, torch.tensor([0.5, 0.6], dtype=F64))
    with pytest.raises(ValueError, match="same shape"):
        fn(good, torch.tensor([0.2, 0.3, 0.5], dtype=F64))
    with pytest.raises(ValueError, match="float tensor"):
        fn(torch.tensor([1, 0]), good)
    with pytest.raises(ValueError, match="float tensor"):
        fn([0.5, 0.5], good)


def test_unknown_generator_names_raise():
    p = torch.tensor([0.5, 0.5], dtype=F64)
    with pytest.raises(ValueError, match="known generators"):
        get_generator("wasserstein")
    with pytest.raises(ValueError, match="known generators"):
        f_divergence(p, p, "KL")
    with pytest.raises(ValueError, match="known generators"):
        variational_bound("chi", torch.zeros(3), torch.zeros(3))
    assert isinstance(get_generator("js"), FDivergence)


def test_variational_bound_bad_shapes_raise():
    with pytest.raises(ValueError, match="1-D"):
        variational_bound("kl", torch.zeros(3, 1), torch.zeros(3))
    with pytest.raises(ValueError, match="1-D"):
        variational_bound("kl", torch.zeros(3), torch.zeros(0))
    with pytest.raises(ValueError, match="1-D"):
        variational_bound("kl", torch.zeros(3), [0.0])

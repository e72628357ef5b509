"""Tests for divergences.wasserstein: scipy for W_1 in 1-D, an independent replication-based
computation for W_p with unequal sizes, closed forms (Gaussians, translations), the Bures formula
against scipy's matrix square root, metric properties (hypothesis), gradients in float64.

Monte Carlo tolerances: a mean of L i.i.d. terms has standard error sd / sqrt(L); comparisons
allow 4 standard errors.
"""

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from divergences import (
    gaussian_w2,
    projected_wasserstein,
    random_directions,
    sliced_wasserstein,
    wasserstein_1d,
    wasserstein_assignment,
)

F64 = dict(dtype=torch.float64)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), **F64)


def _spd(d, seed, jitter=0.1):
    a = _randn(d, d, seed=seed)
    return a @ a.T + jitter * torch.eye(d, **F64)


# ---------------------------------------------------------------- wasserstein_1d


@pytest.mark.parametrize("n,m", [(1, 1), (7, 5), (40, 40), (13, 29)])
def test_w1_matches_scipy(n, m):
    x, y = _randn(n, seed=n), 2 * _randn(m, seed=100 + m) + 0.5
    ref = scipy.stats.wasserstein_distance(x.numpy(), y.numpy())
    assert wasserstein_1d(x, y, p=1).item() == pytest.approx(ref, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("p", [1, 1.5, 2, 3])
def test_wp_unequal_sizes_equals_sorted_matching_of_replicated_samples(p):
    # Repeating each of N points M/g times and each of M points N/g times (g = gcd) leaves both
    # empirical distributions unchanged and makes the sizes equal, where the sorted matching is
    # optimal: an independent computation of the merged-quantile sum.
    n, m = 6, 4
    x, y = _randn(n, seed=1), _randn(m, seed=2) + 0.3
    k = n * m // math.gcd(n, m)
    xr, yr = x.repeat_interleave(k // n), y.repeat_interleave(k // m)
    ref = (xr.sort().values - yr.sort().values).abs().pow(p).mean().pow(1 / p)
    assert wasserstein_1d(x, y, p).item() == pytest.approx(ref.item(), rel=1e-12)


def test_w2_between_gaussian_quantile_grids_approaches_the_closed_form():
    # x_i = m + s Φ^{-1}((i - ½)/n) is a deterministic n-point quantisation of N(m, s²); its
    # quantile function converges to the Gaussian's, so W_2 → √((m1-m2)² + (s1-s2)²) (the 1-D
    # Bures formula). The midpoint rule in u has error O(log n / n) from the tails: rtol 1e-3
    # at n = 10^5 (about 10x that error), unequal n and m to exercise the merged breakpoints.
    def grid(n, m, s):
        u = (torch.arange(1, n + 1, **F64) - 0.5) / n
        return m + s * torch.as_tensor(scipy.stats.norm.ppf(u.numpy()))

    x, y = grid(100_000, 0.0, 1.0), grid(70_000, 1.5, 2.0)
    assert wasserstein_1d(x, y, 2).item() == pytest.approx(math.sqrt(1.5**2 + 1.0), rel=1e-3)
    w1 = wasserstein_1d(grid(100_000, 0.0, 1.0), grid(70_000, 1.5, 1.0), 1).item()
    assert w1 == pytest.approx(1.5, rel=1e-3)  # equal scales: W_p = |m1 - m2| for every p


def test_wasserstein_1d_is_batched_and_follows_dtype():
    x, y = _randn(3, 8, seed=3), _randn(3, 5, seed=4)
    batched = wasserstein_1d(x, y, 2)
    assert batched.shape == (3,)
    for b in range(3):
        assert batched[b].item() == pytest.approx(wasserstein_1d(x[b], y[b], 2).item(), rel=1e-12)
    w32 = wasserstein_1d(x[0].float(), y[0].float(), 2)
    assert w32.dtype == torch.float32 and w32.ndim == 0
    assert w32.item() == pytest.approx(batched[0].item(), rel=1e-5)


finite = st.floats(-10, 10, allow_nan=False, width=64)
samples = st.lists(finite, min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(samples, samples, samples, st.sampled_from([1.0, 2.0, 3.0]))
def test_wasserstein_1d_is_a_metric(a, b, c, p):
    x, y, z = (torch.tensor(v, **F64) for v in (a, b, c))
    dxy, dyx = wasserstein_1d(x, y, p).item(), wasserstein_1d(y, x, p).item()
    assert dxy >= 0 and dxy == pytest.approx(dyx, rel=1e-12, abs=1e-12)
    assert wasserstein_1d(x, x, p).item() == 0.0
    assert wasserstein_1d(x, x[torch.randperm(len(x))], p).item() == 0.0
    assert dxy <= wasserstein_1d(x, z, p).item() + wasserstein_1d(z, y, p).item() + 1e-9


def test_wasserstein_1d_gradients():
    x, y = _randn(6, seed=5).requires_grad_(), _randn(4, seed=6).requires_grad_()
    for p in (1, 2, 3):
        assert torch.autograd.gradcheck(lambda a, b, p=p: wasserstein_1d(a, b, p), (x, y))


@pytest.mark.parametrize("bad", [
    dict(x=torch.zeros(()), y=torch.zeros(3)),            # 0-d
    dict(x=torch.zeros(0), y=torch.zeros(3)),             # empty
    dict(x=torch.zeros(2, 3), y=torch.zeros(3, 3)),       # leading dims differ
    dict(x=torch.zeros(3, dtype=torch.long), y=torch.zeros(3)),
    dict(x=torch.zeros(3), y=torch.zeros(3, **F64)),      # dtype mismatch
    dict(x=[0.0, 1.0], y=torch.zeros(3)),
    dict(p=0.5), dict(p=float("inf")), dict(p=True), dict(p="2"),
])
def test_wasserstein_1d_bad_input(bad):
    kw = dict(x=torch.zeros(3), y=torch.ones(4), p=1) | bad
    with pytest.raises(ValueError):
        wasserstein_1d(**kw)


# ---------------------------------------------------------------- sliced


def test_sliced_of_a_translation_matches_its_expectation():
    # y = x + v: every projection is a 1-D translation by θ·v, so W_2²(θ) = (θ·v)² exactly and
    # SW_2² = E (θ·v)² = ‖v‖² / D. In D = 2 with ‖v‖ = 1, (θ·v)² = cos²φ, φ ~ U(0, 2π):
    # variance E cos⁴ − ¼ = 3/8 − 1/4 = 1/8, so the mean over L has s.e. √(1/8 / L).
    x = _randn(30, 2, seed=7)
    v = torch.tensor([0.6, 0.8], **F64)
    big_l = 8_000
    sw2 = sliced_wasserstein(x, x + v, big_l, generator=torch.Generator().manual_seed(0)) ** 2
    assert abs(sw2.item() - 0.5) < 4 * math.sqrt(0.125 / big_l)
    theta = random_directions(5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(projected_wasserstein(x, x + v, theta), (theta @ v).abs(), atol=1e-12)


def test_sliced_in_one_dimension_is_wasserstein_1d():
    x, y = _randn(9, 1, seed=8), _randn(6, 1, seed=9) * 3
    for p in (1, 2):
        sw = sliced_wasserstein(x, y, 3, p, generator=torch.Generator().manual_seed(2))
        assert sw.item() == pytest.approx(wasserstein_1d(x[:, 0], y[:, 0], p).item(), rel=1e-12)


def test_every_projection_is_at_most_the_exact_distance():
    # projection onto a unit vector is 1-Lipschitz, so W_p(θ#μ, θ#ν) ≤ W_p(μ, ν) for every θ;
    # and for p = 2 the average over θ is ≤ W_2² / D (E (θ·u)² = ‖u‖²/D under the optimal plan).
    x, y = _randn(40, 3, seed=10), _randn(40, 3, seed=11) * 0.5 + 1.0
    theta = random_directions(2_000, 3, generator=torch.Generator().manual_seed(3),
                              dtype=torch.float64)
    for p in (1, 2, 3):
        w = wasserstein_assignment(x, y, p).distance.item()
        assert projected_wasserstein(x, y, theta, p).max().item() <= w + 1e-12
    w2 = wasserstein_assignment(x, y, 2).distance.item()
    per = projected_wasserstein(x, y, theta, 2).pow(2)
    assert per.mean().item() <= w2**2 / 3 + 4 * per.std().item() / math.sqrt(len(per))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 8), st.integers(1, 8), st.integers(1, 8))
def test_sliced_with_fixed_directions_is_a_metric(seed, n1, n2, n3):
    # With the same directions SW_p is an L^p average of 1-D metrics: Minkowski gives the
    # triangle inequality.
    x, y, z = _randn(n1, 2, seed=seed), _randn(n2, 2, seed=seed + 1), _randn(n3, 2, seed=seed + 2)

    def sw(a, b):
        return sliced_wasserstein(a, b, 16, generator=torch.Generator().manual_seed(seed)).item()

    assert sw(x, y) == pytest.approx(sw(y, x), rel=1e-12, abs=1e-12)
    assert sw(x, x) == 0.0
    assert sw(x, y) <= sw(x, z) + sw(z, y) + 1e-9


def test_sliced_gradients_and_float32():
    x, y = _randn(5, 2, seed=12).requires_grad_(), _randn(7, 2, seed=13).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: sliced_wasserstein(a, b, 4, generator=torch.Generator().manual_seed(4)),
        (x, y))
    s32 = sliced_wasserstein(x.detach().float(), y.detach().float(), 4,
                             generator=torch.Generator().manual_seed(4))
    assert s32.dtype == torch.float32


@pytest.mark.parametrize("bad", [
    dict(n_projections=0), dict(n_projections=2.0), dict(p=0.9),
    dict(x=torch.zeros(5)), dict(y=torch.zeros(4, 3)), dict(x=torch.zeros(0, 2)),
    dict(y=torch.zeros(4, 2, **F64)),
])
def test_sliced_bad_input(bad):
    kw = dict(x=torch.zeros(5, 2), y=torch.ones(4, 2), n_projections=3, p=2) | bad
    with pytest.raises(ValueError):
        sliced_wasserstein(**kw)


def test_projected_and_directions_bad_input():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError):
        projected_wasserstein(x, x, torch.ones(4, 3))       # wrong D
    with pytest.raises(ValueError):
        projected_wasserstein(x, x, torch.ones(4, 2))       # not unit vectors
    with pytest.raises(ValueError):
        random_directions(0, 2)
    with pytest.raises(ValueError):
        random_directions(3, 0)


# ---------------------------------------------------------------- exact assignment


def test_assignment_matches_brute_force_over_permutations():
    import itertools
    x, y = _randn(5, 2, seed=14), _randn(5, 2, seed=15)
    c = torch.cdist(x, y) ** 2
    best = min(sum(c[i, s[i]].item() for i in range(5)) / 5
               for s in itertools.permutations(range(5)))
    res = wasserstein_assignment(x, y, 2)
    assert res.distance.item() == pytest.approx(math.sqrt(best), rel=1e-12)
    assert sorted(res.perm.tolist()) == list(range(5))


def test_assignment_in_one_dimension_is_the_sorted_matching():
    x, y = _randn(30, 1, seed=16), _randn(30, 1, seed=17) + 1
    for p in (1, 2):
        assert wasserstein_assignment(x, y, p).distance.item() == pytest.approx(
            wasserstein_1d(x[:, 0], y[:, 0], p).item(), rel=1e-12)


def test_assignment_gradient_is_the_envelope_gradient():
    x, y = _randn(6, 2, seed=18).requires_grad_(), _randn(6, 2, seed=19).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: wasserstein_assignment(a, b, 2).distance, (x, y))


def test_assignment_bad_input():
    with pytest.raises(ValueError):
        wasserstein_assignment(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError):
        wasserstein_assignment(torch.zeros(3, 2), torch.zeros(3, 2), p=0)


# ---------------------------------------------------------------- gaussian_w2


def _bures_scipy(m1, s1, m2, s2):
    r = scipy.linalg.sqrtm(s1.numpy())
    cross = scipy.linalg.sqrtm(r @ s2.numpy() @ r).real
    return math.sqrt(float(((m1 - m2) ** 2).sum()) + np.trace(s1.numpy() + s2.numpy() - 2 * cross))


@pytest.mark.parametrize("d", [1, 2, 5])
def test_gaussian_w2_matches_scipy_sqrtm(d):
    m1, m2 = _randn(d, seed=20), _randn(d, seed=21)
    s1, s2 = _spd(d, 22), _spd(d, 23)
    assert gaussian_w2(m1, s1, m2, s2).item() == pytest.approx(_bures_scipy(m1, s1, m2, s2),
                                                               rel=1e-9)


def test_gaussian_w2_closed_forms():
    # 1-D: W_2² = (m1 − m2)² + (σ1 − σ2)²; commuting (diagonal) covariances: Σ (√a_i − √b_i)²;
    # equal covariances: ‖m1 − m2‖ (a pure translation); a singular (rank-1) covariance works.
    one = gaussian_w2(torch.tensor([0.5], **F64), torch.tensor([[4.0]], **F64),
                      torch.tensor([-1.0], **F64), torch.tensor([[0.25]], **F64))
    assert one.item() == pytest.approx(math.sqrt(1.5**2 + 1.5**2), rel=1e-12)
    a, b = torch.tensor([1.0, 4.0, 9.0], **F64), torch.tensor([4.0, 1.0, 0.0], **F64)
    m = torch.zeros(3, **F64)
    diag = gaussian_w2(m, torch.diag(a), m + 1, torch.diag(b))
    assert diag.item() == pytest.approx(math.sqrt(3 + ((a.sqrt() - b.sqrt()) ** 2).sum()),
                                        rel=1e-10)
    s = _spd(4, 24)
    m1, m2 = _randn(4, seed=25), _randn(4, seed=26)
    assert gaussian_w2(m1, s, m2, s).item() == pytest.approx((m1 - m2).norm().item(), rel=1e-8)
    u = torch.tensor([[1.0], [2.0]], **F64)
    rank1 = u @ u.T                                         # N(0, u uᵀ) lives on a line
    assert gaussian_w2(m[:2], rank1, m[:2], rank1).item() == pytest.approx(0.0, abs=1e-7)
    # a point mass (S = 0) against N(0, S2): W_2² = tr S2
    s2 = _spd(2, 27)
    assert gaussian_w2(m[:2], torch.zeros(2, 2, **F64), m[:2], s2).item() == pytest.approx(
        math.sqrt(s2.trace().item()), rel=1e-10)


def test_gaussian_w2_batched_and_float32():
    m1, m2 = _randn(3, 2, seed=28), _randn(3, 2, seed=29)
    s1 = torch.stack([_spd(2, 30 + i) for i in range(3)])
    s2 = torch.stack([_spd(2, 40 + i) for i in range(3)])
    w = gaussian_w2(m1, s1, m2, s2)
    assert w.shape == (3,)
    for i in range(3):
        assert w[i].item() == pytest.approx(_bures_scipy(m1[i], s1[i], m2[i], s2[i]), rel=1e-9)
    w32 = gaussian_w2(m1.float(), s1.float(), m2.float(), s2.float())
    assert w32.dtype == torch.float32 and torch.allclose(w32.double(), w, rtol=1e-4)


@st.composite
def gaussians(draw):
    seed = draw(st.integers(0, 10_000))
    return _randn(2, seed=seed), _spd(2, seed + 1, jitter=draw(st.floats(0.01, 1.0)))


@settings(max_examples=50, deadline=None)
@given(gaussians(), gaussians(), gaussians())
def test_gaussian_w2_is_a_metric(a, b, c):
    d_ab, d_ba = gaussian_w2(*a, *b).item(), gaussian_w2(*b, *a).item()
    assert d_ab >= 0 and d_ab == pytest.approx(d_ba, rel=1e-8, abs=1e-10)
    assert gaussian_w2(*a, *a).item() < 1e-6
    assert d_ab <= gaussian_w2(*a, *c).item() + gaussian_w2(*c, *b).item() + 1e-9


def test_gaussian_w2_gradients():
    # gradcheck perturbs single entries, which would break symmetry: parametrise S = A Aᵀ + ½ I.
    m1, m2 = _randn(3, seed=31).requires_grad_(), _randn(3, seed=32).requires_grad_()
    a1, a2 = _randn(3, 3, seed=33).requires_grad_(), _randn(3, 3, seed=34).requires_grad_()
    eye = torch.eye(3, **F64)

    def f(m1, a1, m2, a2):
        return gaussian_w2(m1, a1 @ a1.T + eye / 2, m2, a2 @ a2.T + eye / 2)

    assert torch.autograd.gradcheck(f, (m1, a1, m2, a2))
    # identity covariances (repeated eigenvalues) still have finite gradients
    s = (eye * 2).requires_grad_()
    gaussian_w2(m1.detach(), s, m2.detach(), _spd(3, 35)).backward()
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("bad", [
    dict(S1=torch.tensor([[1.0, 0.5], [0.0, 1.0]], **F64)),        # not symmetric
    dict(S2=torch.tensor([[1.0, 2.0], [2.0, 1.0]], **F64)),        # eigenvalue −1
    dict(S1=torch.eye(3, **F64)),                                  # wrong size
    dict(m2=torch.zeros(3, **F64)),                                # means differ in D
    dict(m1=torch.zeros((), **F64)),                               # 0-d mean
    dict(S1=torch.eye(2)),                                         # dtype differs from m1
    dict(m2=torch.zeros(2, dtype=torch.long)),
])
def test_gaussian_w2_bad_input(bad):
    kw = dict(m1=torch.zeros(2, **F64), S1=torch.eye(2, **F64), m2=torch.ones(2, **F64),
              S2=2 * torch.eye(2, **F64)) | bad
    with pytest.raises(ValueError):
        gaussian_w2(**kw)

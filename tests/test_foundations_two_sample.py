"""Tests for foundations.two_sample: the MMD against a brute-force sum and its closed form for two
Gaussians, the permutation test's calibration and power.

Monte Carlo tolerances: a mean over R independent replications has standard error sd / sqrt(R);
a rejection frequency over R tests has binomial standard error sqrt(α (1 - α) / R). Comparisons
allow 4 standard errors.
"""

import math

import numpy as np
import pytest
import scipy.spatial.distance
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from foundations import (
    PermutationTest,
    gaussian_kernel,
    median_heuristic,
    mmd2,
    permutation_test,
)

F64 = dict(dtype=torch.float64)


def test_gaussian_kernel_is_the_formula():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 3, generator=g, **F64), torch.randn(5, 3, generator=g, **F64)
    k = gaussian_kernel(x, y, 0.8)
    ref = np.exp(-scipy.spatial.distance.cdist(x.numpy(), y.numpy(), "sqeuclidean") / (2 * 0.64))
    np.testing.assert_allclose(k.numpy(), ref, rtol=1e-12)
    assert torch.equal(gaussian_kernel(x, x, 0.8).diagonal(), torch.ones(7, **F64))


def test_median_heuristic_is_the_median_pooled_distance():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 2, generator=g, **F64), torch.randn(3, 2, generator=g, **F64)
    d = scipy.spatial.distance.pdist(np.concatenate([x.numpy(), y.numpy()]))  # 15 pairs: odd
    assert median_heuristic(x, y) == pytest.approx(float(np.median(d)), rel=1e-12)
    assert median_heuristic(x, y) == median_heuristic(y, x)


def test_mmd2_is_the_unbiased_u_statistic():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(6, 2, generator=g, **F64), torch.randn(4, 2, generator=g, **F64) + 0.5
    h = 0.9

    def k(a, b):
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * h * h))

    xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / (6 * 5)
    yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / (4 * 3)
    xy = sum(k(x[i], y[j]) for i in range(6) for j in range(4)) / (6 * 4)
    assert mmd2(x, y, h).item() == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


@pytest.mark.parametrize("shift", [0.0, 0.7])
def test_mmd2_is_unbiased_for_the_population_mmd_of_two_gaussians(shift):
    # P = N(0, s²I), Q = N(Δ, s²I), k Gaussian of bandwidth h, D dims. With z ~ N(m, 2s²I):
    # E exp(-‖z‖²/2h²) = (h²/(h²+2s²))^{D/2} exp(-‖m‖²/(2(h²+2s²))), so
    # MMD² = 2 (h²/(h²+2s²))^{D/2} (1 - exp(-‖Δ‖²/(2(h²+2s²)))).
    d, s, h, n, reps = 2, 1.0, 1.5, 40, 400
    delta = torch.tensor([shift, 0.0], **F64)
    c = (h**2 / (h**2 + 2 * s**2)) ** (d / 2)
    exact = 2 * c * (1 - math.exp(-float(delta @ delta) / (2 * (h**2 + 2 * s**2))))
    g = torch.Generator().manual_seed(3)
    values = torch.stack([mmd2(torch.randn(n, d, generator=g, **F64),
                               delta + torch.randn(n, d, generator=g, **F64), h)
                          for _ in range(reps)])
    se = values.std().item() / math.sqrt(reps)
    assert abs(values.mean().item() - exact) < 4 * se, (values.mean().item(), exact, se)
    if shift == 0.0:
        assert (values < 0).any()  # unbiased around 0, so some estimates are negative


def test_the_vectorised_test_equals_the_generic_one():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(30, 2, generator=g, **F64), torch.randn(25, 2, generator=g, **F64) + 0.4
    h = median_heuristic(x, y)
    fast = permutation_test(x, y, n_permutations=40, generator=torch.Generator().manual_seed(9))
    slow = permutation_test(x, y, lambda a, b: mmd2(a, b, h), n_permutations=40,
                            generator=torch.Generator().manual_seed(9))
    assert fast.bandwidth == pytest.approx(h) and slow.bandwidth is None
    assert fast.statistic == pytest.approx(mmd2(x, y).item(), rel=1e-10, abs=1e-12)
    torch.testing.assert_close(fast.null, slow.null, rtol=1e-9, atol=1e-12)
    assert fast.p_value == slow.p_value


def test_permutation_test_rejects_a_shift_and_p_value_formula():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(200, 2, generator=g, **F64), torch.randn(200, 2, generator=g, **F64) + 0.5
    t = permutation_test(x, y, n_permutations=99, generator=g)
    assert t.p_value == pytest.approx((1 + int((t.null >= t.statistic).sum())) / 100)
    assert t.p_value == pytest.approx(0.01) and t.reject(0.01)
    assert t.statistic > t.threshold(0.01)


def test_permutation_p_values_are_calibrated_under_the_null():
    # With B = 19 re-splits, P(p <= α) = ⌊α (B + 1)⌋ / (B + 1) exactly under H0: 0.1 and 0.5 here.
    reps, n = 400, 20
    g = torch.Generator().manual_seed(6)
    p = torch.tensor([permutation_test(torch.randn(n, 2, generator=g, **F64),
                                       torch.randn(n, 2, generator=g, **F64),
                                       n_permutations=19, generator=g).p_value
                      for _ in range(reps)], **F64)
    for alpha in (0.1, 0.5):
        rate = (p <= alpha + 1e-12).double().mean().item()
        assert abs(rate - alpha) < 4 * math.sqrt(alpha * (1 - alpha) / reps), (alpha, rate)


def test_threshold_agrees_with_reject():
    null = torch.arange(1.0, 100.0, **F64)  # 99 null values 1..99
    for stat in (50.0, 98.5, 99.0, 99.5, 200.0):
        t = PermutationTest(stat, (1 + int((null >= stat).sum())) / 100, null)
        for alpha in (0.01, 0.02, 0.05, 0.5):
            assert t.reject(alpha) == (stat > t.threshold(alpha)), (stat, alpha)
    assert PermutationTest(1.0, 0.05, torch.zeros(19, **F64)).threshold(0.01) == math.inf


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 12), st.integers(2, 12), st.floats(0.1, 5.0))
def test_mmd2_symmetry_and_translation_invariance(seed, m, n, h):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(m, 3, generator=g, **F64), 2 * torch.randn(n, 3, generator=g, **F64)
    shift = torch.randn(3, generator=g, **F64)
    a = mmd2(x, y, h)
    assert a.item() == pytest.approx(mmd2(y, x, h).item(), abs=1e-12)
    assert a.item() == pytest.approx(mmd2(x + shift, y + shift, h).item(), abs=1e-10)
    # the biased V-statistic (diagonals kept) is a squared RKHS norm, hence >= 0
    v = (gaussian_kernel(x, x, h).mean() + gaussian_kernel(y, y, h).mean()
         - 2 * gaussian_kernel(x, y, h).mean())
    assert v.item() >= -1e-12
    t = permutation_test(x, y, n_permutations=9, generator=g)
    assert 1 / 10 - 1e-12 <= t.p_value <= 1.0


def test_mmd2_gradcheck():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(5, 2, generator=g, **F64, requires_grad=True)
    y = torch.randn(4, 2, generator=g, **F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: mmd2(a, b, 0.7), (x, y))


def test_value_errors():
    x, y = torch.randn(5, 2), torch.randn(6, 2)
    bad = [
        lambda: mmd2(x[:1], y, 1.0),
        lambda: mmd2(x, torch.randn(6, 3), 1.0),
        lambda: mmd2(torch.randn(5), y, 1.0),
        lambda: mmd2(x, y, 0.0),
        lambda: mmd2(x, y, -1.0),
        lambda: mmd2(x, y, float("inf")),
        lambda: mmd2(torch.zeros(5, 2, dtype=torch.long), y),
        lambda: gaussian_kernel(x, y, 0.0),
        lambda: median_heuristic(torch.zeros(3, 2), torch.zeros(3, 2)),
        lambda: median_heuristic(x, torch.randn(6, 3)),
        lambda: permutation_test(x, y, n_permutations=0),
        lambda: permutation_test(x, y, n_permutations=True),
        lambda: permutation_test(x, y, n_permutations=2.5),
        lambda: permutation_test(x, y, lambda a, b: mmd2(a, b), bandwidth=1.0),
        lambda: permutation_test(x, y, bandwidth=0.0),
        lambda: permutation_test(x[:1], y),
        lambda: PermutationTest(0.0, 1.0, torch.zeros(9)).threshold(0.0),
        lambda: PermutationTest(0.0, 1.0, torch.zeros(9)).reject(1.5),
    ]
    for i, call in enumerate(bad):
        with pytest.raises(ValueError):
            call()
            pytest.fail(f"case {i} raised nothing")


def test_mmd2_from_kernels_bad_input():
    from foundations import mmd2_from_kernels

    k = torch.ones(3, 3)
    with pytest.raises(ValueError, match="kernel matrices"):
        mmd2_from_kernels(k, k, torch.ones(3, 4))
    with pytest.raises(ValueError, match="kernel matrices"):
        mmd2_from_kernels(torch.ones(1, 1), k, torch.ones(1, 3))
    with pytest.raises(ValueError, match="kernel matrices"):
        mmd2_from_kernels(k, k, [[1.0]])

"""Tests for evaluation.frechet: scipy.linalg.sqrtm, closed forms, divergences.gaussian_w2."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from divergences import gaussian_w2
from evaluation import (
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    frechet_distance_sqrtm,
)


def random_gaussian(gen, D, rank=None, dtype=torch.float64):
    """A mean (D,) and a PSD covariance A Aᵀ (D, D) of the given rank (default D)."""
    A = torch.randn(D, D if rank is None else rank, generator=gen, dtype=torch.float64)
    mu = torch.randn(D, generator=gen, dtype=torch.float64)
    return mu.to(dtype), (A @ A.T).to(dtype)


def orthogonal(gen, D):
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=gen, dtype=torch.float64))
    return q


@pytest.mark.parametrize("D", [1, 2, 5, 16])
def test_matches_scipy_sqrtm(D):
    gen = torch.Generator().manual_seed(D)
    mu1, S1 = random_gaussian(gen, D)
    mu2, S2 = random_gaussian(gen, D)
    d2 = frechet_distance(mu1, S1, mu2, S2)
    assert d2.dtype == torch.float64 and d2.shape == ()
    expected = frechet_distance_sqrtm(mu1, S1, mu2, S2)
    assert float(d2) == pytest.approx(expected, rel=1e-9, abs=1e-9 * float(S1.trace() + S2.trace()))
    # the symmetric form (S1^{1/2} S2 S1^{1/2})^{1/2} of the same trace, also via scipy
    R = scipy.linalg.sqrtm(S1.numpy()).real
    cross = np.trace(scipy.linalg.sqrtm(R @ S2.numpy() @ R).real)
    sym = float((mu1 - mu2).pow(2).sum() + S1.trace() + S2.trace()) - 2 * cross
    assert float(d2) == pytest.approx(sym, rel=1e-9, abs=1e-9 * float(S1.trace() + S2.trace()))


def test_equal_covariances_leave_the_mean_term():
    gen = torch.Generator().manual_seed(0)
    for rank in (6, 2):  # full rank and singular
        mu1, S = random_gaussian(gen, 6, rank)
        mu2 = torch.randn(6, generator=gen, dtype=torch.float64)
        d2 = frechet_distance(mu1, S, mu2, S)
        expected = float((mu1 - mu2).pow(2).sum())
        # eig(S^{1/2} S S^{1/2}) = λ², √ gives λ back to ~D ε ‖S‖ per eigenvalue
        assert float(d2) == pytest.approx(expected, abs=1e-10 * float(S.trace()))
        zero = float(frechet_distance(mu1, S, mu1, S))
        assert zero == pytest.approx(0, abs=1e-10 * float(S.trace()))


def test_commuting_and_singular_covariances_closed_form():
    # S1 = U diag(a) Uᵀ, S2 = U diag(b) Uᵀ commute: d² = ‖Δμ‖² + Σ (√a_i − √b_i)², zeros allowed.
    gen = torch.Generator().manual_seed(1)
    U = orthogonal(gen, 4)
    a = torch.tensor([4.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    b = torch.tensor([1.0, 0.0, 9.0, 0.0], dtype=torch.float64)
    mu1 = torch.zeros(4, dtype=torch.float64)
    mu2 = torch.tensor([1.0, 2.0, 0, 0], dtype=torch.float64)
    d2 = frechet_distance(mu1, U @ torch.diag(a) @ U.T, mu2, U @ torch.diag(b) @ U.T)
    # Rotating by U leaves the zero eigenvalues at rounding size, |λ| <~ D ε ‖S1‖; their square
    # roots (√(D ε ‖S1‖) ≈ 6e-8) meet √‖S2‖ = 3 in the cross term, so the exact answer is only
    # determined to ~2 √(D ε ‖S1‖ ‖S2‖) (the √ has infinite slope at 0); allow twice that.
    eps = torch.finfo(torch.float64).eps
    assert float(d2) == pytest.approx(5.0 + (1 + 1 + 9 + 0), abs=4 * math.sqrt(4 * eps * 4 * 9))
    # two degenerate Gaussians on orthogonal lines: tr S1 + tr S2 − 0
    e1, e2 = torch.diag(torch.tensor([1.0, 0.0])), torch.diag(torch.tensor([0.0, 1.0]))
    assert float(frechet_distance(torch.zeros(2), e1, torch.zeros(2), e2)) == pytest.approx(2.0)
    # 1-D: (m1 − m2)² + (s1 − s2)²
    d2 = frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-1.0]),
                          torch.tensor([[0.25]]))
    assert float(d2) == pytest.approx(4.0 + 1.5**2, abs=1e-12)


def test_float32_inputs_are_computed_in_float64():
    gen = torch.Generator().manual_seed(2)
    mu1, S1 = random_gaussian(gen, 8, dtype=torch.float32)
    mu2, S2 = random_gaussian(gen, 8, dtype=torch.float32)
    d2 = frechet_distance(mu1, S1, mu2, S2)
    assert d2.dtype == torch.float64
    # float32 values convert exactly, so the result is the float64 computation on those values
    d2_64 = frechet_distance(mu1.double(), S1.double(), mu2.double(), S2.double())
    assert float(d2) == float(d2_64)


def test_batched_equals_one_by_one():
    gen = torch.Generator().manual_seed(3)
    pairs = [(random_gaussian(gen, 3), random_gaussian(gen, 3)) for _ in range(4)]
    mu1 = torch.stack([p[0][0] for p in pairs]).reshape(2, 2, 3)
    S1 = torch.stack([p[0][1] for p in pairs]).reshape(2, 2, 3, 3)
    mu2 = torch.stack([p[1][0] for p in pairs]).reshape(2, 2, 3)
    S2 = torch.stack([p[1][1] for p in pairs]).reshape(2, 2, 3, 3)
    batched = frechet_distance(mu1, S1, mu2, S2)
    assert batched.shape == (2, 2)
    single = torch.stack([frechet_distance(*p[0], *p[1]) for p in pairs]).reshape(2, 2)
    torch.testing.assert_close(batched, single, rtol=1e-12, atol=1e-12)


seeds = st.integers(0, 2**32 - 1)


@settings(max_examples=40, deadline=None)
@given(seeds, st.integers(1, 6), st.integers(1, 6), st.integers(1, 6))
def test_metric_properties_and_bures(seed, D, rank1, rank2):
    gen = torch.Generator().manual_seed(seed)
    g1 = random_gaussian(gen, D, min(rank1, D))
    g2 = random_gaussian(gen, D, min(rank2, D))
    g3 = random_gaussian(gen, D)
    d12 = float(frechet_distance(*g1, *g2))
    scale = 1e-9 * (1 + float(g1[1].trace() + g2[1].trace() + g3[1].trace()))
    # symmetric
    assert d12 == pytest.approx(float(frechet_distance(*g2, *g1)), abs=scale)
    # the trace part is a squared (Bures) distance: d² >= ‖Δμ‖²
    assert d12 >= float((g1[0] - g2[0]).pow(2).sum()) - scale
    # the square root is a metric: triangle inequality through a third Gaussian
    d13, d32 = float(frechet_distance(*g1, *g3)), float(frechet_distance(*g3, *g2))
    assert math.sqrt(d12) <= math.sqrt(d13) + math.sqrt(d32) + math.sqrt(scale)
    # the squared 2-Wasserstein distance of divergences.gaussian_w2 (computed via a factor)
    w2 = float(gaussian_w2(g1[0], g1[1], g2[0], g2[1]))
    assert d12 == pytest.approx(w2**2, abs=1e-7 * (1 + float(g1[1].trace() + g2[1].trace())))


def test_gradcheck():
    gen = torch.Generator().manual_seed(4)
    A1, A2 = (torch.randn(3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
              for _ in range(2))
    m1, m2 = (torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
              for _ in range(2))
    eye = torch.eye(3, dtype=torch.float64)

    def fn(m1, A1, m2, A2):  # symmetric PSD by construction, so perturbations stay valid
        return frechet_distance(m1, A1 @ A1.T + 0.5 * eye, m2, A2 @ A2.T + 0.5 * eye)

    assert torch.autograd.gradcheck(fn, (m1, A1, m2, A2))


def test_from_features_matches_numpy_statistics():
    gen = torch.Generator().manual_seed(5)
    f1 = torch.randn(200, 4, generator=gen) @ torch.randn(4, 4, generator=gen)
    f2 = torch.randn(150, 4, generator=gen) + 1.0
    mu1, S1 = feature_statistics(f1)
    assert mu1.dtype == S1.dtype == torch.float64
    np.testing.assert_allclose(S1.numpy(), np.cov(f1.double().numpy(), rowvar=False), rtol=1e-12)
    np.testing.assert_allclose(mu1.numpy(), f1.double().numpy().mean(0), rtol=1e-12)
    mu2, S2 = feature_statistics(f2)
    d2 = frechet_distance_from_features(f1, f2)
    assert float(d2) == pytest.approx(frechet_distance_sqrtm(mu1, S1, mu2, S2), rel=1e-9)


def test_from_features_translation_rotation_and_fewer_samples_than_features():
    gen = torch.Generator().manual_seed(6)
    f = torch.randn(10, 32, generator=gen, dtype=torch.float64)  # N < D: singular covariance
    shift = torch.randn(32, generator=gen, dtype=torch.float64)
    # shifting every feature by c changes only the mean: d² = ‖c‖²
    d2 = frechet_distance_from_features(f, f + shift)
    assert float(d2) == pytest.approx(float(shift.pow(2).sum()), rel=1e-9)
    assert float(frechet_distance_from_features(f, f)) == pytest.approx(0, abs=1e-9)
    # d² is invariant to a common rotation of the feature space
    g = torch.randn(50, 32, generator=gen, dtype=torch.float64) * 2
    Q = orthogonal(gen, 32)
    assert float(frechet_distance_from_features(f @ Q, g @ Q)) == pytest.approx(
        float(frechet_distance_from_features(f, g)), rel=1e-9)


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.zeros(2), torch.eye(3), torch.zeros(2), torch.eye(2)),
         "shape \\(\\.\\.\\., D, D\\)"),
        ((torch.zeros(2), torch.eye(2), torch.zeros(3), torch.eye(3)), "share shape"),
        ((torch.zeros(()), torch.eye(1), torch.zeros(1), torch.eye(1)), "shape \\(\\.\\.\\., D\\)"),
        ((torch.zeros(2, dtype=torch.int64), torch.eye(2), torch.zeros(2), torch.eye(2)),
         "floating-point"),
        ((np.zeros(2), torch.eye(2), torch.zeros(2), torch.eye(2)), "floating-point"),
        ((torch.tensor([math.nan, 0]), torch.eye(2), torch.zeros(2), torch.eye(2)), "finite"),
        ((torch.zeros(2), torch.eye(2), torch.zeros(2), torch.tensor([[1.0, math.inf], [0, 1]])),
         "finite"),
        ((torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]]), torch.zeros(2), torch.eye(2)),
         "symmetric"),
        ((torch.zeros(2), torch.eye(2), torch.zeros(2), torch.tensor([[1.0, 0.0], [0.0, -0.1]])),
         "positive semi-definite"),
    ],
)
def test_frechet_distance_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        frechet_distance(*args)
    with pytest.raises(ValueError, match="rtol"):
        frechet_distance(torch.zeros(2), torch.eye(2), torch.zeros(2), torch.eye(2), rtol=-1.0)


def test_tolerance_accepts_rounding_but_not_more():
    S = torch.tensor([[1.0, 0.0], [0.0, -1e-12]], dtype=torch.float64)  # rounding-size negative
    assert float(frechet_distance(torch.zeros(2), S, torch.zeros(2), S)) == pytest.approx(0)
    S32 = torch.tensor([[1.0, 1e-6], [0.0, 1.0]])  # float32 asymmetry of rounding size
    frechet_distance(torch.zeros(2), S32, torch.zeros(2), S32)
    z64 = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="symmetric"):  # in float64 it is far beyond rounding
        frechet_distance(z64, S32.double(), z64, S32.double())


@pytest.mark.parametrize(
    "f1, f2, match",
    [
        (torch.zeros(10, 3), torch.zeros(10, 4), "same feature dimension"),
        (torch.zeros(1, 3), torch.zeros(10, 3), "N >= 2"),
        (torch.zeros(10), torch.zeros(10, 3), "shape \\(N, D\\)"),
        (torch.zeros(10, 3, dtype=torch.int64), torch.zeros(10, 3), "floating-point"),
        (torch.zeros(10, 3), torch.full((10, 3), math.nan), "finite"),
        (torch.zeros(10, 0), torch.zeros(10, 0), "D >= 1"),
    ],
)
def test_from_features_bad_input(f1, f2, match):
    with pytest.raises(ValueError, match=match):
        frechet_distance_from_features(f1, f2)


@pytest.mark.parametrize(
    "f, match",
    [
        (torch.zeros(1, 3), "N >= 2"),
        (torch.zeros(10), "shape \\(N, D\\)"),
        (torch.zeros(10, 3, dtype=torch.int64), "floating-point"),
        (torch.full((10, 3), math.inf), "finite"),
        (torch.zeros(10, 0), "D >= 1"),
    ],
)
def test_feature_statistics_bad_input(f, match):
    with pytest.raises(ValueError, match=match):
        feature_statistics(f)


def test_sqrtm_recipe_is_the_textbook_formula_on_a_small_case():
    # 1-D: d² = (m1 − m2)² + s1 + s2 − 2 √(s1 s2) = (m1 − m2)² + (√s1 − √s2)², exactly
    d2 = frechet_distance_sqrtm(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-2.0]),
                                torch.tensor([[9.0]]))
    assert d2 == pytest.approx(9.0 + 1.0, rel=1e-12)


def test_sqrtm_recipe_guard_regularises_a_singular_product():
    # rank-1 covariances with orthogonal ranges: S1 S2 = 0, whose sqrtm is singular (scipy may
    # return non-finite values); the guard's eps·I keeps the result finite and close to the
    # exact d² = tr S1 + tr S2 (the square-root term is 0)
    S1 = torch.diag(torch.tensor([1.0, 0.0], dtype=torch.float64))
    S2 = torch.diag(torch.tensor([0.0, 2.0], dtype=torch.float64))
    mu = torch.zeros(2, dtype=torch.float64)
    d2 = frechet_distance_sqrtm(mu, S1, mu, S2)
    assert math.isfinite(d2) and d2 == pytest.approx(3.0, abs=1e-2)
    assert float(frechet_distance(mu, S1, mu, S2)) == pytest.approx(3.0, rel=1e-12)


def test_sqrtm_recipe_in_float32_loses_digits_that_float64_keeps():
    # two near-equal, well-conditioned 64-D Gaussians: d² ≈ 1e-5 is a difference of traces near
    # 256, so float32's rounding (about 1e-7 of each trace, times D terms) swamps it (here even
    # its sign), while float64 keeps it to 1e-12 of the trace
    gen = torch.Generator().manual_seed(0)
    D = 64
    A = torch.randn(D, D, generator=gen, dtype=torch.float64)
    S = A @ A.T / D + torch.eye(D, dtype=torch.float64)
    S2 = S + 1e-3 * torch.eye(D, dtype=torch.float64)
    mu = torch.zeros(D, dtype=torch.float64)
    exact = float(frechet_distance(mu, S, mu, S2))
    d64 = frechet_distance_sqrtm(mu, S, mu, S2)
    d32 = frechet_distance_sqrtm(mu, S, mu, S2, dtype=torch.float32)
    assert abs(d64 - exact) < 1e-12 * float(S.trace())
    assert abs(d32 - exact) > 0.5 * abs(exact)


@pytest.mark.parametrize("kwargs, match", [
    (dict(dtype=torch.float16), "float32 or torch.float64"),
    (dict(eps=0.0), "eps"),
])
def test_sqrtm_recipe_bad_input(kwargs, match):
    mu, S = torch.zeros(2), torch.eye(2)
    with pytest.raises(ValueError, match=match):
        frechet_distance_sqrtm(mu, S, mu, S, **kwargs)
    with pytest.raises(ValueError, match="no batch"):
        frechet_distance_sqrtm(mu[None], S[None], mu[None], S[None])
    with pytest.raises(ValueError, match="same shape"):
        frechet_distance_sqrtm(mu, S, torch.zeros(3), torch.eye(3))

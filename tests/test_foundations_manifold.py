"""Tests for foundations.manifold: the Levina-Bickel estimator against its exact Gamma law and on
manifolds of known dimension, PCA against scikit-learn, and the synthetic manifolds' geometry."""

import math

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import make_swiss_roll
from sklearn.decomposition import PCA

from foundations import (
    intrinsic_dimension_mle,
    knn_distances,
    local_dimension_mle,
    pca_dimension,
    pca_spectrum,
    sample_sphere,
    sample_subspace,
    sample_swiss_roll_3d,
    sample_torus,
)


def ball_centres(reps, n, d, seed):
    """``reps`` independent clouds (reps, n, d): point 0 at the origin, n - 1 uniform in the unit
    ball. At the origin the density is exactly uniform in d dimensions out to radius 1, so given
    T_k the k - 1 nearer neighbours are iid uniform in the ball of radius T_k: (T_j / T_k)^d are
    uniform order statistics and S = Σ_{j<k} log(T_k / T_j) ~ Gamma(k - 1, rate d), exactly."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(reps, n, d, generator=g, dtype=torch.float64)
    r = torch.rand(reps, n, 1, generator=g, dtype=torch.float64) ** (1 / d)
    x = z / z.norm(dim=-1, keepdim=True) * r
    x[:, 0] = 0.0
    return x


def test_knn_distances_match_scipy_brute_force():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 57, 4, generator=g, dtype=torch.float64)
    t = knn_distances(x, 6, chunk=10)  # several chunks, a ragged last one, a batch dimension
    for b in range(3):
        full = scipy.spatial.distance.cdist(x[b].numpy(), x[b].numpy())
        np.fill_diagonal(full, np.inf)
        np.testing.assert_allclose(t[b].numpy(), np.sort(full, axis=1)[:, :6], rtol=1e-12)


@pytest.mark.parametrize("d", [1, 2, 5])
def test_local_estimate_follows_its_exact_gamma_law(d):
    reps, n, k = 4_000, 30, 10
    x = ball_centres(reps, n, d, seed=d)
    m_hat = local_dimension_mle(x, k)[:, 0]  # the estimate at the centre, one per cloud
    # 1/m̂ = S/(k-1) with S ~ Gamma(k-1, d): mean 1/d, variance 1/(d²(k-1)); reps independent
    # clouds, so the standard error of the mean is 1/(d √((k-1) reps)) (≈ 0.5% of 1/d).
    se_inv = 1 / (d * math.sqrt((k - 1) * reps))
    assert abs((1 / m_hat).mean().item() - 1 / d) < 4 * se_inv
    # m̂ = (k-1)/S is an inverse gamma: mean d(k-1)/(k-2), variance d²(k-1)²/((k-2)²(k-3)).
    # A normalisation by k instead of k-1 would miss by 11%, about 20 standard errors.
    mean = d * (k - 1) / (k - 2)
    se = d * (k - 1) / ((k - 2) * math.sqrt((k - 3) * reps))
    assert abs(m_hat.mean().item() - mean) < 4 * se
    # the whole law: d S = d (k-1) / m̂ ~ Gamma(k-1, 1) (KS test at a fixed seed, level 1e-3)
    assert scipy.stats.kstest((d * (k - 1) / m_hat).numpy(), scipy.stats.gamma(k - 1).cdf).pvalue \
        > 1e-3


def test_global_estimates_pool_the_local_ones():
    x = sample_sphere(400, 2, 5, seed=1)
    local = {k: local_dimension_mle(x, k) for k in range(5, 9)}
    torch.testing.assert_close(intrinsic_dimension_mle(x, 5), 1 / (1 / local[5]).mean())
    torch.testing.assert_close(intrinsic_dimension_mle(x, 5, average="estimate"), local[5].mean())
    by_k = torch.stack([1 / (1 / local[k]).mean() for k in range(5, 9)])
    torch.testing.assert_close(intrinsic_dimension_mle(x, (5, 8)), by_k.mean())
    torch.testing.assert_close(intrinsic_dimension_mle(x, [5, 8], chunk=150), by_k.mean())


# Tolerance |m̂ - d| < 0.15 d + 0.3 at N = 1,000, k = 10. The random error is small: 1/m̂ averages
# N terms of relative standard deviation 1/√(k-1), i.e. about d/√(N (k-1)) ≈ 0.01 d, a few times
# more for overlapping neighbourhoods. The systematic error dominates: the estimator assumes a
# uniform density on a flat space out to T_k ~ (k/N)^(1/d), which for d = 4 is about a third of
# the cube's half-width. Points near the cube's faces see too few neighbours (biased low);
# the sphere's positive curvature (low) and the torus' chords shorter than its arcs (high) act at
# the same scale. The exact-law test above checks the formula itself to within 0.5%.
@pytest.mark.parametrize("d", [1, 2, 3, 4])
@pytest.mark.parametrize("manifold", ["sphere", "cube", "torus"])
def test_mle_on_manifolds_of_known_dimension(manifold, d):
    sampler = {"sphere": lambda: sample_sphere(1_000, d, d + 3, seed=d),
               "cube": lambda: sample_subspace(1_000, d, d + 3, seed=d),
               "torus": lambda: sample_torus(1_000, d, 2 * d + 1, seed=d)}[manifold]
    m_hat = intrinsic_dimension_mle(sampler(), 10).item()
    assert abs(m_hat - d) < 0.15 * d + 0.3, m_hat


def test_mle_on_the_swiss_roll_is_two_and_pca_says_three():
    x, _ = sample_swiss_roll_3d(1_500, seed=0)
    assert abs(intrinsic_dimension_mle(x, 10).item() - 2) < 0.15 * 2 + 0.3
    assert pca_dimension(x, 0.95).item() == 3


@settings(max_examples=15, deadline=None)
@given(scale=st.floats(1e-3, 1e3), shift=st.floats(-100, 100), seed=st.integers(0, 2**16))
def test_mle_is_invariant_to_rotation_translation_and_scaling(scale, shift, seed):
    x = sample_sphere(150, 2, 4, seed=seed)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64))
    y = scale * x @ q + shift
    for k in (4, (5, 9)):
        torch.testing.assert_close(intrinsic_dimension_mle(y, k), intrinsic_dimension_mle(x, k),
                                   rtol=1e-9, atol=0)
    torch.testing.assert_close(local_dimension_mle(y, 6), local_dimension_mle(x, 6), rtol=1e-8,
                               atol=0)


def test_mle_batched_float32_and_device_follow_the_input():
    x = torch.stack([sample_torus(300, 2, 4, seed=s) for s in range(3)])  # (3, 300, 4)
    batched = intrinsic_dimension_mle(x, 8)
    assert batched.shape == (3,) and batched.dtype == torch.float64
    torch.testing.assert_close(batched, torch.stack([intrinsic_dimension_mle(b, 8) for b in x]))
    single = intrinsic_dimension_mle(x[0].float(), 8)
    assert single.dtype == torch.float32 and single.shape == ()
    torch.testing.assert_close(single.double(), batched[0], rtol=1e-4, atol=0)


def test_duplicate_points_are_refused():
    x = sample_sphere(50, 1, 2, seed=0)
    x = torch.cat([x, x[:1]])
    for fn in (intrinsic_dimension_mle, local_dimension_mle):
        with pytest.raises(ValueError, match="duplicate"):
            fn(x, 5)
    intrinsic_dimension_mle(torch.unique(x, dim=0), 5)  # the documented remedy works


def test_pca_spectrum_matches_sklearn():
    g = torch.Generator().manual_seed(0)
    for n, d in ((200, 6), (5, 8)):  # more points than dimensions, and fewer
        x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3, d,
                                                                                  dtype=torch.float64)
        ours = pca_spectrum(x)
        ref = PCA().fit(x.numpy()).explained_variance_ratio_
        assert ours.shape == (min(n, d),)
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-8, atol=1e-14)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 30), d=st.integers(1, 8), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_pca_spectrum_is_a_descending_distribution(n, d, seed, dtype):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed)).to(dtype) * 10
    r = pca_spectrum(x)
    assert r.dtype == dtype and bool((r >= 0).all()) and bool((r[:-1] >= r[1:]).all())
    assert abs(r.sum().item() - 1) < 1e-5
    dim = pca_dimension(x, 1.0).item()
    assert 1 <= dim <= min(n - 1, d)  # centring removes one direction when N <= D


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pca_dimension_counts_the_linear_span(dtype):
    for d in (1, 2, 3, 5):
        flat = sample_subspace(500, d, 12, seed=d, dtype=dtype)
        assert pca_dimension(flat, 1.0).item() == d  # exact for a linear (affine) subspace
        assert pca_dimension(flat, 0.95).item() == d  # each axis carries 1/d of the variance
        assert pca_dimension(sample_torus(500, d, 2 * d + 3, seed=d, dtype=dtype), 0.95).item() \
            == 2 * d  # the curved d-torus spans 2d directions of equal variance
    r = pca_spectrum(sample_subspace(500, 2, 5, seed=0, dtype=dtype))
    assert pca_dimension(sample_subspace(500, 2, 5, seed=0, dtype=dtype),
                         r[0].item() / 2).item() == 1
    batched = torch.stack([sample_subspace(100, d, 6, seed=0) for d in (1, 2, 3)])
    assert pca_dimension(batched, 1.0).tolist() == [1, 2, 3]


def test_synthetic_manifolds_geometry_and_determinism():
    for d in (1, 2, 4):
        s = sample_sphere(300, d, 9, seed=3)
        assert s.shape == (300, 9)
        torch.testing.assert_close(s.norm(dim=1), torch.ones(300, dtype=torch.float64))
        sv = torch.linalg.svdvals(s)  # lies in a (d+1)-dimensional linear subspace
        assert bool((sv[:d + 1] > 1e-3).all()) and bool((sv[d + 1:] < 1e-10 * sv[0]).all())
        t = sample_torus(300, d, 2 * d + 2, seed=3)
        torch.testing.assert_close(t.norm(dim=1), torch.ones(300, dtype=torch.float64))
        assert pca_dimension(t, 1.0).item() == 2 * d
    torch.testing.assert_close(sample_sphere(10, 2, 5, seed=7), sample_sphere(10, 2, 5, seed=7))
    assert not torch.equal(sample_sphere(10, 2, 5, seed=7), sample_sphere(10, 2, 5, seed=8))
    assert sample_sphere(10, 2).shape == (10, 3) and sample_torus(10, 3).shape == (10, 6)
    assert sample_sphere(10, 2, dtype=torch.float32).dtype == torch.float32


def test_swiss_roll_and_its_unrolled_coordinates():
    x, coords = sample_swiss_roll_3d(400, seed=5)
    ref, t_ref = make_swiss_roll(400, noise=0.0, random_state=5)
    np.testing.assert_allclose(x.numpy(), ref)
    t, h = coords[:, 0], coords[:, 1]
    np.testing.assert_allclose(t.numpy(), t_ref)
    torch.testing.assert_close(x, torch.stack([t * t.cos(), h, t * t.sin()], dim=1))
    noisy, coords_noisy = sample_swiss_roll_3d(400, seed=5, noise=0.5)
    torch.testing.assert_close(coords_noisy, coords)  # the chart does not see the noise
    residual = (noisy - x).std().item()  # 1,200 N(0, 0.25) draws: std within ±0.05 of 0.5
    assert abs(residual - 0.5) < 0.05


@pytest.mark.parametrize(
    "fn, args, kwargs, match",
    [
        (intrinsic_dimension_mle, (torch.zeros(10),), {}, r"\(\.\.\., N, D\)"),
        (intrinsic_dimension_mle, (torch.zeros(10, 3, dtype=torch.long),), {}, "floating"),
        (intrinsic_dimension_mle, ([[0.0, 1.0]] * 5,), {}, "tensor"),
        (intrinsic_dimension_mle, (torch.rand(2, 3),), {}, "N >= 3"),
        (intrinsic_dimension_mle, (torch.rand(20, 3),), {"k": 1}, "2 <= k1"),
        (intrinsic_dimension_mle, (torch.rand(20, 3),), {"k": 20}, "N - 1"),
        (intrinsic_dimension_mle, (torch.rand(20, 3),), {"k": 2.5}, "integer"),
        (intrinsic_dimension_mle, (torch.rand(20, 3),), {"k": True}, "integer"),
        (intrinsic_dimension_mle, (torch.rand(20, 3),), {"k": (8, 5)}, "k1 <= k2"),
        (intrinsic_dimension_mle, (torch.rand(20, 3),), {"k": (5, 6, 7)}, "range"),
        (intrinsic_dimension_mle, (torch.rand(20, 3),), {"average": "mean"}, "average"),
        (intrinsic_dimension_mle, (torch.rand(20, 3),), {"chunk": 0}, "chunk"),
        (local_dimension_mle, (torch.rand(20, 3),), {"k": 1}, "2 <= k1"),
        (local_dimension_mle, (torch.rand(20, 3),), {"k": (3, 5)}, "one integer"),
        (knn_distances, (torch.rand(20, 3), 0), {}, r"\[1, N - 1\]"),
        (knn_distances, (torch.rand(20, 3), 20), {}, r"\[1, N - 1\]"),
        (pca_spectrum, (torch.rand(1, 3),), {}, "N >= 2"),
        (pca_spectrum, (torch.ones(5, 3),), {}, "zero variance"),
        (pca_dimension, (torch.rand(10, 3),), {"threshold": 0.0}, r"\(0, 1\]"),
        (pca_dimension, (torch.rand(10, 3),), {"threshold": 1.5}, r"\(0, 1\]"),
        (pca_dimension, (torch.rand(10, 3),), {"threshold": True}, r"\(0, 1\]"),
        (sample_sphere, (0, 2), {}, "n must"),
        (sample_sphere, (10, 0), {}, "d must"),
        (sample_sphere, (10, 2, 2), {}, "ambient_dim must be an integer >= 3"),
        (sample_sphere, (10, 2), {"seed": -1}, "seed"),
        (sample_torus, (10, 2, 3), {}, "ambient_dim must be an integer >= 4"),
        (sample_subspace, (10, 3, 2), {}, "ambient_dim must be an integer >= 3"),
        (sample_subspace, (10, 3, None), {}, "needs ambient_dim"),
        (sample_swiss_roll_3d, (10,), {"noise": -0.1}, "noise"),
        (sample_swiss_roll_3d, (10,), {"seed": 2**32}, "seed"),
    ],
)
def test_bad_input(fn, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(*args, **kwargs)

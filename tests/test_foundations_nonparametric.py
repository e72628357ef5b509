"""Tests for foundations.nonparametric: KDE against scikit-learn, histogram by direct counting."""

import math

import numpy as np
import pytest
import torch
from sklearn.neighbors import KernelDensity

from foundations import histogram_log_prob, kde_log_prob, scott_bandwidth


def test_kde_matches_sklearn():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(300, 3, generator=g, dtype=torch.float64)
    x = 2 * torch.randn(50, 3, generator=g, dtype=torch.float64)
    ref = KernelDensity(bandwidth=0.4, kernel="gaussian").fit(data.numpy()).score_samples(x.numpy())
    ours = kde_log_prob(x, data, 0.4, chunk=7).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-8)  # sklearn sums in a tree: not bit-equal


def test_kde_diagonal_bandwidth_is_a_rescaled_isotropic_one():
    g = torch.Generator().manual_seed(1)
    data = torch.randn(100, 2, generator=g, dtype=torch.float64)
    x = torch.randn(20, 2, generator=g, dtype=torch.float64)
    h = torch.tensor([0.3, 1.2], dtype=torch.float64)
    # p̂_h(x) on the original axes = p̂_1(x / h) on rescaled axes divided by Π h_j
    direct = kde_log_prob(x, data, h)
    rescaled = kde_log_prob(x / h, data / h, 1.0) - h.log().sum()
    torch.testing.assert_close(direct, rescaled)


def test_kde_stays_finite_far_from_data():
    data = torch.zeros(10, 2, dtype=torch.float64)
    lp = kde_log_prob(torch.tensor([[100.0, 0.0]], dtype=torch.float64), data, 0.1)
    assert torch.isfinite(lp).all() and lp.item() < -1e5


def test_scott_bandwidth():
    data = torch.randn(1000, 2, dtype=torch.float64) * torch.tensor([1.0, 3.0], dtype=torch.float64)
    h = scott_bandwidth(data)
    torch.testing.assert_close(h, data.std(0) * 1000 ** (-1 / 6))


def test_histogram_counts_and_integrates_to_one():
    data = torch.tensor([[0.1, 0.1], [0.2, 0.3], [0.9, 0.9], [5.0, 5.0]], dtype=torch.float64)
    lp = histogram_log_prob(torch.tensor([[0.15, 0.2], [0.8, 0.8], [0.6, 0.1], [-1.0, 0.0]],
                                         dtype=torch.float64), data, bins=2, low=0.0, high=1.0)
    w2 = 0.25  # cell area
    assert lp[0].item() == pytest.approx(math.log(2 / (4 * w2)))
    assert lp[1].item() == pytest.approx(math.log(1 / (4 * w2)))
    assert lp[2].item() == -math.inf and lp[3].item() == -math.inf
    # integral over the range = fraction of data inside it (3 of 4)
    t = (torch.arange(2, dtype=torch.float64) + 0.5) / 2
    centres = torch.cartesian_prod(t, t)
    integral = histogram_log_prob(centres, data, 2, 0.0, 1.0).exp().sum() * w2
    assert integral.item() == pytest.approx(0.75)


def test_histogram_in_many_dimensions_uses_occupied_cells_only():
    data = torch.rand(50, 12, dtype=torch.float64)  # 10^12 cells, 50 occupied
    lp = histogram_log_prob(data[:5], data, bins=10, low=0.0, high=1.0)
    assert torch.all(torch.isfinite(lp))


@pytest.mark.parametrize(
    "fn, args, match",
    [
        (kde_log_prob, (torch.zeros(2, 3), torch.zeros(4, 2), 1.0), r"\(M, 2\)"),
        (kde_log_prob, (torch.zeros(2, 2), torch.zeros(0, 2), 1.0), "N >= 1"),
        (kde_log_prob, (torch.zeros(2, 2), torch.zeros(4, 2), 0.0), "bandwidth"),
        (kde_log_prob, (torch.zeros(2, 2), torch.zeros(4, 2), torch.ones(3)), "bandwidth"),
        (histogram_log_prob, (torch.zeros(2, 2), torch.zeros(4, 2), 0, 0.0, 1.0), "bins"),
        (histogram_log_prob, (torch.zeros(2, 2), torch.zeros(4, 2), 3, 1.0, 1.0), "low < high"),
        (histogram_log_prob, (torch.zeros(2, 40), torch.zeros(4, 40), 10, 0.0, 1.0), "64-bit"),
        (scott_bandwidth, (torch.zeros(1, 2),), "N >= 2"),
    ],
)
def test_bad_input(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)

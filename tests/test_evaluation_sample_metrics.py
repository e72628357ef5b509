"""Tests for evaluation.sample_metrics: KID (the U-statistic, its unbiasedness and its jackknife
standard error) and k-NN precision and recall."""

import itertools
import math

import pytest
import torch

from evaluation import kid, knn_radii, polynomial_kernel, precision_recall

F64 = dict(dtype=torch.float64)


def kid_by_loops(x, y):
    """The unbiased MMD² with k(a, b) = (aᵀb / D + 1)³, term by term."""
    k = lambda a, b: (float(a @ b) / len(a) + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_is_the_u_statistic_and_the_kernel_is_cubic():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 3, generator=g, **F64), torch.randn(5, 3, generator=g, **F64) + 0.5
    assert polynomial_kernel(x, y)[2, 3].item() == pytest.approx(
        (float(x[2] @ y[3]) / 3 + 1) ** 3, rel=1e-14)
    assert kid(x, y).value == pytest.approx(kid_by_loops(x, y), rel=1e-12)
    # float32 features are computed in float64
    assert kid(x.float(), y.float()).value == pytest.approx(kid_by_loops(x.float().double(),
                                                                         y.float().double()),
                                                            rel=1e-10)


def test_jackknife_equals_leaving_each_point_out_by_hand():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 2, generator=g, **F64), torch.randn(5, 2, generator=g, **F64)
    th_x = torch.tensor([kid(torch.cat([x[:i], x[i + 1:]]), y).value for i in range(6)], **F64)
    th_y = torch.tensor([kid(x, torch.cat([y[:j], y[j + 1:]])).value for j in range(5)], **F64)
    var = 5 / 6 * (th_x - th_x.mean()).pow(2).sum() + 4 / 5 * (th_y - th_y.mean()).pow(2).sum()
    assert kid(x, y).se == pytest.approx(math.sqrt(float(var)), rel=1e-10)


@pytest.mark.parametrize("shift", [0.0, 0.5])
def test_kid_is_unbiased_and_its_standard_error_matches_the_spread(shift):
    # 200 independent pairs of sets of 60: the mean KID matches the population MMD² (estimated
    # by KID on sets of 3,000, itself unbiased) within 4 standard errors of the mean. The
    # jackknife se matches the spread of KID over draws within 25% when the distributions
    # differ; when they are equal the U-statistic is degenerate (its fluctuations are O(1/n),
    # not O(1/√n)) and the jackknife is conservative: above the spread, by less than 2×
    g = torch.Generator().manual_seed(2)
    D, n, reps = 4, 60, 200
    draws = [kid(torch.randn(n, D, generator=g, **F64),
                 torch.randn(n, D, generator=g, **F64) + shift) for _ in range(reps)]
    values = torch.tensor([d.value for d in draws])
    ses = torch.tensor([d.se for d in draws])
    population = kid(torch.randn(3_000, D, generator=g, **F64),
                     torch.randn(3_000, D, generator=g, **F64) + shift).value
    se_mean = float(values.std()) / math.sqrt(reps)
    assert abs(float(values.mean()) - population) < 4 * se_mean + 1e-3 * abs(population)
    if shift == 0.0:
        assert float(values.std()) < float(ses.mean()) < 2 * float(values.std())
        assert (values < 0).any(), "an unbiased estimate of 0 must sometimes be negative"
    else:
        assert float(ses.mean()) == pytest.approx(float(values.std()), rel=0.25)


def test_kid_subsets_recipe_agrees_with_the_full_statistic():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(400, 4, generator=g, **F64), torch.randn(300, 4, generator=g, **F64) + 0.3
    full = kid(x, y)
    sub = kid(x, y, subset_size=100, n_subsets=200, generator=g)
    assert abs(sub.value - full.value) < 4 * (sub.se + full.se)


@pytest.mark.parametrize("args, kwargs, match", [
    ((torch.zeros(2, 3), torch.zeros(5, 3)), {}, "N >= 3"),
    ((torch.zeros(5, 3), torch.zeros(5, 2)), {}, "feature dimension"),
    ((torch.zeros(5, 3), torch.zeros(5, 3, dtype=torch.int64)), {}, "float"),
    ((torch.zeros(5, 3), torch.full((5, 3), float("inf"))), {}, "finite"),
    ((torch.zeros(5, 3), torch.zeros(5, 3)), dict(subset_size=6), "at most"),
    ((torch.zeros(5, 3), torch.zeros(5, 3)), dict(subset_size=2), "subset_size"),
    ((torch.zeros(5, 3), torch.zeros(5, 3)), dict(subset_size=4, n_subsets=1), "n_subsets"),
])
def test_kid_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        kid(*args, **kwargs)


def test_knn_radii_against_sorting():
    g = torch.Generator().manual_seed(4)
    f = torch.randn(30, 3, generator=g, **F64)
    d = torch.cdist(f, f)
    for k in (1, 3, 29):
        expected = d.sort(dim=1).values[:, k]          # column 0 is the point itself
        assert torch.allclose(knn_radii(f, k, chunk=7), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="at most N"):
        knn_radii(f, 30)
    with pytest.raises(ValueError, match="k"):
        knn_radii(f, 0)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        knn_radii(f[0], 1)


def test_precision_and_recall_separate_fidelity_from_coverage():
    g = torch.Generator().manual_seed(5)
    centres = torch.tensor([[-10.0, 0.0], [10.0, 0.0]], **F64)
    real = torch.randn(1_000, 2, generator=g, **F64) + centres[torch.arange(1_000) % 2]
    # a set compared with itself: every point is in its own ball
    assert precision_recall(real, real) == (1.0, 1.0)
    # mode dropping: all samples from one of the two modes
    half = torch.randn(1_000, 2, generator=g, **F64) + centres[0]
    p, r = precision_recall(real, half, k=3)
    assert p > 0.95 and r == pytest.approx(0.5, abs=0.05)
    # off-manifold samples: far from both modes
    p, r = precision_recall(real, torch.randn(500, 2, generator=g, **F64) + 50)
    assert p == 0.0 and r == 0.0
    # a fresh sample of the same distribution: both high
    p, r = precision_recall(real, torch.randn(1_000, 2, generator=g, **F64)
                            + centres[torch.arange(1_000) % 2])
    assert p > 0.9 and r > 0.9


def test_precision_recall_bad_input():
    f = torch.randn(10, 2)
    with pytest.raises(ValueError, match="k"):
        precision_recall(f, f, k=0)
    with pytest.raises(ValueError, match="at most N"):
        precision_recall(f, f[:3], k=3)
    with pytest.raises(ValueError, match="feature dimension"):
        precision_recall(f, torch.randn(10, 3))
    with pytest.raises(ValueError, match="chunk"):
        precision_recall(f, f, chunk=0)

"""Tests for evaluation.editing: directions against closed forms, Stein's lemma (Monte Carlo) and
scikit-learn's logistic regression; edits against the exact signed-distance shift."""

import math

import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from evaluation import (
    attribute_direction,
    edit_latents,
    edited_predictions,
    match_rate,
    orthogonalize,
)

f64 = dict(dtype=torch.float64)


def _logistic_data(n, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.tensor([2.0, -1.0, 0.5, 0.0][:d], **f64)
    z = torch.randn(n, d, generator=g, **f64)
    y = torch.rand(n, generator=g, **f64) < torch.sigmoid(z @ w + 0.3)
    return z, y, w / w.norm()


def test_mean_difference_is_the_normalised_difference_of_class_means():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(50, 3, generator=g, **f64)
    y = torch.arange(50) % 3 == 0
    n = attribute_direction(z, y.long())
    m = z[y].mean(0) - z[~y].mean(0)
    torch.testing.assert_close(n, m / m.norm())
    torch.testing.assert_close(attribute_direction(z, y), n)      # bool labels: the same


def test_logistic_direction_matches_scikit_learn():
    # ours: mean softplus(−s(w·z + b)) + (λ/2)‖w‖²; sklearn: (1/2)‖w‖² + C Σ log-loss,
    # the same objective times 1/λ with C = 1/(λ N).
    z, y, _ = _logistic_data(2_000)
    lam = 1e-2
    n = attribute_direction(z, y, "logistic", weight_decay=lam)
    clf = LogisticRegression(C=1 / (lam * len(z)), tol=1e-10, max_iter=10_000).fit(z.numpy(),
                                                                                   y.numpy())
    w = torch.from_numpy(clf.coef_[0])
    torch.testing.assert_close(n, w / w.norm(), atol=1e-5, rtol=0)


def test_both_directions_recover_the_true_normal_for_gaussian_latents():
    # z ~ N(0, I), P(y = 1 | z) = σ(w·z + b): by Stein's lemma E[z | y=1] − E[z | y=0] ∝ w, and the
    # logistic MLE is consistent. Per-coordinate error of the mean difference ≈ √(1/n1 + 1/n0)
    # ≈ 0.03 before normalisation (its length is ≈ 1): 5 standard errors in angle.
    z, y, w = _logistic_data(20_000, seed=2)
    tol = 5 * math.sqrt(1 / int(y.sum()) + 1 / int((~y).sum())) * math.sqrt(4)
    for method in ("mean_difference", "logistic"):
        n = attribute_direction(z, y, method)
        assert n.norm().item() == pytest.approx(1.0, abs=1e-12)
        assert math.acos(min(1.0, float(n @ w))) < tol, method


def test_orthogonalize_removes_the_other_directions():
    g = torch.Generator().manual_seed(3)
    n, others = torch.randn(6, generator=g, **f64), torch.randn(2, 6, generator=g, **f64)
    m = orthogonalize(n, others)
    torch.testing.assert_close(others @ m, torch.zeros(2, **f64), atol=1e-12, rtol=0)
    assert float(m.norm()) == pytest.approx(1.0, abs=1e-12) and float(m @ n) > 0
    # the residual of n: m ∝ n − Q Qᵀ n, the same as least squares
    coef = torch.linalg.lstsq(others.T, n[:, None]).solution
    r = n - (others.T @ coef).squeeze(1)
    torch.testing.assert_close(m, r / r.norm())
    one = orthogonalize(n, others[0])                               # a single direction (d,)
    assert abs(float(one @ others[0])) < 1e-12
    with pytest.raises(ValueError, match="span"):
        orthogonalize(others[0] + 2 * others[1], others)


def test_edit_moves_the_signed_distance_by_alpha():
    g = torch.Generator().manual_seed(4)
    z, n = torch.randn(7, 5, generator=g, **f64), torch.randn(5, generator=g, **f64)
    n = n / n.norm()
    alphas = torch.tensor([-2.0, 0.0, 1.5], **f64)
    zs = edit_latents(z, n, alphas)
    assert zs.shape == (3, 7, 5)
    torch.testing.assert_close(zs @ n - z @ n, alphas[:, None].expand(3, 7))
    torch.testing.assert_close(zs[1], z)


class FirstCoordinate(nn.Module):
    """G(z) = z_1 as a 1x1 image; predict(x) = 1[x > 0]: the attribute is the sign of z_1."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, z):
        return (self.scale * z[:, :1]).view(-1, 1, 1, 1)


def test_flip_rate_is_the_fraction_crossing_the_hyperplane():
    # Along n = e_1, sample i is predicted 1 at α iff z_i1 + α > 0: an exact count.
    g = torch.Generator().manual_seed(5)
    z = torch.randn(200, 3, generator=g, **f64)
    n = torch.tensor([1.0, 0.0, 0.0], **f64)
    alphas = torch.linspace(-2, 2, 9, **f64)
    G = FirstCoordinate().double().train()

    def predict(x):
        return (x.flatten(1)[:, 0] > 0).long()

    pred = edited_predictions(G, predict, z, n, alphas)
    assert pred.shape == (9, 200) and pred.dtype == torch.int64 and G.training
    expected = (z[None, :, 0] + alphas[:, None] > 0).double().mean(1)
    torch.testing.assert_close(match_rate(pred, 1), expected)
    torch.testing.assert_close(match_rate(pred, pred[4]), (pred == pred[4]).double().mean(1))
    assert match_rate(pred, pred[4])[4] == 1.0
    # several attributes (B, K): the second (sign of −z_1) is the first's complement
    both = edited_predictions(G, lambda x: torch.stack([predict(x), 1 - predict(x)], 1), z, n,
                              alphas)
    assert both.shape == (9, 200, 2)
    torch.testing.assert_close(match_rate(both, 1)[:, 1], 1 - expected)


def test_editing_rejects_bad_input():
    z, y, _ = _logistic_data(30)
    for args, kwargs in [((z, y.double()), {}), ((z, y[:5]), {}), ((z, y.long() * 2), {}),
                         ((z, torch.ones(30, dtype=torch.bool)), {}), ((z[0], y), {}),
                         ((z, y, "svm"), {}), ((z, y, "logistic"), dict(weight_decay=0.0)),
                         ((z, y, "logistic"), dict(max_iter=0))]:
        with pytest.raises(ValueError):
            attribute_direction(*args, **kwargs)
    with pytest.raises(ValueError, match="same mean"):
        attribute_direction(torch.ones(4, 2, **f64), torch.tensor([0, 1, 0, 1]))
    n = torch.ones(4, **f64)
    for alphas in ([], [[1.0]], [float("nan")]):
        with pytest.raises(ValueError, match="alphas"):
            edit_latents(z, n, alphas)
    with pytest.raises(ValueError, match="n must"):
        edit_latents(z, torch.ones(3, **f64), [1.0])
    with pytest.raises(ValueError, match="others"):
        orthogonalize(n, torch.ones(2, 3, **f64))
    G = FirstCoordinate().double()
    with pytest.raises(ValueError, match="generator"):
        edited_predictions(lambda v: v, lambda x: x, z, n, [1.0])
    with pytest.raises(ValueError, match="predict must be callable"):
        edited_predictions(G, "classifier", z, n, [1.0])
    with pytest.raises(ValueError, match="integer labels"):
        edited_predictions(G, lambda x: x.flatten(1)[:, 0], z, n, [1.0])
    pred = torch.zeros(3, 30, dtype=torch.int64)
    for bad in (torch.zeros(3, 30), torch.zeros(30, dtype=torch.int64)):
        with pytest.raises(ValueError, match="predictions"):
            match_rate(bad, 1)
    with pytest.raises(ValueError, match="reference"):
        match_rate(pred, torch.zeros(29, dtype=torch.int64))
    with pytest.raises(ValueError, match="reference"):
        match_rate(pred, 1.0)

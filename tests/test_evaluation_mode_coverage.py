"""Tests for evaluation.mode_coverage on samples whose answer is known exactly or in law."""

import importlib
import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluation import ModeCoverage, mode_coverage
from utils.data import toy2d, toy2d_mixture


def test_exact_grid25_samples_cover_every_mode():
    n = 10_000
    mu, sigma = toy2d_mixture("grid25")
    result = mode_coverage(toy2d("grid25", n, seed=1), mu, sigma)
    assert isinstance(result, ModeCoverage)
    assert result.modes_covered == 25
    assert result.counts.dtype == torch.int64 and result.counts.shape == (25,)
    assert int(result.counts.sum()) == round(result.high_quality_fraction * n)
    # The 3σ balls (radius 0.15) are far apart (spacing 2), so each sample is high quality iff
    # ‖x − μ‖²/σ² < 9, with ‖x − μ‖²/σ² ~ χ²₂: p = P(χ²₂ < 9) = 1 − e^{−9/2}. The count is
    # Binomial(n, p); allow 5 standard errors √(p(1 − p)/n) ≈ 1.05e-3 each.
    p = 1 - math.exp(-4.5)
    assert result.high_quality_fraction == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / n))
    # Given n_hq high-quality samples, the mode counts are Multinomial(n_hq, 1/K) and
    # 2 n_hq KL(p̂‖u) ≈ χ²_{K−1} (the G-test): mean K − 1, sd √(2(K − 1)); allow mean + 5 sd.
    n_hq, K = int(result.counts.sum()), 25
    assert 0 <= result.kl_to_uniform < (K - 1 + 5 * math.sqrt(2 * (K - 1))) / (2 * n_hq)


def test_high_quality_fraction_is_the_chi2_cdf_in_three_dimensions():
    # D = 3, n_std = 2: P(χ²₃ < 4); 8 centres at distance 10 apart, σ = 0.5 (balls don't overlap).
    n, sigma, n_std = 8_000, 0.5, 2.0
    gen = torch.Generator().manual_seed(3)
    mu = 10.0 * torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)],
                             dtype=torch.float64)
    k = torch.randint(8, (n,), generator=gen)
    x = mu[k] + sigma * torch.randn(n, 3, generator=gen, dtype=torch.float64)
    result = mode_coverage(x, mu, sigma, n_std=n_std)
    p = scipy.stats.chi2.cdf(n_std**2, df=3)
    assert result.high_quality_fraction == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / n))
    # Exactly the high-quality samples of each component are counted for it.
    near = (x - mu[k]).norm(dim=1) < n_std * sigma
    torch.testing.assert_close(result.counts, torch.bincount(k[near], minlength=8))


def test_five_balanced_modes_give_kl_log5():
    mu, sigma = toy2d_mixture("grid25")
    chosen = torch.tensor([0, 6, 12, 18, 24])
    x = mu[chosen].repeat_interleave(40, dim=0)  # 40 samples exactly on each of 5 centres
    x = x + 0.5 * sigma * torch.tensor([1.0, -1.0])  # 0.71σ away: still high quality
    result = mode_coverage(x, mu, sigma)
    assert result.modes_covered == 5
    assert result.high_quality_fraction == 1.0
    assert result.kl_to_uniform == pytest.approx(math.log(5), abs=1e-12)  # log 25 − log 5
    expected = torch.zeros(25, dtype=torch.int64)
    expected[chosen] = 40
    assert torch.equal(result.counts, expected)


def test_min_count_and_threshold_known_counts():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, -0.2],  # 3 high quality at mode 0
                      [10.0, 0.29],                          # 1 at mode 1 (0.29 < 3 · 0.1)
                      [0.0, 10.31],                          # nearest is mode 2, but 3.1σ out
                      [5.0, 5.0]])                           # far from every mode
    result = mode_coverage(x, centres, 0.1)
    assert torch.equal(result.counts, torch.tensor([3, 1, 0]))
    assert result.modes_covered == 2
    assert result.high_quality_fraction == pytest.approx(4 / 6)
    p_hat = np.array([3, 1, 0]) / 4
    assert result.kl_to_uniform == pytest.approx(math.log(3) - scipy.stats.entropy(p_hat))
    assert mode_coverage(x, centres, 0.1, min_count=2).modes_covered == 1
    assert mode_coverage(x, centres, 0.1, n_std=4.0).counts.tolist() == [3, 1, 1]


def test_nearest_centre_wins_when_balls_overlap():
    centres = torch.tensor([[0.0], [1.0]])
    result = mode_coverage(torch.tensor([[0.6], [0.4], [0.45]]), centres, 1.0)
    assert result.counts.tolist() == [2, 1]


def test_points_far_away_are_never_high_quality():
    mu, sigma = toy2d_mixture("ring8")
    result = mode_coverage(torch.full((100, 2), 50.0), mu, sigma)
    assert result.modes_covered == 0 and result.high_quality_fraction == 0.0
    assert math.isnan(result.kl_to_uniform)  # no histogram to compare
    assert int(result.counts.sum()) == 0


def test_dtype_and_chunking_do_not_change_the_answer(monkeypatch):
    # the package attribute evaluation.mode_coverage is the function; the module is in sys.modules
    module = importlib.import_module("evaluation.mode_coverage")

    mu, sigma = toy2d_mixture("ring8")
    x = toy2d("ring8", 1_000, seed=2) * 1.02  # stretched: some samples leave their 3σ ball
    reference = mode_coverage(x.double(), mu, sigma)
    assert 0.2 < reference.high_quality_fraction < 0.9  # the stretch made this case non-trivial
    monkeypatch.setattr(module, "_CHUNK", 7)
    chunked = mode_coverage(x, mu, sigma)
    assert torch.equal(chunked.counts, reference.counts)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=10).filter(lambda c: sum(c) > 0))
def test_kl_is_log_k_minus_entropy(counts):
    # Place c_k samples exactly on centre k: the histogram is counts / sum(counts).
    K = len(counts)
    centres = torch.arange(K, dtype=torch.float64)[:, None] * 5.0
    x = centres.repeat_interleave(torch.tensor(counts), dim=0)
    result = mode_coverage(x, centres, 1.0)
    assert result.counts.tolist() == counts
    assert result.modes_covered == sum(c > 0 for c in counts)
    p_hat = np.array(counts) / sum(counts)
    expected = math.log(K) - scipy.stats.entropy(p_hat)
    assert result.kl_to_uniform == pytest.approx(expected, abs=1e-12)
    assert -1e-12 <= expected <= math.log(K) + 1e-12


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(samples=torch.zeros(5)), "shape \\(N, D\\)"),
        (dict(samples=torch.zeros(0, 2)), "non-empty"),
        (dict(samples=torch.zeros(5, 2, dtype=torch.int64)), "floating-point"),
        (dict(samples=np.zeros((5, 2))), "floating-point"),
        (dict(samples=torch.tensor([[0.0, math.nan]])), "finite"),
        (dict(centres=torch.zeros(3, 3)), "dimension D = 2"),
        (dict(centres=torch.zeros(0, 2)), "non-empty"),
        (dict(centres=torch.tensor([[math.inf, 0.0]])), "finite"),
        (dict(std=0.0), "std must be a positive"),
        (dict(std=-1.0), "std must be a positive"),
        (dict(n_std=math.nan), "n_std must be a positive"),
        (dict(min_count=0), "min_count must be an integer >= 1"),
        (dict(min_count=1.5), "min_count must be an integer"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = dict(samples=torch.zeros(5, 2), centres=torch.zeros(3, 2), std=1.0) | kwargs
    with pytest.raises(ValueError, match=match):
        mode_coverage(**args)

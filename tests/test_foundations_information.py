"""Tests for foundations.information against scipy.stats.entropy, with property tests."""

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from foundations import cross_entropy, empirical_distribution, entropy

probs = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8).filter(lambda v: sum(v) > 1e-3)


def normalise(v):
    t = torch.tensor(v, dtype=torch.float64)
    return t / t.sum()


@settings(max_examples=60, deadline=None)
@given(probs)
def test_entropy_matches_scipy_and_is_bounded(v):
    p = normalise(v)
    h = entropy(p).item()
    assert h == pytest.approx(scipy.stats.entropy(p.numpy()), abs=1e-12)
    assert -1e-12 <= h <= np.log(len(v)) + 1e-12


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8).flatmap(lambda k: st.tuples(
    st.lists(st.floats(0.0, 1.0), min_size=k, max_size=k).filter(lambda v: sum(v) > 1e-3),
    st.lists(st.floats(0.01, 1.0), min_size=k, max_size=k))))
def test_cross_entropy_is_entropy_plus_kl(pair):
    p, q = normalise(pair[0]), normalise(pair[1])
    kl = scipy.stats.entropy(p.numpy(), q.numpy())
    assert cross_entropy(p, q).item() == pytest.approx(entropy(p).item() + kl, abs=1e-10)
    assert cross_entropy(p, q).item() >= entropy(p).item() - 1e-12  # Gibbs' inequality


def test_batched_and_infinite_cross_entropy():
    p = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]], dtype=torch.float64)
    h = cross_entropy(p, q)
    assert h.shape == (2,) and torch.isinf(h[0]) and h[1].item() == 0.0
    torch.testing.assert_close(entropy(p), torch.tensor([np.log(2), 0.0], dtype=torch.float64))


def test_empirical_distribution():
    p = empirical_distribution(torch.tensor([0, 2, 2, 3]), 5)
    torch.testing.assert_close(p, torch.tensor([0.25, 0, 0.5, 0.25, 0], dtype=torch.float64))


@pytest.mark.parametrize(
    "fn, args, match",
    [
        (entropy, (torch.tensor([0.5, 0.6]),), "sum to one"),
        (entropy, (torch.tensor([1.5, -0.5]),), "non-negative"),
        (entropy, (torch.tensor([1, 0]),), "float tensor"),
        (entropy, ([0.5, 0.5],), "float tensor"),
        (cross_entropy, (torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0, 0.0])), "same number"),
        (empirical_distribution, (torch.tensor([0, 5]), 3), "lie in"),
        (empirical_distribution, (torch.tensor([0.0, 1.0]), 3), "integer"),
        (empirical_distribution, (torch.tensor([0, 1]), 0), "k must be"),
    ],
)
def test_bad_input(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)

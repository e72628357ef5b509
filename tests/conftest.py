"""Shared test helpers. pytest puts this folder on sys.path, so tests write
``from conftest import random_mixture``."""

import pytest
import torch

from foundations import GaussianMixture


def random_mixture(k=3, d=2, seed=0, dtype=torch.float64, *, spread=3.0, jitter=0.5,
                   weight_floor=0.1, cov_scale=1.0):
    """A random K-component Gaussian mixture in D dimensions, deterministic given ``seed``.

    Weights ∝ U(0, 1) + ``weight_floor``; means ``spread`` · N(0, I); covariances
    ``cov_scale`` · A Aᵀ + ``jitter`` · I with A standard normal (positive definite).
    """
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(k, generator=g, dtype=dtype) + weight_floor
    a = torch.randn(k, d, d, generator=g, dtype=dtype)
    cov = cov_scale * (a @ a.transpose(-1, -2)) + jitter * torch.eye(d, dtype=dtype)
    return GaussianMixture(w / w.sum(), spread * torch.randn(k, d, generator=g, dtype=dtype), cov)


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (tiny networks are faster so; the machine may be shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

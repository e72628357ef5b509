"""Divergences and optimal transport: f-divergences (KL, JS, TV), variational divergence
minimisation, exact and entropic optimal transport, Wasserstein geometry, and why WGAN.

Each module lists its public names in ``__all__``; this package re-exports all of them, so a
notebook writes ``from divergences import js, sinkhorn``.
"""

from divergences import f_divergences, optimal_transport, wasserstein
from divergences.f_divergences import *  # noqa: F403
from divergences.optimal_transport import *  # noqa: F403
from divergences.wasserstein import *  # noqa: F403

__all__ = [*f_divergences.__all__, *optimal_transport.__all__, *wasserstein.__all__]

"""Foundations: densities, latent variable models, Jensen and variational bounds, Monte Carlo,
the manifold hypothesis, score functions and Tweedie's formula.

Each module lists its public names in ``__all__``; this package re-exports all of them, so a
notebook writes ``from foundations import GaussianMixture, em_fit``.
"""

from foundations import densities, information, nonparametric
from foundations.densities import *  # noqa: F403
from foundations.information import *  # noqa: F403
from foundations.nonparametric import *  # noqa: F403

__all__ = [*densities.__all__, *information.__all__, *nonparametric.__all__]

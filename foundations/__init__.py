"""Foundations: densities, latent variable models, Jensen and variational bounds, Monte Carlo,
the manifold hypothesis, score functions and Tweedie's formula.

Each module lists its public names in ``__all__``; this package re-exports all of them, so a
notebook writes ``from foundations import GaussianMixture, em_fit``.
"""

from foundations import (
    bounds,
    densities,
    information,
    latent,
    manifold,
    monte_carlo,
    nonparametric,
    scores,
    two_sample,
)
from foundations.bounds import *  # noqa: F403
from foundations.densities import *  # noqa: F403
from foundations.information import *  # noqa: F403
from foundations.latent import *  # noqa: F403
from foundations.manifold import *  # noqa: F403
from foundations.monte_carlo import *  # noqa: F403
from foundations.nonparametric import *  # noqa: F403
from foundations.scores import *  # noqa: F403
from foundations.two_sample import *  # noqa: F403

__all__ = [
    *densities.__all__, *information.__all__, *nonparametric.__all__, *latent.__all__,
    *bounds.__all__, *monte_carlo.__all__, *manifold.__all__, *scores.__all__,
    *two_sample.__all__,
]

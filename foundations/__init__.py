"""Foundations: densities, latent variable models, Jensen and variational bounds, Monte Carlo,
the manifold hypothesis, score functions and Tweedie's formula.

Notebooks: ``01_probability_and_density_modeling``; the rest of the part is planned.
"""

from foundations.densities import GaussianMixture, gaussian_log_prob, gaussian_mle, mle_step
from foundations.information import cross_entropy, empirical_distribution, entropy
from foundations.nonparametric import histogram_log_prob, kde_log_prob, scott_bandwidth

__all__ = [
    "GaussianMixture",
    "cross_entropy",
    "empirical_distribution",
    "entropy",
    "gaussian_log_prob",
    "gaussian_mle",
    "histogram_log_prob",
    "kde_log_prob",
    "mle_step",
    "scott_bandwidth",
]

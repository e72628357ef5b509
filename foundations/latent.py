"""Latent variable models: EM for Gaussian mixtures, probabilistic PCA
(02_latent_variable_models)."""

__all__: list[str] = []

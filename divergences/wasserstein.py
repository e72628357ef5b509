"""Wasserstein distances from samples (1-D, sliced) and between Gaussians (Bures)."""

__all__: list[str] = []

"""Intrinsic dimension: PCA spectra and the Levina-Bickel estimator (05_manifold_hypothesis)."""

__all__: list[str] = []

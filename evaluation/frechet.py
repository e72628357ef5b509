"""The Fréchet distance between Gaussians fitted to features."""

__all__: list[str] = []

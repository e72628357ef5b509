"""A small CNN trained deterministically on the digits, cached on disk: features for a
Fréchet distance and predictions for class accuracy."""

__all__: list[str] = []

"""The adversarial losses: minimax, non-saturating, Wasserstein, hinge; gradient penalty."""

__all__: list[str] = []

"""The adversarial training step for utils.training.fit: n_critic critic updates, then one
generator update."""

__all__: list[str] = []

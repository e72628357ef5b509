"""Mode coverage on 2-D mixtures: modes covered, high-quality fraction, KL of the mode histogram."""

__all__: list[str] = []

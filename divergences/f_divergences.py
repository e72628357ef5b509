"""f-divergences of discrete distributions, their generators and convex conjugates, and the
Fenchel (f-GAN) lower bound."""

__all__: list[str] = []

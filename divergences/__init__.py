"""f-divergences (KL, JS, TV), variational divergence minimisation, optimal transport (exact and
entropic), Wasserstein distances, and why WGAN.

Planned: this part of the book is not written yet; see the README's reading-order table.
"""

__all__: list[str] = []

"""GANs: the minimax game and its dynamics, DCGAN, conditional GANs, mode collapse, WGAN / WGAN-GP,
GANs under the manifold hypothesis.

Planned: this part of the book is not written yet; see the README's reading-order table.
"""

__all__: list[str] = []

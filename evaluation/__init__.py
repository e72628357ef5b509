"""Evaluation: FID, GAN inversion and latent editing, unsupervised domain adaptation, teacher
forcing.

Planned: this part of the book is not written yet; see the README's reading-order table.
"""

__all__: list[str] = []

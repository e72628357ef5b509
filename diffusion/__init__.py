"""Diffusion models: forward and reverse processes, DDPM, DDIM, the score-matching view, latent
diffusion.

Planned: this part of the book is not written yet; see the README's reading-order table.
"""

__all__: list[str] = []

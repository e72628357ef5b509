"""Variational autoencoders: the ELBO, reparameterisation, posterior collapse, VQ-VAE, discrete vs
continuous latents.

Planned: this part of the book is not written yet; see the README's reading-order table.
"""

__all__: list[str] = []

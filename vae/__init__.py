"""Variational autoencoders: the ELBO, reparameterisation, posterior collapse, VQ-VAE, discrete vs
continuous latents.

Each module lists its public names in ``__all__``; this package re-exports all of them, so a
notebook writes ``from vae import VAE, gaussian_kl``. (The function ``elbo`` shadows its module's
name on the package, hence the alias.)
"""

from vae import collapse, gradient_estimators, networks, pixelcnn, quantize, relaxed, training_step
from vae import elbo as _elbo
from vae.collapse import *  # noqa: F403
from vae.elbo import *  # noqa: F403
from vae.gradient_estimators import *  # noqa: F403
from vae.networks import *  # noqa: F403
from vae.pixelcnn import *  # noqa: F403
from vae.quantize import *  # noqa: F403
from vae.relaxed import *  # noqa: F403
from vae.training_step import *  # noqa: F403

__all__ = [*_elbo.__all__, *networks.__all__, *training_step.__all__, *collapse.__all__,
           *gradient_estimators.__all__, *quantize.__all__, *pixelcnn.__all__,
           *relaxed.__all__]

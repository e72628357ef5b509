"""Diffusion: the forward and reverse processes, DDPM, DDIM, the score-matching view, latent
diffusion with classifier-free guidance.

Each module lists its public names in ``__all__``; this package re-exports all of them, so a
notebook writes ``from diffusion import ddim_step``. Timesteps are t = 0 … T−1 in code (see
:mod:`diffusion.schedules`).
"""

from diffusion import (
    conditioning,
    latent,
    networks,
    parameterization,
    sampling,
    schedules,
    training_step,
)
from diffusion.conditioning import *  # noqa: F403
from diffusion.latent import *  # noqa: F403
from diffusion.networks import *  # noqa: F403
from diffusion.parameterization import *  # noqa: F403
from diffusion.sampling import *  # noqa: F403
from diffusion.schedules import *  # noqa: F403
from diffusion.training_step import *  # noqa: F403

__all__ = [*schedules.__all__, *parameterization.__all__, *sampling.__all__, *networks.__all__,
           *conditioning.__all__, *training_step.__all__, *latent.__all__]

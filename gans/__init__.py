"""GANs: the minimax game and its dynamics, DCGAN, conditional GANs, mode collapse, WGAN / WGAN-GP,
GANs under the manifold hypothesis.

Each module lists its public names in ``__all__``; this package re-exports all of them.
"""

from gans import dynamics, losses, networks, training_step
from gans.dynamics import *  # noqa: F403
from gans.losses import *  # noqa: F403
from gans.networks import *  # noqa: F403
from gans.training_step import *  # noqa: F403

__all__ = [*losses.__all__, *dynamics.__all__, *networks.__all__, *training_step.__all__]

"""GANs: the minimax game and its dynamics, DCGAN, conditional GANs, mode collapse, WGAN / WGAN-GP,
GANs under the manifold hypothesis.

Each module lists its public names in ``__all__``; this package re-exports all of them.
"""

from gans import dynamics, losses
from gans.dynamics import *  # noqa: F403
from gans.losses import *  # noqa: F403

__all__ = [*losses.__all__, *dynamics.__all__]

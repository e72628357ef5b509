"""Alignment: RLHF, reward models, Bradley-Terry, PPO, TRPO, DPO.

Planned: this part of the book is not written yet; see the README's reading-order table.
"""

from alignment import advantages
from alignment.advantages import *  # noqa: F403

__all__: list[str] = [*advantages.__all__]

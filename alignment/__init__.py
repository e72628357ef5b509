"""Alignment: RLHF, reward models, Bradley-Terry, PPO, TRPO, DPO.

Planned: this part of the book is not written yet; see the README's reading-order table.
"""

__all__: list[str] = []

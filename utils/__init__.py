"""What every part of the book shares (DESIGN.md §5-8).

- ``utils.config``: profiles (``profile``, ``active_profile``), ``device``, ``seed_everything``.
- ``utils.checks``: ``check`` and ``check_close``, the notebooks' numerical checks.
- ``utils.data``: the offline datasets (2-D toys, digits, shapes) and the gpu profile's
  torchvision datasets.
- ``utils.training``: ``fit``, the one training loop.
- ``utils.plotting``: image grids, 2-D scatter and density contours, training curves.
- ``utils.validation``: the argument checks every module shares (``check_int``, ``check_positive``,
  ``check_choice``, ...).
- ``utils.book``: ``make book``, which executes every notebook and renders the HTML book.

``utils`` imports no topic package.
"""

from utils.checks import check, check_close
from utils.config import Config, active_profile, device, profile, seed_everything

__all__ = [
    "Config",
    "active_profile",
    "check",
    "check_close",
    "device",
    "profile",
    "seed_everything",
]

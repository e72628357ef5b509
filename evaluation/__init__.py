"""Evaluation: mode coverage, Fréchet distances, GAN inversion and latent editing, unsupervised
domain adaptation, teacher forcing. Takes samples and feature extractors; imports no model family.

Each module lists its public names in ``__all__``; this package re-exports all of them. (The
functions ``mode_coverage`` and ``digits_classifier`` shadow their modules' names on the
package, hence the aliases.)
"""

from evaluation import digits_classifier as _digits_classifier
from evaluation import frechet
from evaluation import mode_coverage as _mode_coverage
from evaluation.digits_classifier import *  # noqa: F403
from evaluation.frechet import *  # noqa: F403
from evaluation.mode_coverage import *  # noqa: F403

__all__ = [*_mode_coverage.__all__, *frechet.__all__, *_digits_classifier.__all__]

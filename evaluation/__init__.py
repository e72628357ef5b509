"""Evaluation: mode coverage, Fréchet distances, GAN inversion and latent editing, unsupervised
domain adaptation, teacher forcing. Takes samples and feature extractors; imports no model family.

Each module lists its public names in ``__all__``; this package re-exports all of them. (The
functions ``mode_coverage``, ``digits_classifier`` and ``fid`` shadow their modules' names on the
package, hence the aliases.)
"""

from evaluation import digits_classifier as _digits_classifier
from evaluation import domain_adaptation, frechet, sample_metrics, teacher_forcing
from evaluation import editing as _editing
from evaluation import fid as _fid
from evaluation import inversion as _inversion
from evaluation import latent_encoder as _latent_encoder
from evaluation import mode_coverage as _mode_coverage
from evaluation.digits_classifier import *  # noqa: F403
from evaluation.domain_adaptation import *  # noqa: F403
from evaluation.editing import *  # noqa: F403
from evaluation.fid import *  # noqa: F403
from evaluation.frechet import *  # noqa: F403
from evaluation.inversion import *  # noqa: F403
from evaluation.latent_encoder import *  # noqa: F403
from evaluation.mode_coverage import *  # noqa: F403
from evaluation.sample_metrics import *  # noqa: F403
from evaluation.teacher_forcing import *  # noqa: F403

__all__ = [*_mode_coverage.__all__, *frechet.__all__, *_digits_classifier.__all__,
           *_inversion.__all__, *_latent_encoder.__all__, *_editing.__all__, *_fid.__all__,
           *sample_metrics.__all__, *domain_adaptation.__all__,
           *teacher_forcing.__all__]

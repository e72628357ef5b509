"""State-space models: continuous and discrete SSMs, recurrence vs convolution, HiPPO, S4/S4D,
parallel scans and Mamba's selective SSM.

Each module lists its public names in ``__all__``; this package re-exports all of them, so a
notebook writes ``from ssm import discretize, parallel_scan, MambaLM``.

- :mod:`ssm.discretization`: x'(t) = A x + B u to x_k = Ā x_{k−1} + B̄ u_k (ZOH, bilinear, Euler).
- :mod:`ssm.lti`: the recurrence ``ssm_scan`` and the convolution kernel ``ssm_kernel`` with a
  causal FFT convolution.
- :mod:`ssm.hippo`: HiPPO-LegS, online function approximation.
- :mod:`ssm.s4`: the S4D kernel, the S4 layer and block, sequence classifier and LM.
- :mod:`ssm.scan`: sequential and parallel associative scans of h_t = a_t h_{t−1} + b_t.
- :mod:`ssm.mamba`: the selective SSM, the Mamba block and ``MambaLM`` (the LM protocol of
  ``autoregressive``, so its decoding, ``lm_step`` and ``evaluate_lm`` apply).
- :mod:`ssm.training_step`: a classification step for :func:`utils.training.fit`.
"""

from ssm import discretization, hippo, lti, mamba, s4, scan, training_step
from ssm.discretization import *  # noqa: F403
from ssm.hippo import *  # noqa: F403
from ssm.lti import *  # noqa: F403
from ssm.mamba import *  # noqa: F403
from ssm.s4 import *  # noqa: F403
from ssm.scan import *  # noqa: F403
from ssm.training_step import *  # noqa: F403

__all__ = [*discretization.__all__, *lti.__all__, *hippo.__all__, *s4.__all__, *scan.__all__,
           *mamba.__all__, *training_step.__all__]

"""Alignment: RLHF, reward models, Bradley-Terry, PPO, TRPO, DPO.

Planned: this part of the book is not written yet; see the README's reading-order table.
"""

from alignment import (
    advantages,
    bradley_terry,
    dpo,
    kl_regularized,
    policy_losses,
    reward_model,
    sequence_logprobs,
    trpo,
)
from alignment.advantages import *  # noqa: F403
from alignment.bradley_terry import *  # noqa: F403
from alignment.dpo import *  # noqa: F403
from alignment.kl_regularized import *  # noqa: F403
from alignment.policy_losses import *  # noqa: F403
from alignment.reward_model import *  # noqa: F403
from alignment.sequence_logprobs import *  # noqa: F403
from alignment.trpo import *  # noqa: F403

__all__: list[str] = [*advantages.__all__, *policy_losses.__all__, *bradley_terry.__all__,
                      *sequence_logprobs.__all__, *trpo.__all__, *dpo.__all__,
                      *kl_regularized.__all__, *reward_model.__all__]

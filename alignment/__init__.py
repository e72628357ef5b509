"""Alignment: RLHF, reward models, Bradley-Terry, PPO, TRPO, DPO.

The modules are written and tested (Bradley-Terry and a reward model on the GPT; returns and
GAE; REINFORCE, PPO's losses and KL estimators; TRPO's Fisher-vector products, conjugate
gradient and line search; DPO, IPO and conservative DPO on summed completion log-probabilities;
the KL-regularised optimum and RLHF's per-token rewards). The notebooks, the control tasks
(a bandit, a gridworld, CartPole) and the end-to-end RLHF / DPO runs come next (issue 15).

Each module lists its public names in ``__all__``; this package re-exports all of them.
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

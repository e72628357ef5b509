"""Direct preference optimisation: DPO, conservative DPO (label smoothing) and IPO losses.

The KL-regularised optimum (:mod:`alignment.kl_regularized`) of a reward r is
π*(y | x) = π_ref(y | x) exp(r(x, y) / β) / Z(x); solved for the reward,

    r(x, y) = β log(π*(y | x) / π_ref(y | x)) + β log Z(x).

Put into the Bradley-Terry likelihood P(y_w ≻ y_l | x) = σ(r(x, y_w) − r(x, y_l)) of a pair
(w: the chosen completion, l: the rejected one), the intractable β log Z(x) cancels, and the
policy π_θ itself can be fitted to the preferences (Rafailov et al. 2023). With the log-ratio
difference ("margin")

    h = [log π_θ(y_w|x) − log π_ref(y_w|x)] − [log π_θ(y_l|x) − log π_ref(y_l|x)],

    DPO:   L(h) = −log σ(β h),                    ∇_θ L = −β σ(−β h) ∇_θ h,

so each pair pushes h up with a weight σ(−β h) that is large when the implicit reward model
r̂(y) = β (log π_θ(y) − log π_ref(y)) ranks the pair wrongly. At π_θ = π_ref, h = 0 and
L = log 2 exactly; the first gradient is −(β/2) ∇_θ h.

**Conservative DPO** (cDPO; Mitchell 2023, TRL's ``label_smoothing``): if a label is flipped
with probability ε, the likelihood of the observed label is a mixture, and the loss is

    L_ε(h) = (1 − ε) (−log σ(β h)) + ε (−log σ(−β h)),     0 ≤ ε ≤ ½,

minimised at β h = log((1 − ε) / ε) instead of at h → ∞ (ε = 0 is DPO; at ε = ½ the loss is
symmetric in w and l and minimised at h = 0).

**IPO** (Azar et al. 2023, "A general theoretical paradigm...", eq. 17, with their τ written β):
with a deterministic preference DPO drives h to ∞ whatever β is; IPO regresses h on a target,

    L(h) = (h − 1 / (2 β))²,

minimised at h = 1 / (2β). The paper writes h with the sequence log-probabilities (sums), as
here; TRL's IPO divides each sum by its completion length first (a per-token average), which
changes what a given β means (see :mod:`alignment.sequence_logprobs`).

Every loss takes the four log-probabilities that the pair has under the policy and the frozen
reference, each ``(B,)``: summed over the completion's tokens, as
``alignment.completion_log_probs(...).total`` returns (TRL's DPO default); averaged per token,
they give another objective. The reference log-probabilities are detached (π_ref is frozen).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from alignment.bradley_terry import pairwise_loss
from utils.validation import check_positive, shape_of

__all__ = ["PreferenceLoss", "dpo_loss", "implicit_reward", "ipo_loss", "log_ratio_margin"]


class PreferenceLoss(NamedTuple):
    """``loss``: the mean over the batch (a scalar with gradient); ``losses`` (B,): per pair;
    ``chosen_rewards``, ``rejected_rewards`` (B,): the implicit rewards
    β (log π_θ(y) − log π_ref(y)) of y_w and y_l; ``margin`` (B,): h; ``accuracy``: the fraction
    of pairs with h > 0 (the implicit reward ranks y_w above y_l). All but ``loss`` and
    ``losses`` are detached (metrics)."""

    loss: torch.Tensor
    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    margin: torch.Tensor
    accuracy: torch.Tensor


def _check_log_probs(**tensors: object) -> list[torch.Tensor]:
    shape = None
    for name, x in tensors.items():
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.ndim != 1 \
                or x.shape[0] < 1:
            raise ValueError(f"{name} must be a float tensor of log-probabilities (B,) with "
                             f"B >= 1, got {shape_of(x)}")
        if shape is None:
            shape, first = tuple(x.shape), name
        elif tuple(x.shape) != shape:
            raise ValueError(f"chosen and rejected log-probabilities must have the same shape "
                             f"(B,): {first} is {shape}, {name} is {tuple(x.shape)}")
    return list(tensors.values())


def implicit_reward(log_pi: torch.Tensor, log_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """r̂(y) = β (log π(y) − log π_ref(y)): the reward for which π is the KL-regularised optimum
    over π_ref, up to a constant β log Z(x) per prompt. log_pi, log_ref: the same shape (any)."""
    beta = check_positive("beta", beta)
    if not isinstance(log_pi, torch.Tensor) or not isinstance(log_ref, torch.Tensor) \
            or log_pi.shape != log_ref.shape:
        raise ValueError(f"log_pi and log_ref must be tensors of the same shape, got "
                         f"{shape_of(log_pi)} and {shape_of(log_ref)}")
    return beta * (log_pi - log_ref)


def log_ratio_margin(log_pi_w: torch.Tensor, log_pi_l: torch.Tensor, log_ref_w: torch.Tensor,
                     log_ref_l: torch.Tensor) -> torch.Tensor:
    """h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)), each input (B,) -> (B,).

    Written as (log π(y_w) − log π(y_l)) − (log π_ref(y_w) − log π_ref(y_l)), as TRL does; the
    reference terms are detached."""
    log_pi_w, log_pi_l, log_ref_w, log_ref_l = _check_log_probs(
        log_pi_w=log_pi_w, log_pi_l=log_pi_l, log_ref_w=log_ref_w, log_ref_l=log_ref_l)
    return (log_pi_w - log_pi_l) - (log_ref_w - log_ref_l).detach()


def _result(losses: torch.Tensor, h: torch.Tensor, log_pi_w: torch.Tensor,
            log_pi_l: torch.Tensor, log_ref_w: torch.Tensor, log_ref_l: torch.Tensor,
            beta: float) -> PreferenceLoss:
    with torch.no_grad():
        r_w = implicit_reward(log_pi_w, log_ref_w, beta)
        r_l = implicit_reward(log_pi_l, log_ref_l, beta)
        h = h.detach()
        accuracy = (h > 0).to(h.dtype).mean()
    return PreferenceLoss(losses.mean(), losses, r_w, r_l, h, accuracy)


def dpo_loss(log_pi_w: torch.Tensor, log_pi_l: torch.Tensor, log_ref_w: torch.Tensor,
             log_ref_l: torch.Tensor, beta: float = 0.1, *,
             label_smoothing: float = 0.0) -> PreferenceLoss:
    """The DPO loss −log σ(β h), or conservative DPO's (1 − ε)(−log σ(β h)) + ε(−log σ(−β h)).

    Args:
        log_pi_w, log_pi_l: ``(B,)`` log π_θ of the chosen (w) and rejected (l) completions
            (summed over tokens; with gradient).
        log_ref_w, log_ref_l: ``(B,)`` the same under the frozen reference π_ref.
        beta: β > 0, the strength of the KL regularisation the loss is derived from (0.1 is
            the paper's and TRL's default).
        label_smoothing: ε in [0, ½], the assumed probability that a label is flipped (0: DPO).

    Returns:
        :class:`PreferenceLoss`. The loss is :func:`alignment.pairwise_loss`, the
        Bradley-Terry loss of a reward model, applied to the implicit rewards r̂(y_w), r̂(y_l):
        the whole of DPO's derivation in one line.
    """
    beta = check_positive("beta", beta)
    h = log_ratio_margin(log_pi_w, log_pi_l, log_ref_w, log_ref_l)               # (B,)
    # the Bradley-Terry loss of the implicit rewards: Δ = r̂(y_w) − r̂(y_l) = β h
    r_w = implicit_reward(log_pi_w, log_ref_w.detach(), beta)
    r_l = implicit_reward(log_pi_l, log_ref_l.detach(), beta)
    losses = pairwise_loss(r_w, r_l, label_smoothing=label_smoothing, reduction="none")
    return _result(losses, h, log_pi_w, log_pi_l, log_ref_w, log_ref_l, beta)


def ipo_loss(log_pi_w: torch.Tensor, log_pi_l: torch.Tensor, log_ref_w: torch.Tensor,
             log_ref_l: torch.Tensor, beta: float = 0.1) -> PreferenceLoss:
    """The IPO loss (h − 1/(2β))² (Azar et al. 2023, eq. 17, τ = β), minimised at h = 1/(2β).

    Args as :func:`dpo_loss` (log-probabilities (B,) as given: sums here, as in the paper; TRL
    averages them per token first). The implicit rewards in the result are β times the
    log-ratios, as for DPO.
    """
    beta = check_positive("beta", beta)
    h = log_ratio_margin(log_pi_w, log_pi_l, log_ref_w, log_ref_l)
    losses = (h - 1 / (2 * beta)).pow(2)
    return _result(losses, h, log_pi_w, log_pi_l, log_ref_w, log_ref_l, beta)

"""The Bradley-Terry model of pairwise preferences: likelihood, maximum likelihood, the pairwise
loss of reward models, and calibration (01_alignment_and_bradley_terry).

Each item k has a score s_k (a reward divided by the labels' temperature); item w beats item l
with probability

    P(w ≻ l) = σ(s_w − s_l) = e^{s_w} / (e^{s_w} + e^{s_l}),                      (1)

so for n observed outcomes (w_i ≻ l_i) the log-likelihood is

    ℓ(s) = Σ_i log σ(s_{w_i} − s_{l_i}),                                             (2)
    ∇ℓ(s) = Σ_i σ(−d_i) (e_{w_i} − e_{l_i}),                  d_i = s_{w_i} − s_{l_i},
    ∇²ℓ(s) = −Σ_i σ(d_i) σ(−d_i) (e_{w_i} − e_{l_i})(e_{w_i} − e_{l_i})ᵀ.

−ℓ is convex. It depends on s only through differences, so ℓ(s + c·1) = ℓ(s): the scores are
**identified only up to a constant** (the Hessian is singular along 1). :func:`bt_mle` fixes the
gauge Σ_k s_k = 0 and runs Newton's method there. The MLE exists (is finite) iff the directed
graph "w beat l" is strongly connected (Zermelo 1929; Ford 1957): an item that never loses would
have s → +∞. A ridge ``l2`` > 0 (a Gaussian prior) makes it exist always.

A reward model r_θ trained on pairs (chosen y_c, rejected y_r) minimises the negative of (2) per
pair, the **pairwise loss**

    L = −log σ(r_c − r_r),          with soft labels p:  −p log σ(Δ) − (1 − p) log σ(−Δ),   (3)

Δ = r_c − r_r; at Δ = 0 it is log 2 for every p, and for a fixed p it is the binary cross-entropy
of the logit Δ, minimised at Δ = log(p / (1 − p)). Label smoothing ε means p = 1 − ε.

Shapes: scores (K,); winners, losers int64 (n,) in 0..K−1; r_chosen, r_rejected (n,) (or any
shape, the same for both); probabilities and outcomes of :func:`calibration` (n,).
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch
import torch.nn.functional as F

from utils.validation import check_int, shape_of

__all__ = ["Calibration", "bt_gradient", "bt_hessian", "bt_log_likelihood", "bt_mle",
           "calibration", "pairwise_loss", "preference_accuracy"]


def _check_outcomes(scores: object, winners: object, losers: object) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor) or not scores.dtype.is_floating_point \
            or scores.ndim != 1 or len(scores) < 2:
        raise ValueError(f"scores must be a float tensor (K,) with K >= 2, got {shape_of(scores)}")
    _check_pairs(winners, losers, len(scores))
    return scores


def _check_pairs(winners: object, losers: object, k: int) -> None:
    for name, idx in (("winners", winners), ("losers", losers)):
        if not isinstance(idx, torch.Tensor) or idx.dtype != torch.int64 or idx.ndim != 1:
            raise ValueError(f"{name} must be an int64 tensor (n,), got {shape_of(idx)}")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= k):
            raise ValueError(f"{name} must lie in 0..{k - 1} (K = {k}), got "
                             f"{int(idx.min())}..{int(idx.max())}")
    if winners.shape != losers.shape:
        raise ValueError(f"winners and losers must have the same shape, got "
                         f"{tuple(winners.shape)} and {tuple(losers.shape)}")


def bt_log_likelihood(scores: torch.Tensor, winners: torch.Tensor,
                      losers: torch.Tensor) -> torch.Tensor:
    """ℓ(s) = Σ_i log σ(s_{w_i} − s_{l_i}), eq. (2): a scalar (differentiable in ``scores``)."""
    s = _check_outcomes(scores, winners, losers)
    return F.logsigmoid(s[winners] - s[losers]).sum()


def bt_gradient(scores: torch.Tensor, winners: torch.Tensor,
                losers: torch.Tensor) -> torch.Tensor:
    """∇ℓ(s) = Σ_i σ(−d_i)(e_{w_i} − e_{l_i}) (K,), the analytic gradient of (2); sums to 0."""
    s = _check_outcomes(scores, winners, losers)
    q = torch.sigmoid(s[losers] - s[winners])                     # σ(−d_i)  (n,)
    return torch.zeros_like(s).index_add(0, winners, q).index_add(0, losers, -q)


def bt_hessian(scores: torch.Tensor, winners: torch.Tensor, losers: torch.Tensor) -> torch.Tensor:
    """∇²ℓ(s) = −Σ_i σ(d_i)σ(−d_i)(e_w − e_l)(e_w − e_l)ᵀ (K, K): negative semi-definite, with
    1 in its null space (the gauge)."""
    s = _check_outcomes(scores, winners, losers)
    k = len(s)
    d = s[winners] - s[losers]
    w = torch.sigmoid(d) * torch.sigmoid(-d)                        # (n,)
    e = F.one_hot(winners, k).to(s) - F.one_hot(losers, k).to(s)   # (n, K)
    return -(e.T * w) @ e


def _strongly_connected(winners: torch.Tensor, losers: torch.Tensor, k: int) -> bool:
    reach = torch.eye(k, dtype=torch.float64)
    reach[winners, losers] = 1.0
    for _ in range(max(1, math.ceil(math.log2(k)))):               # transitive closure
        reach = ((reach @ reach) > 0).double()
    return bool((reach > 0).all())


def bt_mle(winners: torch.Tensor, losers: torch.Tensor, n_items: int, *, l2: float = 0.0,
           max_iter: int = 100, tol: float = 1e-10) -> torch.Tensor:
    """The maximum-likelihood scores ŝ (K,) of (2), in the gauge Σ_k ŝ_k = 0, float64.

    Maximises ℓ(s) − (l2 / 2)‖s‖² by Newton's method: the step solves (−∇²ℓ + l2·I + 11ᵀ/K) δ =
    ∇ℓ − l2·s (the 11ᵀ/K term fills the gauge direction; both sides are ⟂ 1, so δ is too),
    halving it until the objective does not decrease, until ‖gradient‖_∞ < ``tol``.
    With ``l2`` = 0 the comparison graph must be strongly connected (else no finite MLE
    exists: a ValueError says so).
    """
    k = check_int("n_items", n_items, minimum=2)
    _check_pairs(winners, losers, k)
    if len(winners) < 1:
        raise ValueError("need at least one outcome (winners and losers are empty)")
    if isinstance(l2, bool) or not isinstance(l2, numbers.Real) or not 0 <= l2 < math.inf:
        raise ValueError(f"l2 must be a finite number >= 0, got {l2!r}")
    max_iter = check_int("max_iter", max_iter, minimum=1)
    winners, losers = winners.cpu(), losers.cpu()
    if l2 == 0 and not _strongly_connected(winners, losers, k):
        raise ValueError("no finite MLE: the graph 'winner beat loser' is not strongly "
                         "connected (some items never lose to, or never beat, the rest); "
                         "pass l2 > 0 or more pairs")
    s = torch.zeros(k, dtype=torch.float64)
    gauge = torch.full((k, k), 1.0 / k, dtype=torch.float64)

    def objective(s: torch.Tensor) -> float:
        return float(bt_log_likelihood(s, winners, losers)) - 0.5 * l2 * float(s @ s)

    for _ in range(max_iter):
        g = bt_gradient(s, winners, losers) - l2 * s
        if float(g.abs().max()) < tol:
            break
        h = -bt_hessian(s, winners, losers) + l2 * torch.eye(k, dtype=torch.float64) + gauge
        step = torch.linalg.solve(h, g)
        f0, t = objective(s), 1.0
        while objective(s + t * step) < f0 and t > 1e-10:
            t /= 2
        s = s + t * step
        s = s - s.mean()
    return s


def pairwise_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, *,
                  label_smoothing: float = 0.0, p: torch.Tensor | None = None,
                  reduction: str = "mean") -> torch.Tensor:
    """The Bradley-Terry loss (3) of a reward model: −p log σ(Δ) − (1 − p) log σ(−Δ), Δ = r_c − r_r.

    Args:
        r_chosen, r_rejected: rewards of the preferred and the other item, the same shape.
        label_smoothing: ε in [0, ½]; p = 1 − ε (ε = 0: the plain −log σ(Δ)).
        p: soft labels, P(chosen ≻ rejected), same shape, in [0, 1]; replaces 1 − ε.
        reduction: "mean", "sum" or "none" (the per-pair losses).
    """
    for name, r in (("r_chosen", r_chosen), ("r_rejected", r_rejected)):
        if not isinstance(r, torch.Tensor) or not r.dtype.is_floating_point:
            raise ValueError(f"{name} must be a float tensor, got {shape_of(r)}")
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(f"r_chosen and r_rejected must have the same shape, got "
                         f"{tuple(r_chosen.shape)} and {tuple(r_rejected.shape)}")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real) \
            or not 0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 1/2], got {label_smoothing!r}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    delta = r_chosen - r_rejected
    if p is None:
        p = torch.full_like(delta, 1.0 - float(label_smoothing))
    else:
        if label_smoothing:
            raise ValueError("give either soft labels p or label_smoothing, not both")
        if not isinstance(p, torch.Tensor) or p.shape != delta.shape \
                or not p.dtype.is_floating_point:
            raise ValueError(f"p must be a float tensor of shape {tuple(delta.shape)}, got "
                             f"{shape_of(p)}")
        if bool(((p < 0) | (p > 1) | torch.isnan(p)).any()):
            raise ValueError("p must lie in [0, 1]")
        p = p.to(delta)
    loss = -(p * F.logsigmoid(delta) + (1 - p) * F.logsigmoid(-delta))
    return loss if reduction == "none" else loss.sum() if reduction == "sum" else loss.mean()


def preference_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """The fraction of pairs the rewards rank as the labels do (r_c > r_r; a tie counts ½)."""
    if not isinstance(r_chosen, torch.Tensor) or not isinstance(r_rejected, torch.Tensor) \
            or r_chosen.shape != r_rejected.shape or r_chosen.numel() == 0:
        raise ValueError(f"r_chosen and r_rejected must be non-empty tensors of the same shape, "
                         f"got {shape_of(r_chosen)} and {shape_of(r_rejected)}")
    d = (r_chosen - r_rejected).detach()
    return float(((d > 0).double() + 0.5 * (d == 0).double()).mean())


class Calibration(NamedTuple):
    """Per bin b of predicted probability (``n_bins`` equal bins of [0, 1]): ``predicted`` the
    mean prediction, ``observed`` the empirical win rate (NaN where ``count`` is 0), ``count``
    (int64); ``ece`` = Σ_b (count_b / n) |observed_b − predicted_b| (expected calibration
    error)."""

    predicted: torch.Tensor
    observed: torch.Tensor
    count: torch.Tensor
    ece: float


def calibration(p_pred: torch.Tensor, outcome: torch.Tensor, *, n_bins: int = 10) -> Calibration:
    """Predicted vs empirical win rate in ``n_bins`` bins of p_pred (n,) in [0, 1]; outcome (n,)
    in {0, 1} (or a soft win rate in [0, 1]). Bin b holds b/B ≤ p < (b+1)/B (p = 1 in the last).

    For pairs stored winner first every outcome is 1: score both orders, p_pred =
    cat(σ(Δ̂), σ(−Δ̂)) against outcome = cat(1, 0).
    """
    n_bins = check_int("n_bins", n_bins, minimum=1)
    if not isinstance(p_pred, torch.Tensor) or not p_pred.dtype.is_floating_point \
            or p_pred.ndim != 1 or len(p_pred) < 1:
        raise ValueError(f"p_pred must be a float tensor (n,) with n >= 1, got {shape_of(p_pred)}")
    if not isinstance(outcome, torch.Tensor) or outcome.shape != p_pred.shape:
        raise ValueError(f"outcome must be a tensor of shape {tuple(p_pred.shape)}, got "
                         f"{shape_of(outcome)}")
    p = p_pred.detach().double()
    y = outcome.detach().to(p)
    if bool(((p < 0) | (p > 1) | torch.isnan(p)).any()) or bool(((y < 0) | (y > 1)).any()):
        raise ValueError("p_pred and outcome must lie in [0, 1]")
    b = (p * n_bins).long().clamp(max=n_bins - 1)                   # (n,)
    count = torch.bincount(b, minlength=n_bins)
    sum_p = torch.zeros(n_bins, dtype=p.dtype, device=p.device).index_add(0, b, p)
    sum_y = torch.zeros(n_bins, dtype=p.dtype, device=p.device).index_add(0, b, y)
    c = count.to(p)
    predicted, observed = sum_p / c, sum_y / c                        # NaN where empty
    gap = torch.where(count > 0, (observed - predicted).abs() * c, torch.zeros_like(c))
    return Calibration(predicted, observed, count, float(gap.sum()) / len(p))

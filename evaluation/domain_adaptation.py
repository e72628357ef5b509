"""Unsupervised domain adaptation: gradient reversal (DANN), CORAL, MMD and the proxy A-distance.

A classifier is trained on labelled source data x_s ~ p_S with labels y_s, and evaluated on a
target domain p_T whose training inputs x_t come *without* labels. Ben-David et al. (2010) bound
the target error of any hypothesis h of a class H by

    eps_T(h) <= eps_S(h) + 1/2 d_HΔH(p_S, p_T) + lambda*,

so a method should keep the source error small while making the two domains hard to tell apart
in the representation h = f(x) the classifier sees. The three ways here to do the second part
(each a penalty on features h_s = f(x_s): (n_s, d) and h_t = f(x_t): (n_t, d)):

- DANN (Ganin et al. 2016): a domain classifier D(h) learns to tell source from target, and the
  feature extractor f is trained to *fool* it through a gradient-reversal layer R_lam, identity
  forward and -lam times the gradient backward: one backward pass of
  L = CE(c(f(x_s)), y_s) + BCE(D(R_lam(f(x))), domain) minimises L over c and D and maximises the
  domain loss over f. lam ramps up as lam_p = 2 / (1 + exp(-gamma p)) - 1, p = training progress.
- Deep CORAL (Sun & Saenko 2016): match the feature covariances,
  L_CORAL = ‖C_s − C_t‖²_F / (4 d²).
- MMD (Gretton et al. 2012; Long et al. 2015): the unbiased squared maximum mean discrepancy with
  a (sum of) Gaussian kernel(s).

The proxy A-distance d_A = 2 (1 − 2 eps) (Ben-David et al. 2007) measures how separable two sets
of features are: eps is the held-out error of a linear domain classifier (logistic regression).

Models are taken as arguments (any feature extractor / classifier / domain classifier modules),
so this module imports no model family; the MMD's U-statistic is foundations' (a math part).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from foundations.two_sample import mmd2_from_kernels
from utils.training import check_finite
from utils.validation import check_choice, check_int, check_positive, shape_of

__all__ = ["ADAPTATION_METHODS", "DomainAdaptationNet", "GradientReversal", "adaptation_step",
           "coral_loss", "dann_lambda", "grad_reverse", "mmd2", "proxy_a_distance"]

ADAPTATION_METHODS = ("source", "dann", "coral", "mmd")


def _check_lam(lam: object) -> float:
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not math.isfinite(lam) \
            or lam < 0:
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    return float(lam)


class _GradReverse(torch.autograd.Function):
    """R_lam(x) = x forward; dL/dx = -lam dL/dR backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lam: float) -> torch.Tensor:  # noqa: D102
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return -ctx.lam * grad, None


def grad_reverse(x: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """The gradient-reversal layer R_lam: returns x (same shape, any), and in the backward pass
    multiplies the incoming gradient by -lam (lam >= 0)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {shape_of(x)}")
    return _GradReverse.apply(x, _check_lam(lam))


class GradientReversal(nn.Module):
    """:func:`grad_reverse` as a layer; ``lam`` may be changed during training (the schedule)."""

    def __init__(self, lam: float = 1.0) -> None:
        super().__init__()
        self.lam = _check_lam(lam)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return grad_reverse(x, self.lam)

    def extra_repr(self) -> str:
        return f"lam={self.lam}"


def dann_lambda(p: float, gamma: float = 10.0) -> float:
    """DANN's schedule lam_p = 2 / (1 + exp(-gamma p)) - 1 for progress p in [0, 1]: 0 at p = 0,
    rising to tanh(gamma / 2) at p = 1 (0.9866 for gamma = 10)."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"p (training progress) must be a number in [0, 1], got {p!r}")
    gamma = check_positive("gamma", gamma)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


def _features_pair(h_s: object, h_t: object) -> tuple[torch.Tensor, torch.Tensor]:
    for name, h in (("h_s", h_s), ("h_t", h_t)):
        if not isinstance(h, torch.Tensor) or not h.is_floating_point() or h.ndim != 2 \
                or h.shape[1] < 1:
            raise ValueError(f"{name} must be a floating-point tensor of shape (n, d), got "
                             f"{shape_of(h)}")
        if h.shape[0] < 2:
            raise ValueError(f"{name} needs at least 2 samples (rows), got {h.shape[0]}")
    if h_s.shape[1] != h_t.shape[1]:
        raise ValueError(f"h_s and h_t must have the same feature dimension d, got "
                         f"{h_s.shape[1]} and {h_t.shape[1]}")
    return h_s, h_t


def _covariance(h: torch.Tensor) -> torch.Tensor:
    """C = (h - mean)ᵀ (h - mean) / (n - 1): (d, d), the unbiased sample covariance."""
    c = h - h.mean(0, keepdim=True)
    return c.T @ c / (h.shape[0] - 1)


def coral_loss(h_s: torch.Tensor, h_t: torch.Tensor) -> torch.Tensor:
    """Deep CORAL's loss ‖C_s − C_t‖²_F / (4 d²), with C the unbiased covariance (n - 1).

    h_s: (n_s, d), h_t: (n_t, d), n_s, n_t >= 2. Returns a scalar (differentiable)."""
    h_s, h_t = _features_pair(h_s, h_t)
    d = h_s.shape[1]
    return (_covariance(h_s) - _covariance(h_t)).pow(2).sum() / (4 * d * d)


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖a_i − b_j‖²: (n, m), clamped at 0 (the expanded form can round below it)."""
    return (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2 * a @ b.T).clamp_min(0)


def mmd2(x: torch.Tensor, y: torch.Tensor,
         bandwidths: float | Sequence[float] | None = None) -> torch.Tensor:
    """The unbiased squared MMD with the kernel k(a, b) = Σ_σ exp(−‖a − b‖² / (2σ²)):

        MMD²_u = Σ_{i≠j} k(x_i, x_j) / (m(m−1)) + Σ_{i≠j} k(y_i, y_j) / (n(n−1))
                 − 2 Σ_{i,j} k(x_i, y_j) / (m n).

    x: (m, d), y: (n, d), m, n >= 2. ``bandwidths``: one σ > 0 or a sequence of them; None
    takes σ = 2^k · median pairwise distance of the pooled samples, k = −2..2 (the median is not
    differentiated through). Returns a scalar, unbiased (it can be slightly negative).
    """
    x, y = _features_pair(x, y)
    xx, yy, xy = _sq_dists(x, x), _sq_dists(y, y), _sq_dists(x, y)
    if bandwidths is None:
        z = torch.cat([x, y]).detach()
        pooled = _sq_dists(z, z)
        off = pooled[~torch.eye(len(z), dtype=torch.bool, device=z.device)]
        median = off.median().sqrt().clamp_min(1e-12)
        sigmas = [median * 2.0 ** k for k in range(-2, 3)]
    else:
        values = [bandwidths] if isinstance(bandwidths, numbers.Real) else list(bandwidths)
        if not values:
            raise ValueError("bandwidths must be a positive number, a non-empty sequence of "
                             "them, or None; got an empty sequence")
        sigmas = [check_positive("bandwidth", s) for s in values]

    def k(d2: torch.Tensor) -> torch.Tensor:
        return sum(torch.exp(-d2 / (2 * s * s)) for s in sigmas)

    return mmd2_from_kernels(k(xx), k(yy), k(xy))  # the U-statistic, as in foundations.mmd2


class DomainAdaptationNet(nn.Module):
    """A feature extractor f, a label classifier c and (for DANN) a domain classifier D.

    ``forward(x)`` = c(f(x)): class logits (B, K); ``features(x)`` = f(x): (B, d);
    ``domain_logits(h)`` = D(R_lam(h)): (B,) logit of "h is from the target", through the
    gradient-reversal layer ``self.grl`` (lam set by the training step's schedule). D must map
    (B, d) to (B, 1) or (B,).
    """

    def __init__(self, feature: nn.Module, classifier: nn.Module,
                 discriminator: nn.Module | None = None) -> None:
        super().__init__()
        for name, m in (("feature", feature), ("classifier", classifier)):
            if not isinstance(m, nn.Module):
                raise ValueError(f"{name} must be an nn.Module, got {type(m).__name__}")
        if discriminator is not None and not isinstance(discriminator, nn.Module):
            raise ValueError(f"discriminator must be an nn.Module or None, got "
                             f"{type(discriminator).__name__}")
        self.feature, self.classifier, self.discriminator = feature, classifier, discriminator
        self.grl = GradientReversal(0.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.feature(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.classifier(self.feature(x))

    def domain_logits(self, h: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.discriminator is None:
            raise ValueError("this DomainAdaptationNet has no discriminator (needed for DANN)")
        return self.discriminator(self.grl(h)).reshape(len(h))


def adaptation_step(model: DomainAdaptationNet, optimizer: torch.optim.Optimizer, method: str,
                    *, steps: int, weight: float = 1.0, gamma: float = 10.0,
                    bandwidths: float | Sequence[float] | None = None
                    ) -> Callable[[tuple[torch.Tensor, ...]], dict[str, float]]:
    """A ``step(batch)`` for :func:`utils.training.fit`; batch = (x_s, y_s, x_t).

    With h_s = f(x_s), h_t = f(x_t) and the source loss L_S = CE(c(h_s), y_s), it minimises

    - ``"source"``: L_S (x_t unused: the source-only baseline, or the oracle on target labels);
    - ``"dann"``: L_S + weight · BCE(D(R_lam(h)), d) over h = [h_s; h_t], d = 0 source, 1 target,
      with lam = lam_p = :func:`dann_lambda` (p, gamma), p = (calls so far) / steps;
    - ``"coral"``: L_S + weight · lam_p · :func:`coral_loss` (h_s, h_t);
    - ``"mmd"``: L_S + weight · lam_p · :func:`mmd2` (h_s, h_t, bandwidths).

    The same ramp lam_p multiplies every alignment term, so the methods differ only in the
    penalty. p counts this step's own calls (a resumed run restarts the ramp).
    Returns metrics: ``class_loss``, ``align_loss`` (the unweighted penalty), ``lam``.
    """
    if not isinstance(model, DomainAdaptationNet):
        raise ValueError(f"model must be a DomainAdaptationNet, got {type(model).__name__}")
    method = check_choice("method", method, ADAPTATION_METHODS)
    steps = check_int("steps", steps, minimum=1)
    weight = check_positive("weight", weight)
    check_positive("gamma", gamma)
    if method == "dann" and model.discriminator is None:
        raise ValueError("method 'dann' needs a model with a discriminator, got None")
    calls = 0

    def step(batch: tuple[torch.Tensor, ...]) -> dict[str, float]:
        nonlocal calls
        if not isinstance(batch, (tuple, list)) or len(batch) != 3:
            raise ValueError(f"batch must be (x_s, y_s, x_t), got {shape_of(batch)}")
        x_s, y_s, x_t = batch
        lam = dann_lambda(min(calls / steps, 1.0), gamma)
        calls += 1
        optimizer.zero_grad()
        if method == "source":
            h_s = model.features(x_s)
            align = h_s.new_zeros(())
        else:
            h = model.features(torch.cat([x_s, x_t]))
            h_s, h_t = h[:len(x_s)], h[len(x_s):]
            if method == "dann":
                model.grl.lam = lam
                d = torch.cat([h.new_zeros(len(x_s)), h.new_ones(len(x_t))])
                align = F.binary_cross_entropy_with_logits(model.domain_logits(h), d)
            elif method == "coral":
                align = coral_loss(h_s, h_t)
            else:
                align = mmd2(h_s, h_t, bandwidths)
        class_loss = F.cross_entropy(model.classifier(h_s), y_s)
        scale = weight if method == "dann" else weight * lam  # DANN's lam sits in the GRL
        loss = class_loss + scale * align
        check_finite(f"{method} loss", loss)
        loss.backward()
        optimizer.step()
        return {"class_loss": class_loss.item(), "align_loss": align.item(), "lam": lam}

    return step


def proxy_a_distance(h_s: torch.Tensor, h_t: torch.Tensor, *, l2: float = 1e-3,
                     seed: int = 0, n_splits: int = 1) -> float:
    """d_A = 2 (1 − 2 eps), eps the held-out error of a linear domain classifier.

    h_s: (n_s, d), h_t: (n_t, d), n_s, n_t >= 4. Each domain is split at random into halves
    (split i drawn with seed ``seed + i``; with ``n_splits`` > 1 the d_A of the splits are
    averaged, which lowers the variance the random split adds); an L2-regularised logistic
    regression (``l2`` · ‖w‖², full-batch L-BFGS in float64 on features standardised with the
    training half's mean and std) learns to tell source (0) from target (1) on the first halves,
    and eps is its *balanced* error on the second halves (the mean of the two domains' error
    rates, so unequal sizes do not favour a constant guess).
    d_A is 0 for indistinguishable features, up to 2 for separable ones; it can be slightly
    negative by chance when eps > 1/2.
    """
    for name, h in (("h_s", h_s), ("h_t", h_t)):
        if not isinstance(h, torch.Tensor) or not h.is_floating_point() or h.ndim != 2 \
                or h.shape[0] < 4 or h.shape[1] < 1:
            raise ValueError(f"{name} must be a floating-point tensor of shape (n, d) with n >= 4,"
                             f" got {shape_of(h)}")
    if h_s.shape[1] != h_t.shape[1]:
        raise ValueError(f"h_s and h_t must have the same feature dimension d, got "
                         f"{h_s.shape[1]} and {h_t.shape[1]}")
    if isinstance(l2, bool) or not isinstance(l2, numbers.Real) or not l2 >= 0 \
            or not math.isfinite(l2):
        raise ValueError(f"l2 must be a finite number >= 0, got {l2!r}")
    seed = check_int("seed", seed, minimum=0)
    n_splits = check_int("n_splits", n_splits, minimum=1)
    h_s, h_t = h_s.detach().cpu().double(), h_t.detach().cpu().double()
    return sum(_split_a_distance(h_s, h_t, l2, seed + i) for i in range(n_splits)) / n_splits


def _split_a_distance(h_s: torch.Tensor, h_t: torch.Tensor, l2: float, seed: int) -> float:
    """d_A of one random halving (seed) of each domain: see :func:`proxy_a_distance`."""
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for h in (h_s, h_t):
        perm = torch.randperm(len(h), generator=gen)
        half = len(h) // 2
        parts.append((h[perm[:half]], h[perm[half:]]))
    (s_tr, s_te), (t_tr, t_te) = parts
    x_tr = torch.cat([s_tr, t_tr])
    y_tr = torch.cat([torch.zeros(len(s_tr)), torch.ones(len(t_tr))]).double()
    mean, std = x_tr.mean(0), x_tr.std(0).clamp_min(1e-8)
    x_tr = (x_tr - mean) / std
    # weight the two domains equally in the training loss too
    sample_w = torch.where(y_tr == 0, 0.5 / len(s_tr), 0.5 / len(t_tr))
    w = torch.zeros(x_tr.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, tolerance_grad=1e-9, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        nll = F.binary_cross_entropy_with_logits(x_tr @ w + b, y_tr, weight=sample_w,
                                                 reduction="sum")
        loss = nll + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        err_s = ((((s_te - mean) / std) @ w + b) > 0).double().mean()
        err_t = ((((t_te - mean) / std) @ w + b) <= 0).double().mean()
    eps = float(0.5 * (err_s + err_t))
    return 2.0 * (1.0 - 2.0 * eps)

"""Latent editing along attribute directions (InterFaceGAN, Shen et al. 2020).

If a binary attribute y of G(z) (large vs small, red vs not) is *linearly separable* in latent
space, there is a hyperplane n·z + b = 0 with y = 1 on one side; moving a latent along the unit
normal n,

    z' = z + alpha n,                                                                        (3)

changes the signed distance n·z + b by exactly alpha and so, for alpha large enough, flips the
attribute, while directions orthogonal to n are left alone. Two estimates of n from latents z_i
(N, d) labelled y_i in {0, 1} by a classifier applied to G(z_i):

- ``mean_difference``: n ∝ mean(z | y = 1) − mean(z | y = 0);
- ``logistic``: n ∝ w of the L2-regularised logistic regression
  min_{w, b} (1/N) Σ_i softplus(−s_i (w·z_i + b)) + (lambda/2) ‖w‖²,  s_i = 2 y_i − 1,
  solved by L-BFGS in float64 (the InterFaceGAN recipe uses a linear SVM; both fit the normal of
  a separating hyperplane).

For z ~ N(0, I) and labels that depend on z only through a projection w·z, Stein's lemma gives
E[z | y = 1] − E[z | y = 0] ∝ w, so both estimate the same direction. Conditional editing
(``orthogonalize``) removes from n its components along other attributes' directions, so that
editing one attribute moves the others' signed distances by nothing.

Success of an edit is measured by a classifier: ``edited_predictions`` decodes (3) for several
alpha and predicts the attributes of every G(z'); ``match_rate`` is the fraction of samples whose
prediction equals a target (the edit's success) or their unedited prediction (preservation).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from utils.validation import check_choice, check_int, check_positive, shape_of

__all__ = ["DIRECTION_METHODS", "attribute_direction", "edit_latents", "edited_predictions",
           "match_rate", "orthogonalize"]

DIRECTION_METHODS = ("mean_difference", "logistic")


def _check_latents(name: str, z: object) -> torch.Tensor:
    if not isinstance(z, torch.Tensor) or not z.is_floating_point() or z.ndim != 2 \
            or z.shape[0] < 1 or z.shape[1] < 1:
        raise ValueError(f"{name} must be a non-empty float tensor of shape (N, d), got "
                         f"{shape_of(z)}")
    return z


def _check_direction(n: object, d: int) -> torch.Tensor:
    if not isinstance(n, torch.Tensor) or not n.is_floating_point() or n.shape != (d,):
        raise ValueError(f"n must be a float tensor of shape ({d},), got {shape_of(n)}")
    return n


def _check_alphas(alphas: object) -> torch.Tensor:
    a = torch.as_tensor(alphas, dtype=torch.float64) if not isinstance(alphas, torch.Tensor) \
        else alphas
    if a.ndim != 1 or a.numel() < 1 or not a.is_floating_point() \
            or not bool(torch.isfinite(a).all()):
        raise ValueError(f"alphas must be a non-empty 1-D sequence of finite numbers, got "
                         f"{shape_of(alphas) if isinstance(alphas, torch.Tensor) else alphas!r}")
    return a


def attribute_direction(z: torch.Tensor, labels: torch.Tensor, method: str = "mean_difference",
                        *, weight_decay: float = 1e-3, max_iter: int = 200) -> torch.Tensor:
    """The unit normal n (d,) of the hyperplane separating labels 1 from 0 (see the module).

    Args:
        z: (N, d) latents; labels: (N,) bool or integers in {0, 1}, both classes present.
        method: ``"mean_difference"`` or ``"logistic"``.
        weight_decay: lambda > 0 of the logistic regression (keeps w finite on separable data).
        max_iter: L-BFGS iterations (logistic only), >= 1.

    Returns:
        n (d,) with ‖n‖ = 1, in z's dtype and device, pointing from label 0 towards label 1.
    """
    z = _check_latents("z", z)
    method = check_choice("method", method, DIRECTION_METHODS)
    if not isinstance(labels, torch.Tensor) or labels.shape != (z.shape[0],) \
            or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be a bool or integer tensor of shape ({z.shape[0]},), got "
                         f"{shape_of(labels)}")
    if labels.dtype != torch.bool and bool(((labels != 0) & (labels != 1)).any()):
        raise ValueError(f"labels must be 0 or 1, got values {labels.unique().tolist()}")
    y = labels.to(torch.bool).to(z.device)
    n1 = int(y.sum())
    if n1 == 0 or n1 == len(y):
        raise ValueError(f"both labels must occur, got {n1} ones among {len(y)}")
    weight_decay = check_positive("weight_decay", weight_decay)
    max_iter = check_int("max_iter", max_iter, minimum=1)
    z64 = z.detach().to(torch.float64)
    if method == "mean_difference":
        n = z64[y].mean(0) - z64[~y].mean(0)
    else:
        s = 2 * y.to(torch.float64) - 1                                 # s_i in {-1, +1}
        w = torch.zeros(z.shape[1] + 1, dtype=torch.float64, device=z.device,
                        requires_grad=True)                              # (w, b)
        opt = torch.optim.LBFGS([w], lr=1, max_iter=max_iter, tolerance_grad=1e-12,
                                tolerance_change=1e-15, history_size=20,
                                line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            margin = s * (z64 @ w[:-1] + w[-1])
            objective = F.softplus(-margin).mean() + 0.5 * weight_decay * w[:-1].pow(2).sum()
            objective.backward()
            return objective

        opt.step(closure)
        n = w.detach()[:-1]
    norm = n.norm()
    if not norm > 0:
        raise ValueError("the two classes have the same mean latent: no direction separates them")
    return (n / norm).to(z.dtype)


def orthogonalize(n: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """n minus its projection onto span(others), renormalised: (d,), (K, d) or (d,) -> (d,).

    Editing along the result leaves every other direction's coordinate o·z unchanged (the
    conditional manipulation of InterFaceGAN).
    """
    if not isinstance(n, torch.Tensor) or not n.is_floating_point() or n.ndim != 1:
        raise ValueError(f"n must be a 1-D float tensor (d,), got {shape_of(n)}")
    others = _check_latents("others", others[None] if isinstance(others, torch.Tensor)
                            and others.ndim == 1 else others)
    if others.shape[1] != n.shape[0]:
        raise ValueError(f"others must have n's dimension d = {n.shape[0]}, got "
                         f"{tuple(others.shape)}")
    q, _ = torch.linalg.qr(others.to(torch.float64).T)                 # (d, K) orthonormal basis
    m = n.to(torch.float64) - q @ (q.T @ n.to(torch.float64))
    norm = m.norm()
    if not norm > 1e-9 * n.norm():
        raise ValueError("n lies in the span of the other directions: nothing is left")
    return (m / norm).to(n.dtype)


def edit_latents(z: torch.Tensor, n: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """(3) for every alpha: z (B, d), n (d,), alphas (A,) -> (A, B, d), z + alpha n."""
    z = _check_latents("z", z)
    n = _check_direction(n, z.shape[1]).to(z)
    a = _check_alphas(alphas).to(z)
    return z[None] + a[:, None, None] * n


@torch.no_grad()
def edited_predictions(generator: nn.Module, predict: Callable[[torch.Tensor], torch.Tensor],
                       z: torch.Tensor, n: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """predict(G(z + alpha n)) for every alpha: -> (A, B) or (A, B, K) integer labels.

    ``generator`` runs in eval mode (restored afterwards) without gradients; ``predict`` maps
    images (B, C, H, W) to labels (B,) or several attributes' labels (B, K).
    """
    if not isinstance(generator, nn.Module):
        raise ValueError(f"generator must be a torch.nn.Module, got {type(generator).__name__}")
    if not callable(predict):
        raise ValueError(f"predict must be callable (images -> labels), got "
                         f"{type(predict).__name__}")
    z_edit = edit_latents(z, n, alphas)                                 # (A, B, d)
    was_training = generator.training
    generator.eval()
    try:
        out = []
        for za in z_edit:
            labels = predict(generator(za))
            if not isinstance(labels, torch.Tensor) or labels.ndim not in (1, 2) \
                    or labels.shape[0] != z.shape[0] or labels.is_floating_point():
                raise ValueError(f"predict must return integer labels of shape ({z.shape[0]},) "
                                 f"or ({z.shape[0]}, K), got {shape_of(labels)}")
            out.append(labels)
    finally:
        generator.train(was_training)
    return torch.stack(out)


def match_rate(predictions: torch.Tensor, reference: int | torch.Tensor) -> torch.Tensor:
    """Fraction of samples whose prediction equals ``reference``, per alpha (and attribute).

    predictions: (A, B) or (A, B, K) integer labels (from :func:`edited_predictions`);
    reference: an int (the target class: the edit's success rate), or labels of shape
    predictions.shape[1:] (e.g. the unedited predictions: the fraction preserved).
    Returns (A,) or (A, K) float64 in [0, 1].
    """
    if not isinstance(predictions, torch.Tensor) or predictions.ndim not in (2, 3) \
            or predictions.is_floating_point() or predictions.shape[1] < 1:
        raise ValueError(f"predictions must be integer labels of shape (A, B) or (A, B, K), got "
                         f"{shape_of(predictions)}")
    if isinstance(reference, torch.Tensor):
        if reference.shape != predictions.shape[1:] or reference.is_floating_point():
            raise ValueError(f"reference must be integer labels of shape "
                             f"{tuple(predictions.shape[1:])}, got {tuple(reference.shape)}")
        reference = reference.to(predictions.device)[None]
    elif isinstance(reference, bool) or not isinstance(reference, int):
        raise ValueError(f"reference must be an int (a target label) or a tensor of labels, got "
                         f"{type(reference).__name__}")
    return (predictions == reference).to(torch.float64).mean(1)

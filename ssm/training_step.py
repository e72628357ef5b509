"""Training and evaluating a sequence classifier with the book's one loop (``utils.training.fit``).

A classifier maps a sequence x (B, L, d) to logits (B, K); it is trained on the mean
cross-entropy of the true classes y (B,),

    L = −(1/B) Σ_b log softmax(logits_b)[y_b]      (nats per sequence),

and scored by accuracy, the fraction of argmax predictions equal to y. Token-level tasks (the
selective copying of ``04_selective_ssm_mamba``) use ``autoregressive.lm_step`` instead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from utils.training import check_finite
from utils.validation import check_int, shape_of

__all__ = ["classify_step", "evaluate_classifier"]


def _check_batch(x: object, y: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"x must be a tensor (B, ...) with B >= 1, got {shape_of(x)}")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or tuple(y.shape) != \
            (x.shape[0],):
        raise ValueError(f"y must be an int64 tensor ({x.shape[0]},) of class indices, got "
                         f"{shape_of(y)}" + (f" of dtype {y.dtype}"
                                             if isinstance(y, torch.Tensor) else ""))
    return x, y


def _check_logits(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if logits.ndim != 2 or logits.shape[0] != y.shape[0]:
        raise ValueError(f"the model must return logits (B, K) = ({y.shape[0]}, K), got "
                         f"{tuple(logits.shape)}")
    if int(y.min()) < 0 or int(y.max()) >= logits.shape[1]:
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got "
                         f"[{int(y.min())}, {int(y.max())}]")
    return logits


def classify_step(model: nn.Module, optimizer: torch.optim.Optimizer, *,
                  clip: float | None = 1.0,
                  scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
                  ) -> Callable[[tuple[torch.Tensor, torch.Tensor]], dict[str, float]]:
    """A ``step((x, y)) -> {"loss", "accuracy", "grad_norm", "lr"}`` for
    :func:`utils.training.fit`: cross-entropy of ``model(x)`` (B, K) against y (B,), checked
    finite before the backward pass, gradient norm clipped to ``clip`` (None: not clipped;
    ``grad_norm`` is the norm before clipping), optimiser step, then the scheduler's.
    ``accuracy`` is the batch's, measured on the logits of the update (train mode)."""
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float))
                             or not clip > 0):
        raise ValueError(f"clip must be a positive number or None, got {clip!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        x, y = _check_batch(*batch)
        model.train()
        optimizer.zero_grad(set_to_none=True)
        logits = _check_logits(model(x), y)
        loss = F.cross_entropy(logits.float(), y)
        value = check_finite("loss", loss)
        loss.backward()
        grads = [p.grad for p in params if p.grad is not None]
        if clip is not None:
            norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        else:
            norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        accuracy = float((logits.detach().argmax(-1) == y).float().mean())
        return {"loss": value, "accuracy": accuracy, "grad_norm": norm,
                "lr": optimizer.param_groups[0]["lr"]}

    return step


@torch.no_grad()
def evaluate_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                        batch_size: int = 256) -> float:
    """The accuracy of ``model`` on (x (N, ...), y (N,)), in eval mode (restored after), in
    batches of ``batch_size`` on the model's device."""
    x, y = _check_batch(x, y)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for i in range(0, len(y), batch_size):
            xb, yb = x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
            correct += int((_check_logits(model(xb), yb).argmax(-1) == yb).sum())
    finally:
        model.train(was_training)
    return correct / len(y)

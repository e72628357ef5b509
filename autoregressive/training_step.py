"""Training and evaluating a language model with the book's one loop (``utils.training.fit``).

Teacher forcing: the model reads the true prefix x_<t at every position and is scored on the
true next token, so the loss of a batch (x, y) with y_t = x_{t+1} is the mean cross-entropy

    L = −(1 / (B T)) Σ_b Σ_t log p_θ(y_{b,t} | x_{b,≤t})      (nats per token),

an unbiased estimate of the per-token negative log-likelihood of the stream; divided by ln 2 it
is bits per token (bits per character for a character tokenizer).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from utils.training import check_finite
from utils.validation import check_int, shape_of

__all__ = ["IGNORE", "evaluate_lm", "lm_loss", "lm_step", "warmup_cosine"]

IGNORE = -100  # a target that is not scored


def lm_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats per token) of logits (B, T, V) against targets y (B, T).

    Targets equal to ``IGNORE`` (−100, ``F.cross_entropy``'s ``ignore_index``) are left out of
    the mean, so a task scored at some positions only (``ssm``'s selective copying: the answer
    slots) trains with :func:`lm_step` unchanged."""
    if logits.ndim != 3 or y.shape != logits.shape[:2]:
        raise ValueError(f"logits must be (B, T, V) and y (B, T), got {tuple(logits.shape)} and "
                         f"{shape_of(y)}")
    return F.cross_entropy(_at_least_float32(logits).flatten(0, 1), y.flatten(),
                           ignore_index=IGNORE)


def _at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are cast up for the log-softmax; float32/64 stay as they are."""
    return logits.float() if logits.element_size() < 4 else logits


def lm_step(model: nn.Module, optimizer: torch.optim.Optimizer, *, clip: float | None = 1.0,
            scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
            ) -> Callable[[tuple[torch.Tensor, torch.Tensor]], dict[str, float]]:
    """A ``step((x, y)) -> {"loss": nats/token, "lr": …}`` for :func:`utils.training.fit`.

    One update: teacher-forced loss (:func:`lm_loss` of ``model(x)``), checked finite before
    the backward pass, gradient norm clipped to ``clip`` (None: no clipping), optimiser step,
    then the scheduler's. Also reports the gradient norm before clipping (``grad_norm``).
    """
    if clip is not None and not (isinstance(clip, (int, float)) and clip > 0):
        raise ValueError(f"clip must be a positive number or None, got {clip!r}")
    params = [p for p in model.parameters() if p.requires_grad]

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        x, y = batch
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = lm_loss(model(x), y)
        value = check_finite("loss", loss)
        loss.backward()
        if clip is not None:
            norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        else:
            norm = float(torch.linalg.vector_norm(
                torch.stack([p.grad.norm() for p in params if p.grad is not None])))
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        return {"loss": value, "grad_norm": norm, "lr": optimizer.param_groups[0]["lr"]}

    return step


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, total: int, *,
                  min_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` × the base
    learning rate at step ``total`` (nanoGPT's schedule): factor(s) = (s + 1) / warmup for
    s < warmup, else min_ratio + (1 − min_ratio) · ½ (1 + cos(π (s − warmup) / (total − warmup)))
    (held at min_ratio after ``total``)."""
    warmup = check_int("warmup", warmup, minimum=0)
    total = check_int("total", total, minimum=1)
    if warmup >= total:
        raise ValueError(f"warmup ({warmup}) must be shorter than total ({total})")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"min_ratio must lie in [0, 1], got {min_ratio!r}")

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        progress = min(1.0, (s - warmup) / (total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _windows(n_targets: int, block: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, first, end): window tokens[start:end] scores its targets first … end − 1 (window
    coordinates), each of the n_targets targets exactly once."""
    out, done = [], 0
    while done < n_targets:
        end = min(done + stride, n_targets) if done else min(block, n_targets)
        start = max(0, end - block)
        out.append((start, done - start, end - start))
        done = end
    return out


@torch.no_grad()
def evaluate_lm(model: nn.Module, tokens: torch.Tensor, block: int | None = None, *,
                batch_size: int = 64, stride: int | None = None,
                max_tokens: int | None = None) -> float:
    """Mean held-out negative log-likelihood (nats per token) of a token stream (N,).

    Target j is token j + 1, predicted from tokens ≤ j. The stream is cut into windows of
    ``block`` tokens (default ``model.block_size``) advancing by ``stride`` (default block // 2):
    the first window scores all its targets, every later one only its last ``stride``, so each
    target is scored exactly once with at least block − stride tokens of context (a model's
    loss rises on the first tokens of a window, where it sees little). ``max_tokens`` scores only
    the first that many targets. The model is in eval mode for the call and restored after.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 1 or tokens.dtype != torch.int64 \
            or len(tokens) < 2:
        raise ValueError(f"tokens must be an int64 tensor (N,) with N >= 2, got "
                         f"{shape_of(tokens)}")
    block = getattr(model, "block_size", None) if block is None else block
    if block is None:
        raise ValueError("the model has no block_size (e.g. an RNN): pass block")
    block = check_int("block", block, minimum=1)
    stride = block // 2 if stride is None else stride
    stride = check_int("stride", stride, minimum=1)
    if stride > block:
        raise ValueError(f"stride ({stride}) must be at most block ({block})")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    n_targets = len(tokens) - 1
    if max_tokens is not None:
        n_targets = min(n_targets, check_int("max_tokens", max_tokens, minimum=1))
    dev = next(model.parameters()).device
    tokens = tokens.to(dev)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        windows = _windows(n_targets, block, stride)
        by_length: dict[int, list[tuple[int, int, int]]] = {}
        for w in windows:
            by_length.setdefault(w[2], []).append(w)
        for length, group in by_length.items():
            for i in range(0, len(group), batch_size):
                chunk = group[i:i + batch_size]
                x = torch.stack([tokens[s:s + length] for s, _, _ in chunk])
                y = torch.stack([tokens[s + 1:s + 1 + length] for s, _, _ in chunk])
                nll = F.cross_entropy(_at_least_float32(model(x)).flatten(0, 1), y.flatten(),
                                      reduction="none").view(len(chunk), length)
                for row, (_, first, end) in enumerate(chunk):
                    total += float(nll[row, first:end].double().sum())
                    count += end - first
    finally:
        model.train(was_training)
    assert count == n_targets
    return total / count

"""Log-probabilities of completions under a causal language model: what DPO, IPO and RLHF score.

A prompt x and a completion y = (y_1, ..., y_n) are fed to the model as one row of token ids
idx = (x, y) (B, T), with a mask (B, T) that is True exactly at the completion's positions (not
at the prompt, not at padding). The chain rule (``autoregressive.sequence_log_prob``) gives the
completion's log-probability given the prompt as the sum of its tokens' conditionals,

    log π(y | x) = Σ_{t : mask_t} log π(idx_t | idx_<t) = Σ_{t : mask_t} log softmax(ℓ_{t−1})[idx_t]

(a sum over t ≥ 1), where ℓ_{t−1} (V,) are the logits the model outputs at position t − 1:
a causal LM's output at t − 1 is the distribution of the token at t. So the per-token
log-probabilities of a row of T tokens are T − 1 numbers,
``token_log_probs[:, t − 1] = log π(idx_t | idx_<t)`` for t = 1..T−1, and the mask shifts with
them (``mask[:, 1:]``); position 0 has no conditional and cannot be a completion token (a prompt
has at least one token, e.g. a begin-of-sequence token).

**Sum, not mean.** DPO's loss is derived for the sequence log-probability log π(y | x), the sum
above; that is what :func:`completion_log_probs` returns and what TRL's DPO trainer uses by
default. Averaging over the completion's n tokens instead, (1/n) Σ_t log π(y_t | ...), gives a
different objective: the log-ratios no longer grow with the completion's length, and a given β
means something else (SimPO averages; TRL's IPO divides its sums by the completion length). To
average, divide ``total`` by ``mask.sum(-1)``; the losses in :mod:`alignment.dpo` take
whichever log-probabilities they are given (DESIGN §9).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from autoregressive.lm_head import check_tokens
from utils.validation import check_int, shape_of

__all__ = ["CompletionLogProbs", "completion_log_probs", "completion_mask", "token_log_probs"]


def token_log_probs(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """log π(idx_t | idx_<t) for t = 1..T−1 from a causal LM's logits on idx.

    Args:
        logits: ``(B, T, V)`` float, the model's output on ``idx`` (``logits[:, t]`` predicts
            ``idx[:, t + 1]``); half precision is computed in float32.
        idx: ``(B, T)`` int64 token ids in 0..V−1, T ≥ 2.

    Returns:
        ``(B, T − 1)``: entry ``[:, t − 1]`` is log softmax(logits[:, t − 1])[idx[:, t]] (≤ 0).
    """
    if not isinstance(logits, torch.Tensor) or not logits.dtype.is_floating_point \
            or logits.ndim != 3:
        raise ValueError(f"logits must be a float tensor (B, T, V), got {shape_of(logits)}")
    check_tokens(idx, logits.shape[-1])
    if tuple(idx.shape) != tuple(logits.shape[:2]) or idx.shape[1] < 2:
        raise ValueError(f"idx must be (B, T) = {tuple(logits.shape[:2])} with T >= 2 (one "
                         f"prompt token and one to score), got {tuple(idx.shape)}")
    if logits.element_size() < 4:
        logits = logits.float()
    log_p = torch.log_softmax(logits[:, :-1], dim=-1)                      # (B, T−1, V)
    return log_p.gather(-1, idx[:, 1:].unsqueeze(-1)).squeeze(-1)           # (B, T−1)


class CompletionLogProbs(NamedTuple):
    """``total`` (B,): log π(y | x), the sum over completion tokens; ``per_token`` (B, T − 1):
    log π(idx_t | idx_<t) at completion tokens and 0 elsewhere (prompt, padding); ``mask``
    (B, T − 1) bool: the completion mask aligned with ``per_token`` (the input mask's
    ``[:, 1:]``)."""

    total: torch.Tensor
    per_token: torch.Tensor
    mask: torch.Tensor


def completion_log_probs(model: Callable[[torch.Tensor], torch.Tensor] | torch.Tensor,
                         idx: torch.Tensor, mask: torch.Tensor) -> CompletionLogProbs:
    """The summed and per-token log-probabilities of the completions in idx under a causal LM.

    Args:
        model: a model of the LM protocol (``model(idx (B, T)) -> logits (B, T, V)``, e.g.
            ``autoregressive.GPT``), or those logits ``(B, T, V)`` already computed (one forward
            pass can then serve the chosen and the rejected rows, or the policy and a loss).
        idx: ``(B, T)`` int64, prompt + completion (+ padding) per row.
        mask: ``(B, T)`` bool (or 0/1), True at completion tokens only; ``mask[:, 0]`` must be
            False (the first token has no conditional) and each row needs one completion token.

    Returns:
        :class:`CompletionLogProbs` (``total`` (B,), ``per_token`` and ``mask`` (B, T − 1)).
        Gradients flow to the logits of the completion positions only: the per-token values
        outside the mask are replaced (``torch.where``), not multiplied by 0, so a −inf at a
        padded position cannot turn into a NaN.
    """
    if not isinstance(idx, torch.Tensor) or idx.ndim != 2:
        raise ValueError(f"idx must be an int64 tensor (B, T), got {shape_of(idx)}")
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(idx.shape) \
            or not (mask.dtype == torch.bool or bool(((mask == 0) | (mask == 1)).all())):
        raise ValueError(f"mask must be a bool (or 0/1) tensor of idx's shape {tuple(idx.shape)}, "
                         f"got {shape_of(mask)}")
    mask = mask.to(torch.bool)
    if bool(mask[:, 0].any()):
        raise ValueError("mask[:, 0] must be False: the first token has no conditional, so a "
                         "prompt needs at least one token")
    if not bool(mask.any(-1).all()):
        rows = (~mask.any(-1)).nonzero().flatten().tolist()
        raise ValueError(f"every row needs at least one completion token; rows {rows} have none")
    logits = model if isinstance(model, torch.Tensor) else model(idx)
    log_p = token_log_probs(logits, idx)                                    # (B, T−1)
    m = mask[:, 1:]
    per_token = torch.where(m, log_p, torch.zeros((), dtype=log_p.dtype, device=log_p.device))
    return CompletionLogProbs(per_token.sum(-1), per_token, m)


def completion_mask(prompt_lengths: torch.Tensor, lengths: torch.Tensor, T: int) -> torch.Tensor:
    """The completion mask of rows laid out as [prompt | completion | padding].

    Args:
        prompt_lengths: ``(B,)`` int, P_b ≥ 1 prompt tokens in row b.
        lengths: ``(B,)`` int, L_b: prompt + completion tokens, P_b < L_b ≤ T.
        T: the row length.

    Returns:
        ``(B, T)`` bool, True at positions P_b ≤ t < L_b.
    """
    for name, v in (("prompt_lengths", prompt_lengths), ("lengths", lengths)):
        if not isinstance(v, torch.Tensor) or v.ndim != 1 or v.dtype.is_floating_point:
            raise ValueError(f"{name} must be an integer tensor (B,), got {shape_of(v)}")
    if prompt_lengths.shape != lengths.shape:
        raise ValueError(f"prompt_lengths and lengths must have the same shape (B,), got "
                         f"{tuple(prompt_lengths.shape)} and {tuple(lengths.shape)}")
    T = check_int("T", T, minimum=2)
    if bool((prompt_lengths < 1).any()) or bool((lengths <= prompt_lengths).any()) \
            or bool((lengths > T).any()):
        raise ValueError(f"need 1 <= prompt_lengths < lengths <= T = {T}, got prompt_lengths "
                         f"{prompt_lengths.tolist()} and lengths {lengths.tolist()}")
    t = torch.arange(T, device=lengths.device)
    return (t >= prompt_lengths[:, None]) & (t < lengths[:, None])

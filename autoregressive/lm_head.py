"""The language-model ends every sequence model here shares: token embedding in, final norm and
(tied) linear readout out.

A sequence model over V tokens of width d is ``E[idx] -> f_θ -> logits = norm(h) Wᵀ`` with E the
embedding (V, d) and W (V, d) the readout; tying W = E (Press & Wolf 2017) saves V·d parameters
and helps small models. :class:`LMHead` holds E, the norm and W so that a model whose middle
``f_θ`` is not a transformer (``ssm``'s Mamba and S4 language models) reuses the GPT's ends, and
the LM protocol (``model(idx)``, ``block_size``, ``vocab_size``, ``init_cache``) and everything
written against it (``generate``, ``lm_step``, ``evaluate_lm``) apply unchanged.

(:class:`autoregressive.GPT` predates this module and builds the same three pieces inline, with
the same names ``tok_emb``, ``ln_f``, ``head``; it was left as it is so that the committed
notebooks' numbers, which depend on its parameter initialisation order, stay reproducible.)
"""

from __future__ import annotations

import torch
from torch import nn

from utils.validation import check_choice, check_int, shape_of

__all__ = ["LMHead", "RMSNorm", "check_tokens"]

NORMS = ("layer", "rms", "none")


def check_tokens(idx: object, vocab_size: int) -> torch.Tensor:
    """``idx`` as the LM protocol needs it: an int64 tensor (B, T), B ≥ 1, values in [0, V)."""
    if not isinstance(idx, torch.Tensor) or idx.ndim != 2 or idx.dtype != torch.int64 \
            or idx.shape[0] < 1:
        got = f"{tuple(idx.shape)} {idx.dtype}" if isinstance(idx, torch.Tensor) \
            else shape_of(idx)
        raise ValueError(f"idx must be an int64 tensor (B, T) with B >= 1, got {got}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= vocab_size):
        raise ValueError(f"tokens must lie in [0, {vocab_size}), got "
                         f"[{int(idx.min())}, {int(idx.max())}]")
    return idx


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) · g (Zhang & Sennrich 2019; Mamba's norm)."""

    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class LMHead(nn.Module):
    """Token embedding E (V, d) and the readout logits = norm(h) Wᵀ, W = E when tied.

    Args:
        vocab_size: V ≥ 2; d: the model width ≥ 1.
        norm: the final norm, "layer" (GPT), "rms" (Mamba) or "none".
        tie_weights: W = E (one matrix, counted once).

    ``head.embed(idx (B, T) int64) -> (B, T, d)`` (tokens checked against V);
    ``head(h (..., d)) -> logits (..., V)``. Weights start at N(0, 0.02²), as in GPT-2.
    """

    def __init__(self, vocab_size: int, d: int, *, norm: str = "layer", tie_weights: bool = True):
        super().__init__()
        self.vocab_size = check_int("vocab_size", vocab_size, minimum=2)
        self.d = check_int("d", d, minimum=1)
        self.norm_kind = check_choice("norm", norm, NORMS)
        self.tok_emb = nn.Embedding(self.vocab_size, self.d)
        self.ln_f = {"layer": lambda: nn.LayerNorm(self.d), "rms": lambda: RMSNorm(self.d),
                     "none": nn.Identity}[norm]()
        self.head = nn.Linear(self.d, self.vocab_size, bias=False)
        nn.init.normal_(self.tok_emb.weight, 0.0, 0.02)
        nn.init.normal_(self.head.weight, 0.0, 0.02)
        self.tie_weights = bool(tie_weights)
        if self.tie_weights:
            self.head.weight = self.tok_emb.weight

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        return self.tok_emb(check_tokens(idx, self.vocab_size))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not isinstance(h, torch.Tensor) or h.ndim < 1 or h.shape[-1] != self.d:
            raise ValueError(f"h must be (..., {self.d}), got {shape_of(h)}")
        return self.head(self.ln_f(h))

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, d={self.d}, norm={self.norm_kind!r}, " \
               f"tie_weights={self.tie_weights}"

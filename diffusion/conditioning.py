"""Conditioning a denoiser on a class or a caption, and classifier-free guidance
(06_latent_diffusion).

A condition is always an int64 tensor, so that "no condition" (∅) is a value of it:

- class labels ``(B,)`` in 0..K−1, with ∅ = K (an extra row of the embedding table);
- captions as token ids ``(B, L)`` (:func:`caption_tokens`), 0 = padding, with ∅ = all padding
  (the empty caption).

:class:`ConditionEmbedding` maps either to a vector ``(B, dim)`` that the denoiser adds to its
time embedding. Training drops the condition to ∅ with probability p_uncond (Ho & Salimans
2021), so one network learns both ε_θ(x_t, t, c) and ε_θ(x_t, t, ∅). Classifier-free guidance
then samples with

    ε̃ = ε_θ(x_t, t, ∅) + w · (ε_θ(x_t, t, c) − ε_θ(x_t, t, ∅)),

w = 1 the conditional model, w = 0 the unconditional one, w > 1 sharper and less diverse
samples: ε̃ is the ε of p(x_t) p(c | x_t)^w up to normalisation (the implicit classifier
p(c | x_t) ∝ p(x_t | c) / p(x_t) raised to the power w).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from utils.validation import check_int, shape_of

__all__ = ["ConditionEmbedding", "caption_tokens", "classifier_free_guidance", "drop_condition"]


def caption_tokens(captions: Sequence[str], vocab: Sequence[str] | None = None,
                   length: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """Whitespace-tokenise ``captions`` into ids ``(B, L)`` (0 = padding, L = the longest caption
    or ``length``), with ``vocab`` = ["<pad>", words...] (built from the captions, sorted, if not
    given; an unknown word is a ``ValueError``). Returns (tokens, vocab)."""
    if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
        raise ValueError("captions must be a sequence of strings")
    words = [c.lower().split() for c in captions]
    if vocab is None:
        vocab = ["<pad>"] + sorted({w for ws in words for w in ws})
    vocab = list(vocab)
    if not vocab or vocab[0] != "<pad>":
        raise ValueError("vocab must start with '<pad>' (id 0)")
    index = {w: i for i, w in enumerate(vocab)}
    unknown = sorted({w for ws in words for w in ws if w not in index})
    if unknown:
        raise ValueError(f"words not in the vocabulary: {unknown}")
    n = max((len(ws) for ws in words), default=0) if length is None else \
        check_int("length", length, minimum=1)
    tokens = torch.zeros(len(words), max(n, 1), dtype=torch.int64)
    for i, ws in enumerate(words):
        if len(ws) > tokens.shape[1]:
            raise ValueError(f"caption {captions[i]!r} has more than length={n} words")
        tokens[i, :len(ws)] = torch.tensor([index[w] for w in ws], dtype=torch.int64)
    return tokens, vocab


class ConditionEmbedding(nn.Module):
    """c → e(c) ``(B, dim)``: a class table (``num_classes`` K, row K = ∅) or the mean of learned
    word vectors over a caption's tokens (``vocab_size``; an all-padding caption is ∅, a learned
    vector). Exactly one of ``num_classes`` / ``vocab_size`` is given."""

    def __init__(self, dim: int, *, num_classes: int | None = None,
                 vocab_size: int | None = None):
        super().__init__()
        self.dim = check_int("dim", dim, minimum=1)
        if (num_classes is None) == (vocab_size is None):
            raise ValueError("give exactly one of num_classes and vocab_size")
        self.num_classes = None if num_classes is None else \
            check_int("num_classes", num_classes, minimum=1)
        self.vocab_size = None if vocab_size is None else \
            check_int("vocab_size", vocab_size, minimum=2)
        if self.num_classes is not None:
            self.table = nn.Embedding(self.num_classes + 1, self.dim)
        else:
            self.table = nn.Embedding(self.vocab_size, self.dim, padding_idx=0)
            self.null = nn.Parameter(torch.zeros(self.dim))

    @property
    def null_value(self) -> int:
        """The int that, in every position, means ∅: K for classes, 0 (padding) for captions."""
        return self.num_classes if self.num_classes is not None else 0

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        if self.num_classes is not None:
            if not isinstance(c, torch.Tensor) or c.dtype != torch.int64 or c.ndim != 1:
                raise ValueError(f"class conditions must be int64 (B,), got {shape_of(c)}")
            if c.numel() and (int(c.min()) < 0 or int(c.max()) > self.num_classes):
                raise ValueError(f"labels must lie in 0..{self.num_classes} ({self.num_classes} "
                                 f"= no condition)")
            return self.table(c)
        if not isinstance(c, torch.Tensor) or c.dtype != torch.int64 or c.ndim != 2:
            raise ValueError(f"caption conditions must be int64 token ids (B, L), got "
                             f"{shape_of(c)}")
        if c.numel() and (int(c.min()) < 0 or int(c.max()) >= self.vocab_size):
            raise ValueError(f"token ids must lie in 0..{self.vocab_size - 1}")
        count = (c > 0).sum(1, keepdim=True)                                # words per caption
        mean = self.table(c).sum(1) / count.clamp(min=1)
        return torch.where(count > 0, mean, self.null.expand_as(mean))


def drop_condition(c: torch.Tensor, p: float, null_value: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each row of ``c`` (``(B,)`` or ``(B, L)``) by ∅ (``null_value`` everywhere) with
    probability p ∈ [0, 1], independently: the training half of classifier-free guidance."""
    if not isinstance(c, torch.Tensor) or c.ndim < 1:
        raise ValueError(f"c must be a tensor (B, ...), got {shape_of(c)}")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    drop = torch.rand(c.shape[0], generator=generator).to(c.device) < p
    return torch.where(drop.reshape(-1, *([1] * (c.ndim - 1))), torch.full_like(c, null_value),
                       c)


def classifier_free_guidance(model: Callable[..., torch.Tensor], c: torch.Tensor,
                             null_value: int, scale: float
                             ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The guided ε-model (x_t, t) ↦ ε_∅ + w (ε_c − ε_∅) for ``model(x_t, t, c)``, w = ``scale``
    ≥ 0; both predictions come from one batched call of 2B rows (w = 1 and w = 0 need one)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) \
            or scale < 0:
        raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
    if not isinstance(c, torch.Tensor) or c.dtype != torch.int64 or c.ndim < 1:
        raise ValueError(f"c must be an int64 tensor (B, ...), got {shape_of(c)}")
    null = torch.full_like(c, null_value)

    def eps_model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x_t.shape[0] != c.shape[0]:
            raise ValueError(f"x_t has {x_t.shape[0]} rows, the condition {c.shape[0]}")
        if scale == 1:
            return model(x_t, t, c)
        if scale == 0:
            return model(x_t, t, null)
        eps = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([c, null]))
        eps_c, eps_u = eps.chunk(2)
        return eps_u + scale * (eps_c - eps_u)

    return eps_model

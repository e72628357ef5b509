"""n-gram language models: interpolated Kneser-Ney (the classical baseline) and additive smoothing.

An n-gram model truncates the chain rule's context to the last n − 1 tokens,
p(x_t | x_<t) ≈ p(x_t | h), h = x_{t−n+1:t−1}, and estimates each conditional from counts. The
maximum-likelihood estimate c(h w) / c(h) gives probability 0 to every continuation not seen in
training, so the held-out log-likelihood is −∞ as soon as one such token occurs: it must be
smoothed.

**Interpolated Kneser-Ney** (Kneser & Ney 1995; Chen & Goodman 1998, eq. (26) with one discount
per order). With h' the context h without its first token,

    p_k(w | h) = max(c_k(h w) − D_k, 0) / c_k(h •)  +  λ_k(h) · p_{k−1}(w | h'),
    λ_k(h)     = D_k · N1+(h •) / c_k(h •),        p_0(w) = 1 / V,                      (KN)

where c_k(h •) = Σ_w c_k(h w) and N1+(h •) = #{w : c_k(h w) > 0}. The counts c_k of the order-k
n-grams (k tokens: a context of k − 1 and the predicted one) are

- at the highest order k = n, the ordinary counts c(h w);
- at every lower order, the *continuation counts* c_k(h w) = N1+(• h w) = #{v : c(v h w) > 0},
  the number of distinct tokens seen before h w. A lower order is only consulted through the
  interpolation, to say how likely w is *in a new context*: a token that is frequent but always
  follows the same context ("Francisco", or "q" → "u") gets a small continuation count.

The discount of order k is Ney's estimate D_k = n_1 / (n_1 + 2 n_2), with n_r the number of
order-k n-grams whose (continuation) count is exactly r. It lies in (0, 1]; where a level has no
count of one (n_1 = 0, possible only on tiny data) it would be 0 and leave no probability for
unseen tokens, so D_k = 1/2 is used instead. Interpolating the unigram level with the uniform
p_0 = 1/V gives every token a probability > 0. Every term is normalised: since D_k ≤ 1 ≤ c_k(h w)
for the w counted, Σ_w max(c_k(h w) − D_k, 0) = c_k(h •) − D_k N1+(h •), and the λ_k(h) term
brings back exactly the mass removed. A context never seen at order k (c_k(h •) = 0) backs off
fully: p_k(w | h) = p_{k−1}(w | h'). At the first positions of a sequence, with only j < n − 1
tokens before it, the recursion starts at order j + 1 (a continuation-count level).

**Additive smoothing** (Lidstone; α = 1 is Laplace's add-one): p(w | h) = (c(h w) + α) /
(c(h •) + α V), no interpolation; the reader's first guess, and a weak one, since it gives every
unseen continuation of a context the same probability however much the context was seen.

Tokens are integers in 0..V−1 (a 1-D int64 tensor or a list). Contexts are tuples used as dict
keys: fitting is a few passes of ``collections.Counter`` over zipped shifted copies of the text;
:meth:`nll` walks the held-out text with a tqdm bar.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter, defaultdict
from collections.abc import Sequence

import torch
from tqdm import tqdm

from utils.validation import check_int, is_int, shape_of

__all__ = ["AdditiveLM", "KneserNeyLM"]

_FALLBACK_DISCOUNT = 0.5


def _ngrams(x: list[int], k: int) -> zip:
    """All k-grams of ``x`` as tuples, in order (len(x) − k + 1 of them)."""
    return zip(*(x[i:] for i in range(k)))


class _Level:
    """The counts of one order k, grouped by context h (a tuple of k − 1 tokens):
    ``counts[h][w] = c_k(h w)``, ``total[h] = c_k(h •)``, ``types[h] = N1+(h •)``."""

    def __init__(self, ngram_counts: Counter):
        self.counts: dict[tuple, dict[int, int]] = defaultdict(dict)
        for g, c in ngram_counts.items():
            self.counts[g[:-1]][g[-1]] = c
        self.counts = dict(self.counts)
        self.total = {h: sum(ws.values()) for h, ws in self.counts.items()}
        self.types = {h: len(ws) for h, ws in self.counts.items()}
        values = Counter(ngram_counts.values())
        self.n1, self.n2 = values.get(1, 0), values.get(2, 0)


class _NGramLM:
    """What every n-gram model shares: argument checks, the context of a position, the held-out
    nll, next-token distributions and sampling. A subclass implements ``_fit(x)``,
    ``_prob(h, w)`` and ``_distribution(h)`` for a context tuple h of at most n − 1 tokens."""

    def __init__(self, order: int, vocab_size: int):
        self.order = check_int("order", order, minimum=1)
        self.vocab_size = check_int("vocab_size", vocab_size, minimum=1)
        self.fitted = False

    # -- input checks -----------------------------------------------------------------------
    def _tokens(self, tokens: object, name: str = "tokens", *, allow_empty: bool = False
                ) -> list[int]:
        if isinstance(tokens, torch.Tensor):
            if tokens.ndim != 1 or tokens.dtype.is_floating_point or tokens.dtype == torch.bool \
                    or tokens.is_complex():
                raise ValueError(f"{name} must be a 1-D integer tensor or a list of ints, got "
                                 f"{shape_of(tokens)} of dtype {tokens.dtype}")
            x = tokens.tolist()
        elif isinstance(tokens, Sequence) and not isinstance(tokens, (str, bytes)):
            x = list(tokens)
            if not all(is_int(v) for v in x):
                raise ValueError(f"{name} must hold integers")
            x = [int(v) for v in x]
        else:
            raise ValueError(f"{name} must be a 1-D integer tensor or a list of ints, got "
                             f"{shape_of(tokens)}")
        if not x and not allow_empty:
            raise ValueError(f"{name} must not be empty")
        if x and (min(x) < 0 or max(x) >= self.vocab_size):
            raise ValueError(f"{name} must lie in 0..{self.vocab_size - 1} (vocab_size "
                             f"{self.vocab_size}), got values in {min(x)}..{max(x)}")
        return x

    def _context(self, context: object) -> tuple[int, ...]:
        self._check_fitted()
        x = self._tokens([] if context is None else context, "context", allow_empty=True)
        return tuple(x[len(x) - self.order + 1:]) if self.order > 1 else ()

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise ValueError(f"{type(self).__name__} is not fitted: call .fit(tokens) first")

    # -- the public protocol ----------------------------------------------------------------
    def fit(self, tokens: torch.Tensor | Sequence[int]) -> _NGramLM:
        """Count the n-grams of ``tokens`` (1-D, values in 0..V−1, at least ``order`` of them)."""
        x = self._tokens(tokens)
        if len(x) < self.order:
            raise ValueError(f"fit needs at least order = {self.order} tokens, got {len(x)}")
        self._fit(x)
        self.fitted = True
        return self

    def prob(self, context: torch.Tensor | Sequence[int] | None, token: int) -> float:
        """p(token | the last n − 1 tokens of ``context``) (fewer if the context is shorter)."""
        h = self._context(context)
        if not is_int(token) or not 0 <= token < self.vocab_size:
            raise ValueError(f"token must be an integer in 0..{self.vocab_size - 1}, got "
                             f"{token!r}")
        return self._prob(h, int(token))

    def next_distribution(self, context: torch.Tensor | Sequence[int] | None) -> torch.Tensor:
        """p(· | context): ``(V,)`` float64, summing to one."""
        return torch.tensor(self._distribution(self._context(context)), dtype=torch.float64)

    def nll(self, tokens: torch.Tensor | Sequence[int], *, progress: bool = False) -> float:
        """Mean −log p(x_t | x_{t−n+1:t−1}) in nats per token over a held-out sequence; position
        t uses the up to n − 1 tokens before it in ``tokens`` (the first positions fewer)."""
        self._check_fitted()
        x = self._tokens(tokens)
        n1 = self.order - 1
        total = 0.0
        for t in tqdm(range(len(x)), desc=f"{self.order}-gram nll", disable=not progress,
                      mininterval=1.0):
            p = self._prob(tuple(x[max(0, t - n1):t]), x[t])
            if p <= 0.0:
                return math.inf
            total -= math.log(p)
        return total / len(x)

    def sample(self, n: int, generator: torch.Generator | None = None,
               prompt: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
        """Draw ``n`` tokens x_t ~ p(· | the previous n − 1), after ``prompt`` (may be empty).

        Returns the ``n`` new tokens, ``(n,)`` int64 (the prompt not included)."""
        self._check_fitted()
        n = check_int("n", n, minimum=0)
        x = self._tokens([] if prompt is None else prompt, "prompt", allow_empty=True)
        out = []
        for _ in range(n):
            p = self.next_distribution(x[len(x) - self.order + 1:] if self.order > 1 else [])
            w = int(torch.multinomial(p, 1, generator=generator))
            out.append(w)
            x.append(w)
        return torch.tensor(out, dtype=torch.int64)


class KneserNeyLM(_NGramLM):
    """Interpolated Kneser-Ney n-gram model, equation (KN) of the module docstring.

    Args:
        order: n ≥ 1 (n = 1: a unigram model interpolated with the uniform distribution).
        vocab_size: V, tokens are 0..V−1.
        discount: ``None`` (Ney's D_k = n_1 / (n_1 + 2 n_2) for each order, from the training
            counts), one number in (0, 1] for every order, or ``order`` numbers (orders 1..n).

    After :meth:`fit`, ``discounts`` holds (D_1, ..., D_n).
    """

    def __init__(self, order: int, vocab_size: int,
                 discount: float | Sequence[float] | None = None):
        super().__init__(order, vocab_size)
        if discount is None or isinstance(discount, Sequence):
            values = [] if discount is None else list(discount)
            if discount is not None and len(values) != self.order:
                raise ValueError(f"discount must be None, one number or {self.order} numbers "
                                 f"(one per order), got {len(values)}")
        else:
            values = [discount] * self.order
        for d in values:
            if isinstance(d, bool) or not isinstance(d, numbers.Real) or not 0 < d <= 1:
                raise ValueError(f"every discount must be a number in (0, 1], got {d!r}")
        self._given = None if discount is None else tuple(float(d) for d in values)
        self.discounts: tuple[float, ...] = ()

    def _fit(self, x: list[int]) -> None:
        n = self.order
        counts = Counter(_ngrams(x, n))                # c(h w) of the highest order
        levels = [_Level(counts)]
        for k in range(n - 1, 0, -1):                  # continuation counts N1+(• h w)
            kept = set(_ngrams(x, k + 1))              # the distinct (k+1)-grams v h w
            levels.append(_Level(Counter(g[1:] for g in kept)))
        self.levels = levels[::-1]                     # levels[k - 1]: order k
        if self._given is not None:
            self.discounts = self._given
        else:
            self.discounts = tuple(lv.n1 / (lv.n1 + 2 * lv.n2) if lv.n1 > 0 else
                                   _FALLBACK_DISCOUNT for lv in self.levels)

    def _prob(self, h: tuple[int, ...], w: int) -> float:
        p = 1.0 / self.vocab_size                      # p_0
        for k in range(1, len(h) + 2):                 # orders 1 .. len(h) + 1
            ctx = h[len(h) - k + 1:]
            level = self.levels[k - 1]
            total = level.total.get(ctx)
            if total is None:                          # unseen context: back off fully
                continue
            D = self.discounts[k - 1]
            c = level.counts[ctx].get(w, 0)
            p = (max(c - D, 0.0) + D * level.types[ctx] * p) / total
        return p

    def _distribution(self, h: tuple[int, ...]) -> list[float]:
        V = self.vocab_size
        p = [1.0 / V] * V
        for k in range(1, len(h) + 2):
            ctx = h[len(h) - k + 1:]
            level = self.levels[k - 1]
            total = level.total.get(ctx)
            if total is None:
                continue
            D = self.discounts[k - 1]
            lam = D * level.types[ctx] / total
            p = [lam * q for q in p]
            for w, c in level.counts[ctx].items():
                p[w] += (c - D if c > D else 0.0) / total
        return p


class AdditiveLM(_NGramLM):
    """n-gram model with additive smoothing, p(w | h) = (c(h w) + α) / (c(h •) + α V).

    Args:
        order: n ≥ 1; vocab_size: V.
        alpha: the pseudo-count α > 0 added to every n-gram (1: add-one / Laplace).
    """

    def __init__(self, order: int, vocab_size: int, alpha: float = 1.0):
        super().__init__(order, vocab_size)
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) \
                or not 0 < alpha < math.inf:
            raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
        self.alpha = float(alpha)

    def _fit(self, x: list[int]) -> None:
        # every context length 0..n-1, for the first positions of a sequence
        self.levels = [_Level(Counter(_ngrams(x, k))) for k in range(1, self.order + 1)]

    def _prob(self, h: tuple[int, ...], w: int) -> float:
        level = self.levels[len(h)]
        counts = level.counts.get(h, {})
        return (counts.get(w, 0) + self.alpha) / (level.total.get(h, 0) + self.alpha
                                                  * self.vocab_size)

    def _distribution(self, h: tuple[int, ...]) -> list[float]:
        level = self.levels[len(h)]
        den = level.total.get(h, 0) + self.alpha * self.vocab_size
        p = [self.alpha / den] * self.vocab_size
        for w, c in level.counts.get(h, {}).items():
            p[w] += c / den
        return p

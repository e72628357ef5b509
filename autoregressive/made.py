"""MADE: a masked autoencoder for distribution estimation (Germain, Gregor, Murray & Larochelle
2015), for binary vectors x ∈ {0, 1}^d.

MADE computes all d conditionals of the chain rule in one forward pass of an MLP whose weight
matrices are multiplied by binary masks, so that the output for x_j sees only the inputs that
come before j in an ordering:

    log p(x) = Σ_j log p(x_j | x_{o<o(j)}) = Σ_j [x_j ℓ_j − softplus(ℓ_j)],             (1)
    ℓ = c + (V ⊙ M^V) h_L,   h_l = ReLU(b_l + (W_l ⊙ M^{W_l}) h_{l−1}),   h_0 = x.

**Degrees.** Each unit carries an integer degree: input j has m_0(j) = o(j) ∈ {1, ..., d}, its
place in the ordering o (a permutation); each hidden unit k of layer l draws
m_l(k) ∈ {min_k' m_{l−1}(k'), ..., d − 1} uniformly (so no unit is left without inputs), and
"unit k may depend on inputs of degree ≤ m_l(k)". The masks enforce it:

    M^{W_l}[k, k'] = 1[m_l(k) ≥ m_{l−1}(k')],        M^V[j, k] = 1[m_0(j) > m_L(k)].        (2)

By induction hidden unit k depends only on inputs of degree ≤ m_l(k), and output j (strict >)
only on inputs of degree < m_0(j): exactly the autoregressive property, so (1) is an exact,
normalised log-likelihood (the tests sum exp(log p) over all 2^d vectors), in one pass.

**Several masks** (Germain et al. §3.2, "order-agnostic" and "connectivity-agnostic" training):
with ``n_masks = K > 1`` the model holds K mask sets, each with its own hidden degrees and, if
``order_agnostic``, its own random ordering (set 0 keeps the given one). :func:`made_step` trains
mask set s mod K at step s, so one set of weights learns K autoregressive models; at test time
``log_prob`` is the exact log-likelihood of their uniform mixture,
log p(x) = log (1/K) Σ_k p_k(x), itself a normalised distribution (an ensemble), and ``sample``
draws from that mixture. ``mask=k`` selects one set.

Shapes: x ``(B, d)`` float in {0, 1}; logits ``(B, d)`` in the inputs' order (logit j is for x_j);
log_prob ``(B,)`` in nats; masks ``(K, out, in)`` buffers saved with the weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from utils.training import check_finite
from utils.validation import check_int, is_int, shape_of

__all__ = ["MADE", "made_degrees", "made_masks", "made_step"]


def made_degrees(d: int, hidden: Sequence[int], ordering: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Degrees [m_0, m_1, ..., m_L]: m_0 = o + 1 (``ordering`` o a permutation of 0..d−1, default
    the identity: o(j) = j), each m_l ``(hidden[l−1],)`` int64 drawn uniformly from
    {min m_{l−1}, ..., d − 1} with ``generator``."""
    d = check_int("d", d, minimum=2)
    hidden = [check_int("hidden", h, minimum=1) for h in hidden]
    if ordering is None:
        ordering = torch.arange(d)
    if not isinstance(ordering, torch.Tensor) or ordering.dtype != torch.int64 \
            or tuple(ordering.shape) != (d,) \
            or not torch.equal(ordering.sort().values, torch.arange(d)):
        raise ValueError(f"ordering must be a permutation of 0..{d - 1} as an int64 tensor ({d},),"
                         f" got {shape_of(ordering)}")
    degrees = [ordering + 1]
    for h in hidden:
        low = int(degrees[-1].min())
        degrees.append(torch.randint(low, d, (h,), generator=generator))     # in [low, d − 1]
    return degrees


def made_masks(degrees: list[torch.Tensor]) -> list[torch.Tensor]:
    """The masks (2) of the degrees [m_0, ..., m_L]: M^{W_l} ``(H_l, H_{l−1})`` for l = 1..L,
    then the output mask M^V ``(d, H_L)``, as float 0/1 tensors (rows: outputs, as nn.Linear)."""
    if len(degrees) < 2:
        raise ValueError(f"degrees needs the inputs' and at least one hidden layer's, got "
                         f"{len(degrees)}")
    masks = [(m[:, None] >= m_prev[None, :]).float()
             for m_prev, m in zip(degrees[:-1], degrees[1:], strict=False)]
    masks.append((degrees[0][:, None] > degrees[-1][None, :]).float())
    return masks


class MADE(nn.Module):
    """A MADE for binary vectors of dimension d (see the module docstring).

    Args:
        d: the dimension (≥ 2).
        hidden: the widths of the ReLU hidden layers (at least one layer).
        n_masks: K ≥ 1 mask sets (orderings / connectivities), trained one per step.
        ordering: the ordering of mask set 0, a permutation of 0..d−1 (default: 0, 1, ..., d−1).
        order_agnostic: whether mask sets 1..K−1 draw random orderings (else they share set 0's
            and only resample the hidden degrees).
        seed: seeds the generator the degrees and orderings are drawn from.
    """

    def __init__(self, d: int, hidden: Sequence[int] = (500,), *, n_masks: int = 1,
                 ordering: torch.Tensor | None = None, order_agnostic: bool = True,
                 seed: int = 0):
        super().__init__()
        self.d = check_int("d", d, minimum=2)
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence) or not hidden:
            raise ValueError(f"hidden must be a non-empty sequence of widths, got {hidden!r}")
        self.hidden = tuple(check_int("hidden", h, minimum=1) for h in hidden)
        self.n_masks = check_int("n_masks", n_masks, minimum=1)
        seed = check_int("seed", seed)
        g = torch.Generator().manual_seed(seed)
        sets, orderings = [], []
        for k in range(self.n_masks):
            o = ordering if k == 0 else (torch.randperm(self.d, generator=g) if order_agnostic
                                         else orderings[0])
            degrees = made_degrees(self.d, self.hidden, o, generator=g)
            orderings.append(degrees[0] - 1)
            sets.append(made_masks(degrees))
        widths = [self.d, *self.hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:],
                                                                       strict=False))
        self.out = nn.Linear(widths[-1], self.d)
        for i in range(len(self.hidden) + 1):                 # (K, out, in) per layer
            self.register_buffer(f"mask_{i}", torch.stack([s[i] for s in sets]))
        self.register_buffer("orderings", torch.stack(orderings))            # (K, d)

    def _mask(self, i: int, k: int) -> torch.Tensor:
        return getattr(self, f"mask_{i}")[k]

    def _check_x(self, x: object) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.ndim != 2 \
                or x.shape[1] != self.d:
            dtype = f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""
            raise ValueError(f"x must be a float tensor (B, {self.d}), got {shape_of(x)}{dtype}")
        return x

    def _check_mask(self, mask: object) -> int:
        if not is_int(mask) or not 0 <= mask < self.n_masks:
            raise ValueError(f"mask must be an integer in 0..{self.n_masks - 1}, got {mask!r}")
        return int(mask)

    def forward(self, x: torch.Tensor, mask: int = 0) -> torch.Tensor:
        """Logits ℓ ``(B, d)`` of p(x_j = 1 | the inputs before j) under mask set ``mask``."""
        x, k = self._check_x(x), self._check_mask(mask)
        h = x
        for i, layer in enumerate(self.layers):
            h = F.relu(F.linear(h, layer.weight * self._mask(i, k), layer.bias))
        return F.linear(h, self.out.weight * self._mask(len(self.layers), k), self.out.bias)

    def log_prob(self, x: torch.Tensor, mask: int | None = None) -> torch.Tensor:
        """Exact log p(x) ``(B,)`` in nats, (1); x must be binary. ``mask=None`` with K > 1: the
        mixture log (1/K) Σ_k p_k(x); an integer: that mask set's model alone."""
        x = self._check_x(x)
        if not bool(((x == 0) | (x == 1)).all()):
            raise ValueError("x must be binary (values in {0, 1}): binarise it first")
        ks = range(self.n_masks) if mask is None else [self._check_mask(mask)]
        per_mask = torch.stack([self._bernoulli_log_prob(x, self(x, k)) for k in ks])  # (K', B)
        return torch.logsumexp(per_mask, 0) - math.log(len(per_mask))

    @staticmethod
    def _bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        # Σ_j [x_j ℓ_j − softplus(ℓ_j)] = Σ_j log Ber(x_j; σ(ℓ_j)): (B,)
        return (x * logits - F.softplus(logits)).sum(-1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               mask: int | None = None) -> torch.Tensor:
        """``n`` exact samples ``(n, d)`` in {0, 1}: x_j ~ Ber(σ(ℓ_j)) one dimension at a time in
        the ordering (d passes). ``mask=None`` with K > 1: each sample from a uniformly drawn
        mask set (the mixture ``log_prob`` scores); an integer: that mask set only."""
        n = check_int("n", n, minimum=0)
        dev, dtype = self.out.weight.device, self.out.weight.dtype
        if mask is None:
            which = torch.randint(self.n_masks, (n,), generator=generator, device=dev)
        else:
            which = torch.full((n,), self._check_mask(mask), device=dev)
        x = torch.zeros(n, self.d, device=dev, dtype=dtype)
        for k in range(self.n_masks):
            rows = (which == k).nonzero().squeeze(-1)
            if rows.numel() == 0:
                continue
            xk = x[rows]
            for j in self.orderings[k].argsort().tolist():          # inputs in the ordering
                p = torch.sigmoid(self(xk, k)[:, j])
                xk[:, j] = torch.bernoulli(p, generator=generator)
            x[rows] = xk
        return x


def made_step(model: MADE, optimizer: Any, *, start_step: int = 0
              ) -> Callable[[Any], dict[str, float]]:
    """A ``step(batch) -> {"nll": ...}`` for :func:`utils.training.fit`: one optimiser step on
    the mean −log p(x) (nats per vector) of a batch x ``(B, d)`` (or (x, labels, ...)), using
    mask set s mod K at step s (connectivity / order-agnostic training). The step counts its
    own calls from ``start_step`` (pass a checkpoint's step when resuming in a new process)."""
    if not isinstance(model, MADE):
        raise ValueError(f"model must be a MADE, got {type(model).__name__}")
    if not (callable(getattr(optimizer, "step", None))
            and callable(getattr(optimizer, "zero_grad", None))):
        raise ValueError(f"optimizer must have step and zero_grad, got {type(optimizer).__name__}")
    calls = [check_int("start_step", start_step, minimum=0)]

    def step(batch: Any) -> dict[str, float]:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        k = calls[0] % model.n_masks
        calls[0] += 1
        optimizer.zero_grad(set_to_none=True)
        loss = -model.log_prob(x, mask=k).mean()
        nll = check_finite("nll", loss)
        loss.backward()
        optimizer.step()
        return {"nll": nll}

    return step

"""Scans of the first-order linear recurrence h_t = a_t ⊙ h_{t−1} + b_t.

Every diagonal SSM (S4D, Mamba's selective SSM) runs this recurrence, with a_t = Ā_t and
b_t = B̄_t u_t, and h_{−1} = h0 (zeros by default). Unrolled,

    h_t = Σ_{s ≤ t} (Π_{s < r ≤ t} a_r) b_s  (+ (Π_{r ≤ t} a_r) h0).

**The associative operator.** Write step t as the affine map h ↦ a_t h + b_t, stored as the pair
(a_t, b_t). Applying (a1, b1) first and (a2, b2) second gives h ↦ a2 (a1 h + b1) + b2, the pair

    (a1, b1) ∘ (a2, b2) = (a1 a2, a2 b1 + b2).

Composition of maps is associative, so ∘ is: any bracketing of (a_0, b_0) ∘ … ∘ (a_t, b_t)
gives the same pair (Π a, h_t), and its second component is h_t. A prefix scan of ∘ can then
be computed in O(log L) parallel steps instead of L sequential ones:

- ``"hillis_steele"`` (Hillis & Steele 1986): at level k = 1, 2, 4, … every element t ≥ k
  combines with element t − k. ⌈log₂ L⌉ levels (depth), Σ_k (L − k) ≈ L log₂ L operator
  applications (work): more work than the loop, but each level is one vectorised op.
- ``"blelloch"`` (work-efficient, Blelloch 1990, in its recursive form): combine neighbouring
  pairs (2i, 2i+1) into L/2 elements, scan those recursively (that gives h at the odd
  positions), then fill in each even position from the odd one before it. Work ≈ 2L, depth
  ≈ 2 log₂ L — the same bounds as the up-sweep/down-sweep formulation.

Both handle any length L ≥ 1 (no power-of-two padding), are built from differentiable tensor
ops (autograd goes through them; ``gradcheck`` passes in float64) and follow the inputs' device
and dtype. :func:`scan_cost` counts the work and depth of each method by running its index
schedule on shape-only ("meta") tensors, so the counts are the implementation's own.

Shapes: a and b broadcast to a common shape S with the scanned length L = S[dim]; h0, if given,
broadcasts to S without ``dim`` (one state per sequence); the result h has shape S.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from utils.validation import check_choice, check_int, shape_of

__all__ = ["SCAN_METHODS", "parallel_scan", "scan_cost", "sequential_scan"]

SCAN_METHODS = ("hillis_steele", "blelloch")


def _check_h0(h0: object, step: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    if not isinstance(h0, torch.Tensor) or not (h0.dtype.is_floating_point or h0.is_complex()):
        raise ValueError(f"h0 must be a float or complex tensor broadcastable to {tuple(step)}, "
                         f"got {shape_of(h0)}")
    try:
        ok = torch.broadcast_shapes(h0.shape, step) == step
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"h0 must broadcast to one state per sequence, {tuple(step)} (the shape "
                         f"of a and b without dim), got {tuple(h0.shape)}")
    return h0.to(dtype)


def _prepare(a: object, b: object, h0: object, dim: object
             ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """a, b broadcast to S and moved so the scanned axis is axis 0; h0 folded into b_0."""
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, torch.Tensor) or not (x.dtype.is_floating_point or x.is_complex()):
            raise ValueError(f"{name} must be a float or complex tensor, got {shape_of(x)}"
                             + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))
    try:
        shape = torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        raise ValueError(f"a and b must broadcast to one shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}") from None
    if len(shape) == 0:
        raise ValueError("a and b must have at least one dimension (the one scanned), got "
                         "scalars")
    if isinstance(dim, bool) or not isinstance(dim, int) or not -len(shape) <= dim < len(shape):
        raise ValueError(f"dim must be an integer in [{-len(shape)}, {len(shape)}) for shape "
                         f"{tuple(shape)}, got {dim!r}")
    dim = dim % len(shape)
    if shape[dim] < 1:
        raise ValueError(f"the scanned dimension must have length >= 1, got shape {tuple(shape)}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    a = a.to(dtype).expand(shape).movedim(dim, 0)
    b = b.to(dtype).expand(shape).movedim(dim, 0)
    if h0 is not None:
        step = b.shape[1:]
        h0 = _check_h0(h0, step, dtype)
        b = torch.cat([(a[:1] * h0 + b[:1]), b[1:]])   # h_0 = a_0 h0 + b_0
    return a, b, dim


class _SequentialScan(torch.autograd.Function):
    """The loop, with its hand-written backward (the adjoint recurrence, a scan run backwards).

    Forward: h_t = a_t h_{t−1} + b_t (h_{−1} = h0). With g_t = ∂ℓ/∂h_t (total, through every
    later step), g_t = ḡ_t + a_{t+1} g_{t+1} with ḡ = the incoming gradient, so
    ∂ℓ/∂b_t = g_t, ∂ℓ/∂a_t = g_t h_{t−1}, ∂ℓ/∂h0 = a_0 g_0. Both loops write in place into
    preallocated tensors: two passes over the data, no autograd graph of L small steps.
    """

    @staticmethod
    def forward(ctx, a, b, h0):
        h = torch.empty(b.shape, dtype=b.dtype, device=b.device)
        torch.addcmul(b[0], a[0], h0, out=h[0])
        for t in range(1, a.shape[0]):
            torch.addcmul(b[t], a[t], h[t - 1], out=h[t])
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h):
        a, h, h0 = ctx.saved_tensors
        g = grad_h.contiguous().clone()
        for t in range(a.shape[0] - 2, -1, -1):
            g[t].addcmul_(a[t + 1], g[t + 1])                  # g_t = ḡ_t + a_{t+1} g_{t+1}
        grad_a = torch.empty_like(g)
        torch.mul(g[1:], h[:-1], out=grad_a[1:])               # ∂ℓ/∂a_t = g_t h_{t−1}
        torch.mul(g[0], h0, out=grad_a[0])
        return grad_a, g, a[0] * g[0]


def sequential_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None,
                    dim: int = -1) -> torch.Tensor:
    """h_t = a_t ⊙ h_{t−1} + b_t along ``dim`` by the plain loop (work L − 1, depth L − 1).

    a, b: broadcastable to S; h0: broadcastable to S without ``dim`` (default zeros). Returns h
    of shape S. The reference the parallel scans are checked against; its backward is the
    adjoint recurrence run backwards (see ``_SequentialScan``), checked by gradcheck.
    """
    a, b, dim = _prepare(a, b, None, dim)
    step = b.shape[1:]
    h0 = b.new_zeros(step) if h0 is None else _check_h0(h0, step, b.dtype)
    h0 = h0.expand(step).contiguous()
    return _SequentialScan.apply(a.contiguous(), b.contiguous(), h0).movedim(0, dim)


Combine = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
                   tuple[torch.Tensor, torch.Tensor]]
Apply = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _combine(a1, b1, a2, b2):
    """(a1, b1) ∘ (a2, b2) = (a1 a2, a2 b1 + b2), elementwise (the earlier pair first)."""
    return a1 * a2, torch.addcmul(b2, a2, b1)


def _apply(a, h, b):
    """The second component only: h' = a h + b (when the product of the a's is not needed)."""
    return torch.addcmul(b, a, h)


def _hillis_steele(a: torch.Tensor, b: torch.Tensor, combine: Combine, apply: Apply):
    L, k = a.shape[0], 1
    while k < L:
        if 2 * k < L:   # the a's are needed by a later level
            a_new, b_new = combine(a[:-k], b[:-k], a[k:], b[k:])
            a = torch.cat([a[:k], a_new])
        else:
            b_new = apply(a[k:], b[:-k], b[k:])
        b = torch.cat([b[:k], b_new])
        k *= 2
    return b


def _blelloch(a: torch.Tensor, b: torch.Tensor, combine: Combine, apply: Apply):
    L = a.shape[0]
    if L == 1:
        return b
    n = L // 2                                                  # pairs (2i, 2i+1)
    if n > 1:
        a_pair, b_pair = combine(a[0:2 * n:2], b[0:2 * n:2], a[1:2 * n:2], b[1:2 * n:2])
    else:                                                       # one pair: its a is not needed
        a_pair, b_pair = a[1:2], apply(a[1:2], b[0:1], b[1:2])
    h_odd = _blelloch(a_pair, b_pair, combine, apply)           # h_1, h_3, …, h_{2n−1}
    m = (L + 1) // 2 - 1                                        # even positions 2, 4, … ≤ L − 1
    h_even = b[:1] if m == 0 else torch.cat([b[:1],
                                            apply(a[2:2 * m + 1:2], h_odd[:m], b[2:2 * m + 1:2])])
    h = torch.stack([h_even[:n], h_odd], 1).flatten(0, 1)       # interleave h_0, h_1, …
    return torch.cat([h, h_even[n:]]) if L % 2 else h


_METHODS = {"hillis_steele": _hillis_steele, "blelloch": _blelloch}


def parallel_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None,
                  dim: int = -1, method: str = "blelloch") -> torch.Tensor:
    """h_t = a_t ⊙ h_{t−1} + b_t along ``dim`` by an associative scan of ∘ (module docstring).

    a, b: broadcastable to S; h0: broadcastable to S without ``dim`` (default zeros);
    method: "blelloch" (default; work-efficient, the faster of the two on CPU once a level's
    tensors are large) or "hillis_steele" (fewer levels, ~L log₂ L work). Returns h of shape
    S, equal to :func:`sequential_scan` up to rounding (the products are bracketed differently).
    """
    method = check_choice("method", method, SCAN_METHODS)
    a, b, dim = _prepare(a, b, h0, dim)
    return _METHODS[method](a, b, _combine, _apply).movedim(0, dim)


def scan_cost(L: int, method: str) -> tuple[int, int]:
    """(work, depth) of scanning L elements: work = operator applications (one per element
    combined), depth = the number of dependent vectorised steps. method: "sequential",
    "hillis_steele" or "blelloch". Counted by running the method's own schedule on shape-only
    tensors (so the count is the implementation's): sequential (L − 1, L − 1); Hillis-Steele
    (Σ_{k=2^j<L} (L − k), ⌈log₂ L⌉); Blelloch for L = 2^p: (2L − 2 − p, 2p − 1)."""
    L = check_int("L", L, minimum=1)
    method = check_choice("method", method, ("sequential", *SCAN_METHODS))
    if method == "sequential":
        return L - 1, L - 1
    count = [0, 0]

    def combine(a1, b1, a2, b2):
        count[0] += a2.shape[0]
        count[1] += 1
        return _combine(a1, b1, a2, b2)

    def apply(a, h, b):
        count[0] += a.shape[0]
        count[1] += 1
        return _apply(a, h, b)

    x = torch.empty(L, device="meta")
    _METHODS[method](x, x, combine, apply)
    return count[0], count[1]

"""Scaled dot-product attention, causal masks, and multi-head attention with a KV cache.

Attention is a soft lookup: each query q_i scores every key k_j, the scores become weights by a
softmax, and the output is the weighted mean of the values,

    Attention(Q, K, V) = softmax(Q Kᵀ / √d + M) V,    M_ij = 0 where i may see j, −∞ elsewhere.

The 1/√d keeps the logits' variance at 1 when q and k have independent unit-variance entries
(q·k is a sum of d such products, variance d), so the softmax does not saturate as d grows.

**Causal masks and their alignment.** With T_q queries and T_k ≥ T_q keys there are two ways to
say "causal". *Top-left* aligned (``torch.nn.functional.scaled_dot_product_attention(...,
is_causal=True)``): query i sees keys j ≤ i. *Bottom-right* aligned: query i sees keys
j ≤ i + (T_k − T_q), i.e. the queries are the *last* T_q positions of the sequence. The two agree
when T_q = T_k. With a KV cache they do not: the cache holds the keys of the first T_k − T_q
positions, the new queries come after them, and top-left alignment would hide from the newest
token almost everything before it. A KV cache needs bottom-right alignment.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from utils.validation import check_choice, check_int, shape_of

__all__ = ["LayerKVCache", "MultiHeadAttention", "causal_mask", "scaled_dot_product_attention"]

MASK_ALIGNMENTS = ("bottom_right", "top_left")


def causal_mask(t_q: int, t_k: int | None = None, *, align: str = "bottom_right",
                device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean (t_q, t_k) mask, True where query i may attend to key j.

    ``align="bottom_right"``: j ≤ i + (t_k − t_q) (the queries are the last t_q positions: what
    a KV cache needs); ``align="top_left"``: j ≤ i (what SDPA's ``is_causal=True`` does).
    ``t_k`` defaults to ``t_q``, where the two coincide.
    """
    t_q = check_int("t_q", t_q, minimum=1)
    t_k = t_q if t_k is None else check_int("t_k", t_k, minimum=1)
    align = check_choice("align", align, MASK_ALIGNMENTS)
    offset = t_k - t_q if align == "bottom_right" else 0
    i = torch.arange(t_q, device=device)[:, None]
    j = torch.arange(t_k, device=device)[None, :]
    return j <= i + offset


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None, *,
                                 return_weights: bool = False
                                 ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """softmax(q kᵀ / √d + M) v, written out.

    Args:
        q: (..., T_q, d) queries; k: (..., T_k, d) keys; v: (..., T_k, d_v) values (the leading
            dimensions broadcast, e.g. (B, H)).
        mask: optional boolean tensor broadcastable to (..., T_q, T_k), True where the query may
            attend (as in torch's SDPA). Every query must see at least one key.
        return_weights: also return the attention weights A = softmax(...): (..., T_q, T_k).

    Returns:
        out (..., T_q, d_v) [, A].
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.ndim < 2 or not t.dtype.is_floating_point:
            raise ValueError(f"{name} must be a float tensor (..., T, d), got {shape_of(t)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k need the same last dimension d, got q {tuple(q.shape)} and "
                         f"k {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v need the same number of keys T_k, got k {tuple(k.shape)} and "
                         f"v {tuple(v.shape)}")
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., T_q, T_k)
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a boolean tensor (True = attend), got "
                             f"{shape_of(mask)}" + (f" of dtype {mask.dtype}"
                                                    if isinstance(mask, torch.Tensor) else ""))
        try:
            torch.broadcast_shapes(mask.shape, scores.shape)
        except RuntimeError:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the "
                             f"scores' shape {tuple(scores.shape)} (..., T_q, T_k)") from None
        if not bool(mask.any(-1).all()):
            raise ValueError("the mask leaves some query with no key to attend to (a row of "
                             "all False): its softmax would be 0/0")
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    out = weights @ v
    return (out, weights) if return_weights else out


class LayerKVCache:
    """The keys and values one attention layer has seen: preallocated (B, H, T_max, d_head)
    buffers of which the first ``length`` positions are filled.

    :meth:`append` writes the new keys/values at ``length`` and returns all filled ones; the
    model advances ``length`` once every layer has appended (so all layers agree).
    """

    def __init__(self, batch: int, heads: int, max_length: int, head_dim: int, *,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
        shape = (check_int("batch", batch, minimum=1), check_int("heads", heads, minimum=1),
                 check_int("max_length", max_length, minimum=1),
                 check_int("head_dim", head_dim, minimum=1))
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, H, T_new, d_head) after the ``length`` cached positions; return the
        keys and values of all length + T_new positions."""
        b, h, t_new, d = k.shape
        if (b, h, d) != (self.k.shape[0], self.k.shape[1], self.k.shape[3]):
            raise ValueError(f"the cache holds (B, H, ·, d) = {tuple(self.k.shape)}, got new keys "
                             f"{tuple(k.shape)}")
        end = self.length + t_new
        if end > self.k.shape[2]:
            raise ValueError(f"the cache holds at most {self.k.shape[2]} positions; "
                             f"{self.length} cached + {t_new} new is more")
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows ``index`` (B',) (e.g. the surviving beams)."""
        self.k = self.k.index_select(0, index)
        self.v = self.v.index_select(0, index)


class MultiHeadAttention(nn.Module):
    """Multi-head (self-)attention: H heads of width d_head = d_model / H attend in parallel,

        head_h = Attention(X W_h^Q, X W_h^K, X W_h^V),  MHA(X) = concat(head_1 … head_H) W^O.

    The three projections are one ``in_proj`` Linear(d_model, 3 d_model) whose output splits into
    Q, K, V in that order, and ``out_proj`` is W^O: the layout of ``torch.nn.MultiheadAttention``
    (``in_proj_weight``, ``out_proj``), so weights copy across (tested).

    ``forward(x, causal=True, cache=None, rotary=None, start=0)``: x (B, T, d_model) ->
    (B, T, d_model). With a :class:`LayerKVCache` the new keys and values are appended and the T
    queries attend to every cached key plus the causal part of the new ones (bottom-right
    aligned). ``rotary`` (a :class:`autoregressive.positions.RotaryEmbedding`) rotates q and k by
    their absolute positions ``start … start + T − 1``. After a call with ``need_weights=True``
    the weights (B, H, T, T_k) are in ``self.last_weights``.

    ``fused=True`` computes the same attention with torch's fused
    ``torch.nn.functional.scaled_dot_product_attention`` (given our explicit bottom-right mask,
    never its ``is_causal``): several times faster on a CPU, equal to the written-out
    :func:`scaled_dot_product_attention` to float precision (tested). ``need_weights`` always
    takes the written-out path. Dropout (``dropout`` > 0, in training) drops attention weights.
    """

    def __init__(self, d_model: int, n_heads: int, *, bias: bool = True, dropout: float = 0.0,
                 fused: bool = True):
        super().__init__()
        d_model = check_int("d_model", d_model, minimum=1)
        n_heads = check_int("n_heads", n_heads, minimum=1)
        if d_model % n_heads:
            raise ValueError(f"the number of heads must divide the width: d_model = {d_model}, "
                             f"n_heads = {n_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.in_proj = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.fused = bool(fused)
        self.last_weights: torch.Tensor | None = None

    def _heads(self, t: torch.Tensor) -> torch.Tensor:  # (B, T, d_model) -> (B, H, T, d_head)
        b, t_len, _ = t.shape
        return t.view(b, t_len, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, *, causal: bool = True, mask: torch.Tensor | None = None,
                cache: LayerKVCache | None = None, rotary: nn.Module | None = None,
                start: int = 0, need_weights: bool = False) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must be (B, T, d_model = {self.d_model}), got {tuple(x.shape)}")
        b, t, _ = x.shape
        q, k, v = (self._heads(p) for p in self.in_proj(x).split(self.d_model, dim=-1))
        if rotary is not None:
            q, k = rotary(q, start), rotary(k, start)
        if cache is not None:
            k, v = cache.append(k, v)
        t_k = k.shape[-2]
        if mask is None and causal:
            mask = causal_mask(t, t_k, align="bottom_right", device=x.device)
        p_drop = self.dropout.p if self.training else 0.0
        if self.fused and not need_weights:
            if mask is not None and mask.dtype != torch.bool:
                raise ValueError(f"mask must be a boolean tensor (True = attend), got dtype "
                                 f"{mask.dtype}")
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                                   dropout_p=p_drop)
            self.last_weights = None
        else:
            out, weights = scaled_dot_product_attention(q, k, v, mask, return_weights=True)
            self.last_weights = weights.detach() if need_weights else None
            if p_drop > 0:
                out = self.dropout(weights) @ v
        out = out.transpose(1, 2).reshape(b, t, self.d_model)
        return self.out_proj(out)

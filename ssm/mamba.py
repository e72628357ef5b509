"""Mamba (Gu & Dao 2023): the selective SSM, the Mamba block and a Mamba language model.

**Selective SSM (S6).** Per channel d and state index n, with input u_t and step Δ_t > 0,

    h_t = Ā_t ⊙ h_{t−1} + B̄_t u_t,   y_t = C_t · h_t + D u_t,
    Ā_t = exp(Δ_t A)             (zero-order hold of the diagonal A < 0: exact),
    B̄_t u_t = Δ_t B_t u_t        (the reference implementation's simplification; the exact ZOH
                                  B̄ = (ΔA)⁻¹(exp(ΔA) − 1) ΔB agrees with it to first order
                                  in Δ, and Δ is small),

where Δ_t = softplus(W_Δ x_t + b_Δ), B_t = W_B x_t and C_t = W_C x_t are functions of the input:
that dependence on x_t is the *selection*. An LTI SSM (S4) has the same Ā, B̄, C at every t and
cannot choose what to remember. The recurrence is a scan of h_t = a_t h_{t−1} + b_t with
a_t = Ā_t and b_t = B̄_t u_t, run by :func:`ssm.scan.parallel_scan` (``scan="parallel"``, the
associative scan), :func:`ssm.scan.sequential_scan` (``"sequential"``) or, by default,
``"fused"``: one loop over time that never materialises Ā and B̄u for all steps, with a
hand-written backward, as mamba's CUDA kernel does (on a CPU, where each step's (b, d, n)
block is large, the loop beats the log-depth scan; measured in ``ssm/05_parallel_scan``).

:func:`selective_scan` takes the shapes of mamba's ``selective_scan_ref``: u, Δ (b, d, l);
A (d, n); B, C (b, n, l); D (d,); z (b, d, l); it returns y (b, d, l) (and h_{l−1} (b, d, n)).

**Mamba block** (``MambaBlock``, pre-norm residual x + Mixer(RMSNorm(x)); x (B, L, d_model)):
in-projection to (x, z), each of width E·d_model (E = ``expand``); a causal depthwise conv of
width ``d_conv`` over x; SiLU; the selective SSM with the D skip; the gate y ⊙ SiLU(z); an
out-projection back to d_model. Its recurrent :meth:`MambaBlock.step` keeps the last
d_conv − 1 conv inputs and h (B, E·d_model, d_state): O(1) per token, whatever the length.

**MambaLM**: LMHead embedding → n_layers Mamba blocks → RMSNorm and tied readout, following
the LM protocol of ``autoregressive`` (``block_size = None``; ``init_cache(B)`` holds each
layer's conv window and SSM state), so ``autoregressive.generate(..., kv_cache=True)`` runs the
recurrence one token at a time and gives the same logits as re-running the whole sequence.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from autoregressive.lm_head import LMHead, RMSNorm
from ssm.scan import parallel_scan, sequential_scan
from utils.validation import check_choice, check_int, shape_of

__all__ = ["MambaBlock", "MambaCache", "MambaLM", "SelectiveSSM", "selective_scan"]

SCANS = ("fused", "sequential", "parallel")


def _float(name: str, x: object, shape: tuple) -> torch.Tensor:
    """x if it is a float tensor of ``shape`` (None entries: any size)."""
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.ndim != len(shape) \
            or any(s is not None and s != t for s, t in zip(shape, x.shape)):
        want = tuple("?" if s is None else s for s in shape)
        raise ValueError(f"{name} must be a float tensor of shape {want}, got {shape_of(x)}"
                         + (f" {x.dtype}" if isinstance(x, torch.Tensor) else ""))
    return x


class _FusedSelectiveScan(torch.autograd.Function):
    """The whole selective scan in one loop over time, with its hand-written backward (the
    structure of mamba's CUDA kernel, in PyTorch): each step touches one (b, d, n) block, which
    stays in cache, instead of materialising Ā and B̄u for all l steps. The products with B, C
    are written as multiply-and-sum, not as batched matrix-vector products: on a CPU ``bmm``
    with a vector is the slower of the two (about 1.5× for a Mamba block's forward and backward
    at l = 72, b = 64, d = 128, n = 16; a one-off measurement, not a benchmark).

    Inputs time-major: delta, du = Δ ⊙ u (l, b, d); A (d, n); B, C (l, b, n); h0 (b, d, n).
    Forward: h_t = exp(Δ_t A) h_{t−1} + du_t B_t, y_t = h_t C_t (all h_t kept for the backward).
    Backward with g_t = ∂ℓ/∂h_t = gy_t C_tᵀ + Ā_{t+1} g_{t+1}: ∂ℓ/∂C_t = h_tᵀ gy_t,
    ∂ℓ/∂du_t = g_t B_t, ∂ℓ/∂B_t = g_tᵀ du_t, and with G = g_t ⊙ h_{t−1} ⊙ Ā_t = ∂ℓ/∂(Δ_t A):
    ∂ℓ/∂Δ_t = Σ_n G A, ∂ℓ/∂A = Σ_{t,b} G Δ_t; ∂ℓ/∂h0 = Ā_0 g_0.
    """

    @staticmethod
    def forward(ctx, delta, du, A, B, C, h0):
        H = torch.empty((delta.shape[0],) + h0.shape, dtype=h0.dtype, device=h0.device)
        y = torch.empty_like(du)
        h = h0
        for t in range(delta.shape[0]):
            a = torch.exp(delta[t][:, :, None] * A)                       # Ā_t (b, d, n)
            h = torch.addcmul(du[t][:, :, None] * B[t][:, None, :], a, h, out=H[t])
            torch.sum(h * C[t][:, None, :], -1, out=y[t])                 # y_t = h_t C_t
        ctx.save_for_backward(delta, du, A, B, C, h0, H)
        return y, H[-1].clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, gh_last):
        delta, du, A, B, C, h0, H = ctx.saved_tensors
        g = torch.zeros_like(h0) if gh_last is None else gh_last.clone()
        gy = torch.zeros_like(du) if gy is None else gy.contiguous()
        g_delta, g_du = torch.empty_like(delta), torch.empty_like(du)
        gB, gC, gA = torch.empty_like(B), torch.empty_like(C), torch.zeros_like(A)
        for t in range(delta.shape[0] - 1, -1, -1):
            g.addcmul_(gy[t][:, :, None], C[t][:, None, :])               # + gy_t C_tᵀ
            torch.sum(H[t] * gy[t][:, :, None], 1, out=gC[t])
            torch.sum(g * B[t][:, None, :], -1, out=g_du[t])
            torch.sum(g * du[t][:, :, None], 1, out=gB[t])
            a = torch.exp(delta[t][:, :, None] * A)
            G = g * (H[t - 1] if t else h0) * a                              # ∂ℓ/∂(Δ_t A)
            torch.sum(G * A, -1, out=g_delta[t])
            gA.add_((G * delta[t][:, :, None]).sum(0))
            g.mul_(a)                                                        # → ∂ℓ/∂h_{t−1}
        return g_delta, g_du, gA, gB, gC, g


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                   C: torch.Tensor, D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                   *, delta_bias: torch.Tensor | None = None, delta_softplus: bool = False,
                   h0: torch.Tensor | None = None, return_last_state: bool = False,
                   scan: str = "fused"):
    """The selective SSM of the module docstring, as mamba's ``selective_scan_ref``.

    u, delta: (b, d, l); A: (d, n) real (negative for a stable, decaying state); B, C: (b, n, l);
    D: (d,) skip; z: (b, d, l) gate, y ← y ⊙ SiLU(z); delta_bias: (d,) added to Δ before the
    optional softplus; h0: (b, d, n) state before the first step (default zeros); scan:
    "fused" (one loop over time for the whole selective SSM, with its hand-written backward:
    the fastest on a CPU), "sequential" (:func:`ssm.scan.sequential_scan` over materialised
    Ā, B̄u) or "parallel" (:func:`ssm.scan.parallel_scan`). Returns y (b, d, l), and with
    ``return_last_state`` also h_{l−1} (b, d, n).
    """
    u = _float("u", u, (None, None, None))
    b, d, length = u.shape
    delta = _float("delta", delta, (b, d, length))
    A = _float("A", A, (d, None))
    n = A.shape[1]
    B = _float("B", B, (b, n, length))
    C = _float("C", C, (b, n, length))
    scan = check_choice("scan", scan, SCANS)
    if delta_bias is not None:
        delta = delta + _float("delta_bias", delta_bias, (d,))[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    if h0 is not None:
        h0 = _float("h0", h0, (b, d, n))
    if scan == "fused":
        h0 = u.new_zeros(b, d, n) if h0 is None else h0
        y, h_last = _FusedSelectiveScan.apply(
            *(x.permute(2, 0, 1).contiguous() for x in (delta, delta * u)), A,
            *(x.permute(2, 0, 1).contiguous() for x in (B, C)), h0)
        y = y.permute(1, 2, 0)
    else:   # time first, (l, b, d, n) contiguous: each step of the scan is one block of memory
        a = torch.exp(delta.permute(2, 0, 1)[..., None] * A)             # Ā_t = exp(Δ_t A)
        bu = (delta * u).permute(2, 0, 1)[..., None] * B.permute(2, 0, 1)[:, :, None, :]
        run = parallel_scan if scan == "parallel" else sequential_scan    # B̄_t u_t = Δ_t B_t u_t
        h = run(a, bu, h0, dim=0)                                         # (l, b, d, n)
        y, h_last = torch.einsum("lbdn,bnl->bdl", h, C), h[-1]           # y_t = C_t · h_t
    if D is not None:
        y = y + u * _float("D", D, (d,))[:, None]
    if z is not None:
        y = y * F.silu(_float("z", z, (b, d, length)))
    return (y, h_last) if return_last_state else y


class SelectiveSSM(nn.Module):
    """S6: x (B, L, d_inner) → y (B, L, d_inner) with Δ, B, C computed from x.

    Parameters as mamba's: x_proj (d_inner → dt_rank + 2 d_state, no bias) giving (δ, B, C);
    dt_proj (dt_rank → d_inner) with Δ = softplus(dt_proj(δ)), its bias initialised so that Δ
    starts log-uniform in [dt_min, dt_max]; A = −exp(A_log) with A_log = log(1, …, d_state)
    for every channel (S4D-Real); D = 1.
    """

    def __init__(self, d_inner: int, d_state: int = 16, dt_rank: int | None = None, *,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, scan: str = "fused"):
        super().__init__()
        self.d_inner = check_int("d_inner", d_inner, minimum=1)
        self.d_state = check_int("d_state", d_state, minimum=1)
        self.dt_rank = math.ceil(d_inner / 32) if dt_rank is None \
            else check_int("dt_rank", dt_rank, minimum=1)
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got {dt_min!r}, {dt_max!r}")
        self.scan = check_choice("scan", scan, SCANS)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True)
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))   # softplus⁻¹(dt)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32))
                                  .repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))

    def _dt_B_C(self, x: torch.Tensor):
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return dt @ self.dt_proj.weight.T, B, C        # Δ before its bias and softplus

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The step Δ = softplus(W_Δ x + b_Δ) (..., d_inner) for inputs x (..., d_inner)."""
        return F.softplus(self._dt_B_C(x)[0] + self.dt_proj.bias)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None,
                h0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x, z: (B, L, d_inner); h0: (B, d_inner, d_state). Returns y (B, L, d_inner) and the
        last state (B, d_inner, d_state)."""
        dt, B, C = self._dt_B_C(x)
        y, h = selective_scan(x.transpose(1, 2), dt.transpose(1, 2), -torch.exp(self.A_log),
                              B.transpose(1, 2), C.transpose(1, 2), self.D,
                              None if z is None else z.transpose(1, 2),
                              delta_bias=self.dt_proj.bias, delta_softplus=True, h0=h0,
                              return_last_state=True, scan=self.scan)
        return y.transpose(1, 2), h

    def step(self, x: torch.Tensor, h: torch.Tensor, z: torch.Tensor | None = None):
        """One token: x, z (B, d_inner), h (B, d_inner, d_state) → (y (B, d_inner), new h)."""
        dt, B, C = self._dt_B_C(x)
        dt = F.softplus(dt + self.dt_proj.bias)                              # (B, d_inner)
        h = torch.exp(dt[..., None] * -torch.exp(self.A_log)) * h \
            + (dt * x)[..., None] * B[:, None, :]
        y = (h * C[:, None, :]).sum(-1) + self.D * x
        return (y if z is None else y * F.silu(z)), h


class MambaBlock(nn.Module):
    """x (B, L, d_model) → x + Mixer(RMSNorm(x)), the Mixer as in the module docstring.

    d_state N (16), d_conv (4, the causal conv's width), expand E (2: d_inner = E·d_model),
    dt_rank (default ⌈d_model / 16⌉, mamba's "auto"), scan ("fused", "sequential" or
    "parallel", see :func:`selective_scan`).
    The state for :meth:`forward_with_state` and :meth:`step` is the pair
    (conv (B, d_inner, d_conv − 1): the last conv inputs, h (B, d_inner, d_state)).
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, *,
                 dt_rank: int | None = None, scan: str = "fused"):
        super().__init__()
        self.d_model = check_int("d_model", d_model, minimum=1)
        self.d_conv = check_int("d_conv", d_conv, minimum=1)
        self.expand = check_int("expand", expand, minimum=1)
        self.d_inner = self.expand * self.d_model
        dt_rank = math.ceil(d_model / 16) if dt_rank is None else dt_rank
        self.norm = RMSNorm(d_model)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner)
        self.ssm = SelectiveSSM(self.d_inner, d_state, dt_rank, scan=scan)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def init_state(self, batch_size: int, like: torch.Tensor):
        """Zeros: (conv (B, d_inner, d_conv − 1), h (B, d_inner, d_state)), like's device/dtype."""
        return (like.new_zeros(batch_size, self.d_inner, self.d_conv - 1),
                like.new_zeros(batch_size, self.d_inner, self.ssm.d_state))

    def _check(self, x: object, ndim: int) -> torch.Tensor:
        shape = (None, None, self.d_model) if ndim == 3 else (None, self.d_model)
        return _float("x", x, shape)

    def _check_state(self, state, batch: int, like: torch.Tensor):
        if state is None:
            return self.init_state(batch, like)
        want = ((batch, self.d_inner, self.d_conv - 1), (batch, self.d_inner, self.ssm.d_state))
        if not isinstance(state, tuple) or len(state) != 2 \
                or any(not isinstance(s, torch.Tensor) or tuple(s.shape) != w
                       for s, w in zip(state, want)):
            got = tuple(shape_of(s) for s in state) if isinstance(state, tuple) \
                else shape_of(state)
            raise ValueError(f"state must be (conv {want[0]}, h {want[1]}), got {got}")
        return state

    def forward_with_state(self, x: torch.Tensor, state=None):
        """Continue from ``state`` (None: zeros): x (B, L, d_model) → (y (B, L, d_model),
        the state after the last token)."""
        x = self._check(x, 3)
        conv_state, h0 = self._check_state(state, x.shape[0], x)
        xs, z = self.in_proj(self.norm(x)).chunk(2, dim=-1)                 # (B, L, d_inner)
        window = torch.cat([conv_state, xs.transpose(1, 2)], dim=-1)       # (B, d_inner, K−1+L)
        xc = F.silu(self.conv1d(window)).transpose(1, 2)                   # causal conv, (B, L, ·)
        y, h = self.ssm(xc, z, h0)
        new_conv = window[..., window.shape[-1] - (self.d_conv - 1):]
        return x + self.out_proj(y), (new_conv, h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_state(x)[0]

    def step(self, x: torch.Tensor, state=None):
        """One token x (B, d_model) → (y (B, d_model), new state): the recurrence, O(1) in the
        length; equal to :meth:`forward` on the whole sequence at that position."""
        x = self._check(x, 2)
        conv_state, h = self._check_state(state, x.shape[0], x)
        xs, z = self.in_proj(self.norm(x)).chunk(2, dim=-1)                 # (B, d_inner)
        window = torch.cat([conv_state, xs[..., None]], dim=-1)            # (B, d_inner, K)
        xc = F.silu((window * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias)
        y, h = self.ssm.step(xc, h, z)
        return x + self.out_proj(y), (window[..., 1:], h)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, d_inner={self.d_inner}, d_conv={self.d_conv}"


class MambaCache:
    """The cache of :class:`MambaLM`: each layer's (conv window, SSM state) after the tokens fed
    so far (``None`` before the first call: zeros). ``length`` counts the tokens seen. Its size
    does not grow with the length (a KV cache does)."""

    def __init__(self, batch_size: int, n_layers: int):
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.states: list = [None] * check_int("n_layers", n_layers, minimum=1)
        self.length = 0


class MambaLM(nn.Module):
    """LMHead embedding → ``n_layers`` :class:`MambaBlock` → RMSNorm → tied readout.

    ``model(idx (B, T) int64) -> logits (B, T, V)``; ``model(idx, cache=model.init_cache(B))``
    continues from the cache's states, returns the new tokens' logits and updates the cache in
    place (one token: the recurrent :meth:`MambaBlock.step`; more: the parallel pass from the
    state). Out-projections are scaled by 1/√n_layers at initialisation, as in mamba.
    """

    block_size = None  # unbounded context: the state summarises the prefix

    def __init__(self, vocab_size: int, d_model: int, n_layers: int, d_state: int = 16,
                 d_conv: int = 4, expand: int = 2, *, scan: str = "fused"):
        super().__init__()
        self.vocab_size = check_int("vocab_size", vocab_size, minimum=2)
        self.d_model = check_int("d_model", d_model, minimum=1)
        self.n_layers = check_int("n_layers", n_layers, minimum=1)
        self.lm = LMHead(self.vocab_size, self.d_model, norm="rms")
        self.layers = nn.ModuleList(MambaBlock(d_model, d_state, d_conv, expand, scan=scan)
                                    for _ in range(self.n_layers))
        with torch.no_grad():
            for layer in self.layers:
                layer.out_proj.weight /= math.sqrt(self.n_layers)

    def init_cache(self, batch_size: int) -> MambaCache:
        return MambaCache(batch_size, self.n_layers)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, cache: MambaCache | None = None) -> torch.Tensor:
        x = self.lm.embed(idx)
        if idx.shape[1] < 1:
            raise ValueError("idx must hold at least one token per row, got T = 0")
        if cache is None:
            for layer in self.layers:
                x = layer(x)
            return self.lm(x)
        if not isinstance(cache, MambaCache) or len(cache.states) != self.n_layers:
            raise ValueError(f"cache must come from this model's init_cache, got "
                             f"{type(cache).__name__}")
        if cache.batch_size != idx.shape[0]:
            raise ValueError(f"the cache holds {cache.batch_size} sequences but idx has "
                             f"{idx.shape[0]} rows")
        for i, layer in enumerate(self.layers):
            if idx.shape[1] == 1:
                y, cache.states[i] = layer.step(x[:, 0], cache.states[i])
                x = y[:, None]
            else:
                x, cache.states[i] = layer.forward_with_state(x, cache.states[i])
        cache.length += idx.shape[1]
        return self.lm(x)

    def extra_repr(self) -> str:
        return f"n_layers={self.n_layers}, block_size=None"

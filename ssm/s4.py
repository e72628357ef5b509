"""S4D: the diagonal structured state space (Gu, Gupta, Goel & Ré 2022), its block, a sequence
classifier and a language model.

Each of H channels runs its own single-input single-output SSM with a complex diagonal
A = diag(A_0 … A_{N'−1}) (N' = N/2 modes; the other N/2 are their complex conjugates, so the
output is real). ZOH with a learned step Δ_h = exp(log_dt_h) gives, elementwise,

    Ā = e^{ΔA},   B̄ = A⁻¹(e^{ΔA} − 1) B,   x_k = Ā x_{k−1} + B̄ u_k,   y_k = 2 Re(C x_k) + D u_k,

and unrolling the recurrence from x_{−1} = 0 gives the convolution kernel (the Vandermonde
product of S4D)

    K_k = 2 Re( Σ_n C_n B̄_n Ā_n^k ),  k = 0 … L−1,      y = K ∗ u + D u   (causal),

computed for all L at once and applied by the FFT convolution of ``ssm.lti`` in O(L log L).
Initialisations of A (:func:`s4d_A`): S4D-Lin A_n = −½ + iπn; S4D-Inv
A_n = −½ + i (N/π)(N/(2n+1) − 1), a closed-form fit to the spectrum of HiPPO-LegS's normal part
(S4D-Lin takes the frequencies of a Fourier basis instead); both keep S4's damping −½ and a spread
of frequencies, so the layer starts with a long, structured memory. Δ starts log-uniform in
[dt_min, dt_max].
The layer keeps Re A < 0 by learning log(−Re A), and (as in S4D's reference code) absorbs B
into C: B = 1 is a buffer. Shapes: log_dt (H,); A, B, C (H, N'); K (H, L); u, y (B, L, H);
the recurrent state x (B, H, N') complex.

The book stops at S4D and does not build S4's DPLR parameterisation with the Cauchy kernel:
DPLR exists to use the HiPPO matrix itself, which is not stably diagonalisable (its
eigenvector matrix has a condition number exponential in N); S4D drops the low-rank term and
matches S4 on most tasks (Gu et al. 2022), with a kernel that is two lines of code.

Shared by every model here: :class:`S4Block` (pre-norm residual x + Dropout(mix(GELU(S4D(LN(x))))),
mix a position-wise linear layer to 2H followed by a GLU, as in S4's reference code),
:class:`S4Classifier` and :class:`S4LM` (the LM protocol of ``autoregressive``, with its
:class:`~autoregressive.LMHead`; the cache holds each layer's state x, so generation costs
O(1) per token).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from autoregressive.lm_head import LMHead
from ssm.discretization import check_hurwitz, discretize
from ssm.lti import causal_conv
from utils.validation import check_choice, check_int, check_positive, shape_of

__all__ = ["S4D_INITS", "S4Block", "S4Cache", "S4Classifier", "S4D", "S4LM", "s4d_A",
           "s4d_kernel", "ssm_param_groups"]

S4D_INITS = ("lin", "inv")
SSM_PARAMETERS = ("log_dt", "log_A_real", "A_imag")  # trained with a small lr, no weight decay


def s4d_A(H: int, N: int, init: str = "lin", *, dtype: torch.dtype = torch.float32
          ) -> torch.Tensor:
    """The S4D initialisation of A for H channels and state size N (N even): (H, N/2) complex,
    the same for every channel. "lin": A_n = −½ + iπn; "inv": A_n = −½ + i(N/π)(N/(2n+1) − 1)."""
    H = check_int("H", H, minimum=1)
    N = check_int("N", N, minimum=2)
    if N % 2:
        raise ValueError(f"N (the state size) must be even (conjugate pairs), got {N}")
    init = check_choice("init", init, S4D_INITS)
    n = torch.arange(N // 2, dtype=dtype)
    imag = math.pi * n if init == "lin" else N / math.pi * (N / (2 * n + 1) - 1)
    return torch.complex(torch.full_like(n, -0.5), imag).expand(H, -1).clone()


def _vandermonde(A_bar: torch.Tensor, L: int) -> torch.Tensor:
    """Ā^k for k = 0 … L−1: (..., N') → (..., N', L), as exp(k log Ā) (log is ΔA up to 2πi)."""
    k = torch.arange(L, device=A_bar.device, dtype=A_bar.real.dtype)
    return torch.exp(torch.log(A_bar)[..., None] * k)


def _kernel(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, L: int
            ) -> torch.Tensor:
    A_bar, B_bar = discretize(A, B, dt, "zoh", diagonal=True)          # (H, N') each
    V = _vandermonde(A_bar, L)                                           # (H, N', L)
    return 2 * torch.einsum("hn,hnl->hl", C * B_bar, V).real            # K_k = 2Re(C Ā^k B̄)


def _complex(name: str, X: object, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    if not isinstance(X, torch.Tensor) or not X.dtype.is_complex or X.ndim != 2 \
            or (shape is not None and tuple(X.shape) != shape):
        want = "(H, N')" if shape is None else str(shape)
        raise ValueError(f"{name} must be a complex tensor {want}, got {shape_of(X)}"
                         + (f" of dtype {X.dtype}" if isinstance(X, torch.Tensor) else ""))
    return X


def s4d_kernel(log_dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, L: int
               ) -> torch.Tensor:
    """The S4D convolution kernel K (H, L), K_k = 2 Re(Σ_n C_n B̄_n Ā_n^k), with (Ā, B̄) the ZOH
    of the diagonal A at Δ = exp(log_dt) (``ssm.discretization.discretize``).

    log_dt (H,) real; A, B, C (H, N') complex, Re A < 0 (a decaying kernel); L ≥ 1."""
    A = _complex("A", A)
    H = A.shape[0]
    B, C = _complex("B", B, tuple(A.shape)), _complex("C", C, tuple(A.shape))
    if not isinstance(log_dt, torch.Tensor) or not log_dt.dtype.is_floating_point \
            or tuple(log_dt.shape) != (H,):
        raise ValueError(f"log_dt must be a real float tensor ({H},), one step per channel, got "
                         f"{shape_of(log_dt)}")
    L = check_int("L", L, minimum=1)
    check_hurwitz("A", A, diagonal=True)
    return _kernel(torch.exp(log_dt), A, B, C, L)


class S4D(nn.Module):
    """The S4D layer: u (B, L, H) → y (B, L, H), y = K ∗ u + D u per channel (module docstring).

    Args:
        d_model: H channels; d_state: N, the state size of each channel's SSM (even; N/2
            complex modes are stored); dt_min, dt_max: the range of the log-uniform initial Δ;
        init: "lin" (S4D-Lin) or "inv" (S4D-Inv).

    ``forward(u)`` convolves (the training path); ``forward_with_state(u, x0)`` continues from
    a state and returns the new one (chunked inference, the LM cache); ``step(u_t, x)`` is one
    step of the recurrence. All three compute the same function.
    """

    def __init__(self, d_model: int, d_state: int = 64, dt_min: float = 1e-3,
                 dt_max: float = 1e-1, *, init: str = "lin"):
        super().__init__()
        self.d_model = H = check_int("d_model", d_model, minimum=1)
        self.d_state = check_int("d_state", d_state, minimum=2)
        dt_min, dt_max = check_positive("dt_min", dt_min), check_positive("dt_max", dt_max)
        if dt_min > dt_max:
            raise ValueError(f"dt_min ({dt_min}) must be at most dt_max ({dt_max})")
        self.init = init
        A = s4d_A(H, self.d_state, init)
        self.log_dt = nn.Parameter(torch.rand(H) * (math.log(dt_max) - math.log(dt_min))
                                   + math.log(dt_min))
        self.log_A_real = nn.Parameter(torch.log(-A.real))             # Re A = −exp(·) < 0
        self.A_imag = nn.Parameter(A.imag.clone())
        self.register_buffer("B", torch.view_as_real(torch.ones_like(A)).clone())
        self.C = nn.Parameter(torch.view_as_real(torch.randn(H, self.d_state // 2,
                                                             dtype=torch.cfloat)).clone())
        self.D = nn.Parameter(torch.randn(H))

    @property
    def A(self) -> torch.Tensor:
        """(H, N') complex, Re A < 0 by construction."""
        return torch.complex(-torch.exp(self.log_A_real), self.A_imag)

    def kernel(self, L: int) -> torch.Tensor:
        """K (H, L)."""
        return _kernel(torch.exp(self.log_dt), self.A, torch.view_as_complex(self.B),
                       torch.view_as_complex(self.C), L)

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(Ā, B̄), each (H, N') complex."""
        return discretize(self.A, torch.view_as_complex(self.B), torch.exp(self.log_dt), "zoh",
                          diagonal=True)

    def _check(self, u: object) -> torch.Tensor:
        if not isinstance(u, torch.Tensor) or not u.dtype.is_floating_point or u.ndim != 3 \
                or u.shape[-1] != self.d_model or u.shape[1] < 1:
            raise ValueError(f"u must be a float tensor (B, L, H) with L >= 1 and H = "
                             f"{self.d_model}, got {shape_of(u)}")
        return u

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        u = self._check(u)
        K = self.kernel(u.shape[1]).to(u.dtype)                          # (H, L)
        y = causal_conv(u.transpose(1, 2), K)                            # (B, H, L)
        return y.transpose(1, 2) + self.D * u

    def init_state(self, batch_size: int) -> torch.Tensor:
        """The zero state x (B, H, N') complex."""
        return torch.zeros(check_int("batch_size", batch_size, minimum=1), self.d_model,
                           self.d_state // 2, dtype=torch.view_as_complex(self.C).dtype,
                           device=self.C.device)

    def _check_state(self, x: object, batch: int) -> torch.Tensor:
        shape = (batch, self.d_model, self.d_state // 2)
        if not isinstance(x, torch.Tensor) or not x.dtype.is_complex or tuple(x.shape) != shape:
            raise ValueError(f"the state x must be a complex tensor {shape}, got {shape_of(x)}")
        return x

    def forward_with_state(self, u: torch.Tensor, x0: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """y (B, L, H) and the state x_{L−1} (B, H, N') after the chunk u (B, L, H), starting
        from x0 (the state before it; None = zeros):

            y_k = (K ∗ u)_k + D u_k + 2 Re(Σ_n C_n Ā_n^{k+1} x0_n),
            x_{L−1} = Ā^L x0 + Σ_j Ā^{L−1−j} B̄ u_j.
        """
        u = self._check(u)
        B_, L, _ = u.shape
        x0 = self.init_state(B_) if x0 is None else self._check_state(x0, B_)
        A_bar, B_bar = self.discrete()
        C = torch.view_as_complex(self.C)
        V = _vandermonde(A_bar, L + 1)                                   # Ā^0 … Ā^L
        K = 2 * torch.einsum("hn,hnl->hl", C * B_bar, V[..., :L]).real
        uc = u.transpose(1, 2)                                           # (B, H, L)
        y = causal_conv(uc, K.to(u.dtype)) + self.D[:, None] * uc
        y = y + 2 * torch.einsum("hn,bhn,hnl->bhl", C, x0, V[..., 1:]).real.to(u.dtype)
        x = V[..., L] * x0 + B_bar * torch.einsum("hnl,bhl->bhn", V[..., :L].flip(-1),
                                                  uc.to(V.dtype))
        return y.transpose(1, 2), x

    def step(self, u_t: torch.Tensor, x: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of the recurrence: x = Ā x + B̄ u_t, y_t = 2 Re(C x) + D u_t;
        u_t (B, H), x (B, H, N') (None = zeros) → (y_t (B, H), x)."""
        if not isinstance(u_t, torch.Tensor) or not u_t.dtype.is_floating_point \
                or u_t.ndim != 2 or u_t.shape[1] != self.d_model:
            raise ValueError(f"u_t must be a float tensor (B, {self.d_model}), got "
                             f"{shape_of(u_t)}")
        x = self.init_state(u_t.shape[0]) if x is None else self._check_state(x, u_t.shape[0])
        A_bar, B_bar = self.discrete()
        x = A_bar * x + B_bar * u_t[..., None]
        y = 2 * (torch.view_as_complex(self.C) * x).real.sum(-1) + self.D * u_t
        return y.to(u_t.dtype), x

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, d_state={self.d_state}, init={self.init!r}"


class S4Block(nn.Module):
    """x + Dropout(mix(GELU(S4D(LayerNorm(x))))), mix = Linear(H, 2H) then GLU (a gate per
    channel); (B, L, H) → (B, L, H). ``forward_with_state(x, s)`` passes the S4D state on."""

    def __init__(self, d_model: int, d_state: int = 64, dropout: float = 0.0, **s4d_kwargs):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        self.norm = nn.LayerNorm(d_model)
        self.s4 = S4D(d_model, d_state, **s4d_kwargs)
        self.mix = nn.Linear(d_model, 2 * d_model)
        self.drop = nn.Dropout(dropout)

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        return self.drop(F.glu(self.mix(F.gelu(y)), dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self._out(self.s4(self.norm(x)))

    def forward_with_state(self, x: torch.Tensor, state: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        y, state = self.s4.forward_with_state(self.norm(x), state)
        return x + self._out(y), state


class S4Classifier(nn.Module):
    """Linear encoder → n_layers S4Blocks → LayerNorm → mean over time → linear decoder:
    x (B, L, d_input) → logits (B, n_classes)."""

    def __init__(self, d_input: int, d_model: int, n_layers: int, n_classes: int,
                 d_state: int = 64, dropout: float = 0.0, **s4d_kwargs):
        super().__init__()
        self.d_input = check_int("d_input", d_input, minimum=1)
        check_int("n_layers", n_layers, minimum=1)
        self.encoder = nn.Linear(self.d_input, check_int("d_model", d_model, minimum=1))
        self.blocks = nn.ModuleList(S4Block(d_model, d_state, dropout, **s4d_kwargs)
                                    for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.decoder = nn.Linear(d_model, check_int("n_classes", n_classes, minimum=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.ndim != 3 \
                or x.shape[-1] != self.d_input:
            raise ValueError(f"x must be a float tensor (B, L, {self.d_input}) (a pixel sequence "
                             f"(B, L) needs .unsqueeze(-1)), got {shape_of(x)}")
        h = self.encoder(x)
        for block in self.blocks:
            h = block(h)
        return self.decoder(self.norm(h).mean(dim=1))


class S4Cache:
    """The cache of :class:`S4LM`: each layer's S4D state x (B, H, N') complex (None before the
    first call) and ``length``, the tokens seen. Its size does not grow with the length."""

    def __init__(self, batch_size: int, n_layers: int):
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.states: list[torch.Tensor | None] = [None] * n_layers
        self.length = 0


class S4LM(nn.Module):
    """An S4D language model: LMHead embedding → n_layers S4Blocks → LMHead readout (final
    LayerNorm, tied weights). ``model(idx (B, T)) -> logits (B, T, V)``; ``block_size`` is None
    (unbounded: a causal convolution as long as the input); with ``cache=model.init_cache(B)``
    each call continues from the cached states and returns the new tokens' logits only."""

    block_size = None

    def __init__(self, vocab_size: int, d_model: int, n_layers: int, d_state: int = 64,
                 dropout: float = 0.0, *, tie_weights: bool = True, **s4d_kwargs):
        super().__init__()
        self.head = LMHead(vocab_size, d_model, norm="layer", tie_weights=tie_weights)
        self.n_layers = check_int("n_layers", n_layers, minimum=1)
        self.blocks = nn.ModuleList(S4Block(d_model, d_state, dropout, **s4d_kwargs)
                                    for _ in range(self.n_layers))

    @property
    def vocab_size(self) -> int:
        return self.head.vocab_size

    def init_cache(self, batch_size: int) -> S4Cache:
        return S4Cache(batch_size, self.n_layers)

    def forward(self, idx: torch.Tensor, cache: S4Cache | None = None) -> torch.Tensor:
        h = self.head.embed(idx)
        if idx.shape[1] < 1:
            raise ValueError("idx must hold at least one token per row, got T = 0")
        if cache is None:
            for block in self.blocks:
                h = block(h)
            return self.head(h)
        if not isinstance(cache, S4Cache) or cache.batch_size != idx.shape[0]:
            raise ValueError(f"cache must come from init_cache({idx.shape[0]}), got "
                             f"{type(cache).__name__}"
                             + (f" for {cache.batch_size} rows" if isinstance(cache, S4Cache)
                                else ""))
        for i, block in enumerate(self.blocks):
            h, cache.states[i] = block.forward_with_state(h, cache.states[i])
        cache.length += idx.shape[1]
        return self.head(h)


def ssm_param_groups(model: nn.Module, *, lr: float, weight_decay: float = 0.0,
                     ssm_lr: float = 1e-3) -> list[dict]:
    """AdamW parameter groups as in S4's recipe: every S4D's Δ and A (log_dt, log_A_real,
    A_imag) at lr = min(lr, ssm_lr) without weight decay, the rest at lr and weight_decay."""
    lr, ssm_lr = check_positive("lr", lr), check_positive("ssm_lr", ssm_lr)
    ssm = {id(getattr(m, name)) for m in model.modules() if isinstance(m, S4D)
           for name in SSM_PARAMETERS}
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if id(p) not in ssm], "lr": lr,
             "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) in ssm], "lr": min(lr, ssm_lr),
             "weight_decay": 0.0}]

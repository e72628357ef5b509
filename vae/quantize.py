"""Vector quantisation and the VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017; 05_vq_vae).

A codebook e ∈ R^{K×D} of K codes. Each encoder output vector z_e ∈ R^D (one per position of a
grid) is replaced by its nearest code in squared Euclidean distance,

    k* = argmin_k ‖z_e − e_k‖² = argmin_k (‖e_k‖² − 2 ⟨z_e, e_k⟩),      z_q = e_{k*},

and the gradient is copied straight through the non-differentiable lookup, ∂z_q/∂z_e = I:
z_q = z_e + sg[e_{k*} − z_e] in the paper; here written e_{k*}·sg + (z_e − sg[z_e]), the same
value and gradient, with a forward value that is exactly the code (no rounding). The losses,

    codebook   = ‖sg[z_e] − e_{k*}‖²   (moves the codes to the encoder outputs),
    commitment = ‖z_e − sg[e_{k*}]‖²   (keeps the encoder close to its codes),
    loss       = codebook + β · commitment,          β = 0.25 in the paper,

are means over positions and the D coordinates (mean squared errors, as in the reference code).

EMA codebook (``ema=True``; paper appendix A.1, Razavi et al. 2019): no codebook loss; with n_k
the number of vectors assigned to code k in the batch and s_k their sum, at each training step

    N_k ← γ N_k + (1−γ) n_k,      m_k ← γ m_k + (1−γ) s_k,      (γ = ``decay``)
    Ñ_k = (N_k + ε) / (Σ_j N_j + K ε) · Σ_j N_j       (Laplace smoothing: no division by 0),
    e_k = m_k / Ñ_k.

The state starts at N_k = 1, m_k = e_k (as if each code had once been chosen by its own initial
vector), not at 0: from m_k = 0, N_k = 0 a code unused in the first batch would be divided by
the smoothing ε alone and thrown to a norm ~ 1/ε, dead for good. N is kept in both modes: it is
the usage estimate for dead-code restarts (``restart_dead``): in training mode, after the update,
every code with N_k < ``dead_threshold`` is re-initialised to a random encoder output of the
current batch, with N_k = 1, m_k = e_k (Dhariwal et al. 2020, Jukebox: threshold 1).

Codebook usage in a batch: p_k = n_k / Σ n, perplexity = exp(−Σ_k p_k log p_k) ∈ [1, K] (K for
uniform usage, 1 for one code), and the number of codes used.

Shapes: z_e ``(B, D, *grid)`` channels-first, e.g. ``(B, D, h, w)``, or ``(B, D)``; indices
``(B, *grid)`` int64; z_q like z_e. Images x ``(B, C, S, S)`` in [−1, 1].
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from utils.validation import check_int, check_positive, shape_of

__all__ = ["VQVAE", "Quantized", "VQVAEOutput", "VectorQuantizer", "digits_vqvae"]


class Quantized(NamedTuple):
    """The output of :class:`VectorQuantizer`: z_q like z_e; indices ``(B, *grid)`` int64;
    ``loss``, ``codebook_loss`` (0 with EMA), ``commitment_loss`` and ``perplexity`` scalars;
    ``codes_used`` an int64 scalar."""

    z_q: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    perplexity: torch.Tensor
    codes_used: torch.Tensor


def _check_unit_interval(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number in the open interval (0, 1), got {value!r}")
    return float(value)


class VectorQuantizer(nn.Module):
    """Nearest-code quantisation with a straight-through gradient (formulas in the module
    docstring).

    Args:
        num_codes: K ≥ 1; dim: D ≥ 1, the code (channel) dimension.
        beta: β ≥ 0, the weight of the commitment loss.
        ema: update the codebook by exponential moving averages instead of the codebook loss
            (the codebook is then a parameter with ``requires_grad=False``).
        decay: γ ∈ (0, 1) of the moving averages; eps: ε > 0 of the Laplace smoothing.
        restart_dead: re-initialise codes whose usage N_k < ``dead_threshold`` (> 0) to random
            encoder outputs of the batch (training mode only; either codebook mode).

    Buffers (saved in ``state_dict``): ``cluster_size`` N ``(K,)`` (the usage estimate, kept in
    both modes), ``embed_sum`` m ``(K, D)`` (read only with ``ema=True``). Restarts draw the
    encoder outputs with torch's global generator (seed it with ``torch.manual_seed``).
    """

    def __init__(self, num_codes: int, dim: int, beta: float = 0.25, ema: bool = False,
                 decay: float = 0.99, eps: float = 1e-5, restart_dead: bool = False,
                 dead_threshold: float = 1.0):
        super().__init__()
        self.num_codes = check_int("num_codes", num_codes, minimum=1)
        self.dim = check_int("dim", dim, minimum=1)
        if isinstance(beta, bool) or not isinstance(beta, numbers.Real) \
                or not math.isfinite(beta) or beta < 0:
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        self.beta, self.ema, self.restart_dead = float(beta), bool(ema), bool(restart_dead)
        self.decay = _check_unit_interval("decay", decay)
        self.eps = check_positive("eps", eps)
        self.dead_threshold = check_positive("dead_threshold", dead_threshold)
        codebook = torch.empty(self.num_codes, self.dim).uniform_(-1 / self.num_codes,
                                                                  1 / self.num_codes)
        self.codebook = nn.Parameter(codebook, requires_grad=not self.ema)
        self.register_buffer("cluster_size", torch.ones(self.num_codes))
        self.register_buffer("embed_sum", codebook.clone())

    def extra_repr(self) -> str:
        return (f"num_codes={self.num_codes}, dim={self.dim}, beta={self.beta}, ema={self.ema}, "
                f"restart_dead={self.restart_dead}")

    def _flatten(self, z_e: object) -> torch.Tensor:
        """z_e ``(B, D, *grid)`` → ``(B·∏grid, D)``."""
        if not isinstance(z_e, torch.Tensor) or not z_e.dtype.is_floating_point \
                or z_e.ndim < 2 or z_e.shape[1] != self.dim or z_e.numel() == 0:
            raise ValueError(f"z_e must be a non-empty float tensor of shape (B, {self.dim}, "
                             f"*grid), e.g. (B, {self.dim}, H, W) or (B, {self.dim}), got "
                             f"{shape_of(z_e)}")
        return z_e.movedim(1, -1).reshape(-1, self.dim)

    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """The indices ``(B, *grid)`` int64 of the nearest codes to z_e ``(B, D, *grid)``."""
        flat = self._flatten(z_e)
        e = self.codebook.detach().to(flat.dtype)
        # ‖z − e_k‖² = ‖z‖² − 2⟨z, e_k⟩ + ‖e_k‖²; ‖z‖² does not change the argmin
        dist = e.pow(2).sum(1) - 2 * flat.detach() @ e.T
        return dist.argmin(1).reshape(z_e.shape[:1] + z_e.shape[2:])

    def dequantize(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes e_k for indices ``(B, *grid)`` int64 in 0..K−1 → ``(B, D, *grid)``."""
        if not isinstance(indices, torch.Tensor) or indices.dtype != torch.int64 \
                or indices.ndim < 1:
            raise ValueError(f"indices must be an int64 tensor of shape (B, *grid), got "
                             f"{shape_of(indices)}"
                             + (f" of dtype {indices.dtype}" if isinstance(indices, torch.Tensor)
                                else ""))
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.num_codes):
            raise ValueError(f"indices must lie in 0..{self.num_codes - 1}, got values in "
                             f"{indices.min().item()}..{indices.max().item()}")
        return F.embedding(indices, self.codebook).movedim(-1, 1)

    def forward(self, z_e: torch.Tensor) -> Quantized:
        """Quantise z_e ``(B, D, *grid)``; in training mode also update the EMA state (and the
        codebook with ``ema=True``) and restart dead codes. The returned z_q and losses use the
        codebook as it was before the update."""
        flat = self._flatten(z_e)
        idx = self.nearest(z_e).reshape(-1)
        e = self.codebook.to(flat.dtype)[idx]                                   # (N, D)
        codebook_loss = (flat.new_zeros(()) if self.ema
                         else F.mse_loss(e, flat.detach()))
        commitment_loss = F.mse_loss(flat, e.detach())
        z_q = e.detach() + (flat - flat.detach())                 # value e, ∂z_q/∂z_e = I
        counts = torch.bincount(idx, minlength=self.num_codes).to(flat.dtype)
        p = counts / counts.sum()
        perplexity = torch.exp(-torch.special.xlogy(p, p).sum())
        if self.training:
            self._update(flat.detach(), idx, counts)
        grid = z_e.shape[:1] + z_e.shape[2:]
        return Quantized(z_q.reshape(*grid, self.dim).movedim(-1, 1), idx.reshape(grid),
                         codebook_loss + self.beta * commitment_loss, codebook_loss,
                         commitment_loss, perplexity, (counts > 0).sum())

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, idx: torch.Tensor, counts: torch.Tensor) -> None:
        gamma, n = self.decay, self.cluster_size
        n.mul_(gamma).add_(counts.to(n.dtype), alpha=1 - gamma)
        if self.ema:
            sums = torch.zeros_like(self.embed_sum).index_add_(0, idx, flat.to(n.dtype))
            self.embed_sum.mul_(gamma).add_(sums, alpha=1 - gamma)
            total = n.sum()
            smoothed = (n + self.eps) / (total + self.num_codes * self.eps) * total
            self.codebook.copy_(self.embed_sum / smoothed[:, None])
        if self.restart_dead:
            dead = (n < self.dead_threshold).nonzero().squeeze(1)
            if dead.numel():
                pick = torch.randint(flat.shape[0], (dead.numel(),), device=flat.device)
                fresh = flat[pick].to(self.codebook.dtype)
                self.codebook[dead] = fresh
                self.embed_sum[dead] = fresh
                n[dead] = 1.0


class VQVAEOutput(NamedTuple):
    """x_hat like x; ``quantized`` the :class:`Quantized` record; ``reconstruction_loss`` the
    MSE ‖x − x̂‖² (mean over pixels) and ``loss`` = reconstruction_loss + quantized.loss."""

    x_hat: torch.Tensor
    quantized: Quantized
    reconstruction_loss: torch.Tensor
    loss: torch.Tensor


class VQVAE(nn.Module):
    """x → z_e = encoder(x) ``(B, D, h, w)`` → quantizer → z_q → x̂ = decoder(z_q).

    Trained on loss = MSE(x, x̂) + codebook + β · commitment (a Gaussian likelihood with fixed
    variance, up to constants). ``encode_indices`` gives the code grid ``(B, h, w)`` that a
    prior (:class:`vae.pixelcnn.PixelCNN`) models; ``decode_indices`` maps a grid to images.
    """

    def __init__(self, encoder: nn.Module, quantizer: VectorQuantizer, decoder: nn.Module):
        super().__init__()
        if not isinstance(quantizer, VectorQuantizer):
            raise ValueError(f"quantizer must be a VectorQuantizer, got {type(quantizer).__name__}")
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder

    def forward(self, x: torch.Tensor) -> VQVAEOutput:
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.ndim < 2:
            raise ValueError(f"x must be a float tensor of images (B, C, H, W), got "
                             f"{shape_of(x)}")
        q = self.quantizer(self.encoder(x))
        x_hat = self.decoder(q.z_q)
        rec = F.mse_loss(x_hat, x)
        return VQVAEOutput(x_hat, q, rec, rec + q.loss)

    @torch.no_grad()
    def encode_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Images x ``(B, C, H, W)`` → code indices ``(B, h, w)`` int64 (no EMA update)."""
        return self.quantizer.nearest(self.encoder(x))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices ``(B, h, w)`` int64 → images ``(B, C, H, W)``."""
        return self.decoder(self.quantizer.dequantize(indices))


def _residual(width: int) -> nn.Module:
    return _Residual(nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(width, width, 1)))


class _Residual(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def digits_vqvae(num_codes: int = 32, dim: int = 16, grid: int = 4, size: int = 16,
                 channels: int = 1, hidden: int = 64, **quantizer_kwargs) -> VQVAE:
    """A conv VQ-VAE for small images (``size`` 16: digits padded to 16×16, in [−1, 1]).

    Encoder: log2(size / grid) strided 4×4 convolutions (×½ each), a residual block, a 1×1
    convolution to D channels; decoder: the mirror image with transposed convolutions and a tanh
    output. ``grid`` must divide ``size`` by a power of two ≥ 2 (16 → 8 or 4).
    ``quantizer_kwargs`` go to :class:`VectorQuantizer` (beta, ema, decay, restart_dead, …).
    """
    size, grid = check_int("size", size, minimum=2), check_int("grid", grid, minimum=1)
    channels, hidden = check_int("channels", channels, minimum=1), check_int("hidden", hidden,
                                                                             minimum=1)
    ratio = size // grid
    if size % grid or ratio < 2 or ratio & (ratio - 1):
        raise ValueError(f"size / grid must be a power of two >= 2, got size={size}, "
                         f"grid={grid}")
    steps = ratio.bit_length() - 1
    quantizer = VectorQuantizer(num_codes, dim, **quantizer_kwargs)
    enc: list[nn.Module] = []
    width = channels
    for i in range(steps):
        enc += [nn.Conv2d(width, hidden, 4, stride=2, padding=1)] + ([nn.ReLU()] if i < steps - 1
                                                                     else [])
        width = hidden
    enc += [_residual(hidden), nn.ReLU(), nn.Conv2d(hidden, quantizer.dim, 1)]
    dec: list[nn.Module] = [nn.Conv2d(quantizer.dim, hidden, 3, padding=1), _residual(hidden)]
    for i in range(steps):
        last = i == steps - 1
        dec += [nn.ReLU(), nn.ConvTranspose2d(hidden, channels if last else hidden, 4, stride=2,
                                              padding=1)]
    return VQVAE(nn.Sequential(*enc), quantizer, nn.Sequential(*dec, nn.Tanh()))

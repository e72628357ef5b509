"""Encoder-based GAN inversion: a network E: images -> latents that amortises argmin_z.

Optimisation-based inversion (:func:`evaluation.invert`) solves z*(x) = argmin_z L(G(z), x)
afresh for every x, hundreds of generator passes each. An encoder learns the map x -> z*(x)
once, from samples of the generator itself (it has no other labelled pairs): draw z ~ N(0, I),
render x̃ = G(z), and regress z on x̃ (*latent regression*),

    L_E = (1/d) ‖E(x̃) − z‖²  +  beta · (1/P) ‖G(E(x_r)) − x_r‖²,                          (2)

averaged over a batch; the optional second term (beta > 0) asks for a good *reconstruction* of
x_r: real images when ``real`` is given (so E also learns the real data, which G renders only
approximately), else the generated x̃. Inverting is then one forward pass. E is only as good as
G's samples resemble the data it is applied to (the *domain gap* between G(z) and real x), which
is why its z is often refined by a few optimisation steps (the hybrid method,
``invert(G, x, z_init=E(x))``).

The generator is an argument (an ``nn.Module`` z (B, d) -> images (B, C, H, W)); it is frozen and
in eval mode while E trains, and restored afterwards.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from evaluation.inversion import _check_images, _freeze, _latent_dim, _restore
from utils.data import batches
from utils.training import FitResult, check_finite, fit
from utils.validation import check_int, check_positive, shape_of

__all__ = ["LatentEncoder", "train_encoder"]


class LatentEncoder(nn.Module):
    """images (B, channels, size, size) -> z (B, latent_dim), size a multiple of 4.

    conv4x4/2 (channels -> width) LeakyReLU(0.2), conv4x4/2 (width -> 2 width) LeakyReLU(0.2),
    flatten (2 width · (size/4)²), linear -> latent_dim: the DCGAN critic's body with a linear
    read-out of d numbers instead of one.
    """

    def __init__(self, latent_dim: int, channels: int = 1, size: int = 16, width: int = 32):
        super().__init__()
        self.latent_dim = check_int("latent_dim", latent_dim, minimum=1)
        self.channels = check_int("channels", channels, minimum=1)
        self.size = check_int("size", size, minimum=4)
        if self.size % 4:
            raise ValueError(f"size must be a multiple of 4, got {size}")
        width = check_int("width", width, minimum=1)
        self.net = nn.Sequential(
            nn.Conv2d(self.channels, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(),
            nn.Linear(2 * width * (self.size // 4) ** 2, self.latent_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_images("x", x)
        if x.shape[1:] != (self.channels, self.size, self.size):
            raise ValueError(f"x must have shape (B, {self.channels}, {self.size}, {self.size}), "
                             f"got {tuple(x.shape)}")
        return self.net(x)


def train_encoder(encoder: nn.Module, generator: nn.Module, steps: int, *,
                  batch_size: int = 64, lr: float = 1e-3, reconstruction_weight: float = 0.0,
                  real: torch.Tensor | None = None, latent_dim: int | None = None, seed: int = 0,
                  progress: bool = True, desc: str = "encoder") -> FitResult:
    """Train ``encoder`` on (2) with Adam and :func:`utils.training.fit` (guarded: ``make guards``
    cuts its steps).

    Args:
        encoder: E, images (B, C, H, W) -> z (B, d); trained in place (on G's device).
        generator: G, z (B, d) -> images (B, C, H, W); frozen, eval mode.
        steps: number of Adam steps >= 1; batch_size: B >= 1; lr: Adam's step size > 0.
        reconstruction_weight: beta >= 0 of the reconstruction term (0: latent regression only).
        real: optional (N, C, H, W) real images for the reconstruction term (needs beta > 0).
        latent_dim: d, if G has no ``latent_dim`` attribute.
        seed: integer >= 0; step s draws its z from a generator seeded with (seed, s), and the
            real minibatches come from ``utils.data.batches(real, seed=seed)``: stateless.

    Returns:
        fit's :class:`FitResult`; history keys ``latent`` ((1/d)‖E(x̃) − z‖²) and, with
        beta > 0, ``reconstruction`` and ``loss``.
    """
    for name, m in (("encoder", encoder), ("generator", generator)):
        if not isinstance(m, nn.Module):
            raise ValueError(f"{name} must be a torch.nn.Module, got {type(m).__name__}")
    steps = check_int("steps", steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    lr = check_positive("lr", lr)
    if isinstance(reconstruction_weight, bool) \
            or not isinstance(reconstruction_weight, (int, float)) \
            or not 0 <= reconstruction_weight < float("inf"):
        raise ValueError(f"reconstruction_weight must be a finite number >= 0, got "
                         f"{reconstruction_weight!r}")
    beta = float(reconstruction_weight)
    seed = check_int("seed", seed, minimum=0)
    d = _latent_dim(generator, latent_dim)
    param = next(iter(generator.parameters()), None)
    dev = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    real_batches = None
    if real is not None:
        real = _check_images("real", real)
        if beta == 0:
            raise ValueError("real images are used only by the reconstruction term: pass "
                             "reconstruction_weight > 0 with real")
        real_batches = batches(real, batch_size=min(batch_size, len(real)), seed=seed)

    def batch(s: int) -> Any:
        g = torch.Generator().manual_seed(seed * 1_000_003 + s)
        z = torch.randn(batch_size, d, generator=g, dtype=dtype)
        return z if real_batches is None else (z, real_batches(s))

    opt = torch.optim.Adam(encoder.parameters(), lr=lr)

    def step(b: Any) -> dict[str, float]:
        z, x_real = (b, None) if isinstance(b, torch.Tensor) else b
        with torch.no_grad():
            x_tilde = generator(z)                                   # x̃ = G(z): (B, C, H, W)
        z_hat = encoder(x_tilde)
        if not isinstance(z_hat, torch.Tensor) or z_hat.shape != z.shape:
            raise ValueError(f"the encoder must map images {tuple(x_tilde.shape)} to latents "
                             f"{tuple(z.shape)}, got {shape_of(z_hat)}")
        latent = F.mse_loss(z_hat, z)                                # (1/d)‖E(x̃) − z‖², mean
        metrics = {"latent": latent}
        total = latent
        if beta > 0:
            x_r = x_tilde if x_real is None else x_real.to(dtype)
            rec = F.mse_loss(generator(encoder(x_r)), x_r)           # (1/P)‖G(E(x)) − x‖²
            total = latent + beta * rec
            metrics |= {"reconstruction": rec, "loss": total}
        check_finite("the encoder loss", total)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return {k: v.item() for k, v in metrics.items()}

    state = _freeze(generator)
    try:
        result = fit(step, batch, steps, models=encoder, optimizers=opt, device=dev,
                     progress=progress, desc=desc)
    finally:
        _restore(generator, state)
    encoder.eval()
    return result

"""GAN inversion: find a latent z whose image G(z) reconstructs a given x.

A generator G: R^d -> X maps latents to images; it has no encoder. To edit a real image x in
latent space, first find a latent that explains it,

    z* = argmin_z  J(z),   J(z) = L(G(z), x) + lambda ‖z‖²,                                (1)

with a reconstruction loss L (``reconstruction_loss``), per target x_b:

    mse:       L = (1/P) Σ_p (G(z)_p − x_p)²                (P = C·H·W pixels)
    l1:        L = (1/P) Σ_p |G(z)_p − x_p|
    features:  L = (1/F) Σ_f (phi(G(z))_f − phi(x)_f)²      (phi: a differentiable map to R^F)

and an optional prior term lambda ‖z‖² (the negative log-density of N(0, I) up to a factor 1/2),
or, with ``shell=True``, z projected after every step onto the sphere ‖z‖ = √d where N(0, I)
in d dimensions puts nearly all its mass. Three ways to solve (1):

- **optimisation** (``invert``): Adam on z from z_0 ~ N(0, I), ``steps`` steps; J is not convex
  (G is a deep network), so the result depends on z_0: ``restarts`` R independent starts per
  target run side by side and the one with the lowest final J is kept;
- **encoder** (``LatentEncoder`` + ``train_encoder``): a network E: X -> R^d trained once on
  pairs (G(z), z) by latent regression, ‖E(G(z)) − z‖², optionally plus a reconstruction term
  ‖G(E(x)) − x‖² on real images; inverting is then one forward pass, E *amortises* (1) over x;
- **hybrid**: z_0 = E(x), then optimise (1) from it (``invert(..., z_init=E(x))``).

The generator is an argument (any ``nn.Module`` z (B, d) -> images (B, C, H, W)); it runs in eval
mode (BatchNorm with its running statistics, so each target's z is optimised independently of
the others) with its weights frozen, and both are restored afterwards. Device and dtype follow
the generator's parameters.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from utils.validation import check_choice, check_int, check_positive, shape_of

__all__ = ["INVERSION_LOSSES", "InversionResult", "invert", "reconstruction_loss"]

INVERSION_LOSSES = ("mse", "l1", "features")


class InversionResult(NamedTuple):
    """What :func:`invert` returns, for B targets and latent dimension d.

    z: (B, d) the last iterate z_T of the best restart of each target (detached);
    loss: (B,) the reconstruction loss L(G(z), x) of that z (without the prior term);
    trace: (T + 1, B) L(G(z_t), x) at every step t = 0..T of the kept restart (trace[-1] == loss);
    seconds: the wall time of the whole optimisation (all restarts together).
    """

    z: torch.Tensor
    loss: torch.Tensor
    trace: torch.Tensor
    seconds: float


def _check_images(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4 \
            or x.shape[0] < 1:
        dtype = f" {x.dtype}" if isinstance(x, torch.Tensor) else ""
        raise ValueError(f"{name} must be a non-empty floating-point tensor of shape "
                         f"(B, C, H, W), got {shape_of(x)}{dtype}")
    return x


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, loss: str = "mse",
                        features: Callable[[torch.Tensor], torch.Tensor] | None = None
                        ) -> torch.Tensor:
    """L(x̂, x) per image (see the module): x_hat, x (B, C, H, W) -> (B,), differentiable.

    ``features`` (phi, images (B, C, H, W) -> (B, F)) is needed for, and only for,
    ``loss="features"``; it must be differentiable (e.g. a classifier's penultimate layer called
    with gradients on; ``DigitsClassifier.features`` runs under ``no_grad`` and will not do).
    """
    loss = check_choice("loss", loss, INVERSION_LOSSES)
    x_hat, x = _check_images("x_hat", x_hat), _check_images("x", x)
    if x_hat.shape != x.shape:
        raise ValueError(f"x_hat and x must have the same shape, got {tuple(x_hat.shape)} and "
                         f"{tuple(x.shape)}")
    if (loss == "features") != (features is not None):
        raise ValueError(f"features (a callable images -> (B, F)) is needed for loss='features' "
                         f"and only for it; got loss={loss!r} and features={features!r}")
    if loss == "mse":
        return (x_hat - x).pow(2).flatten(1).mean(1)
    if loss == "l1":
        return (x_hat - x).abs().flatten(1).mean(1)
    if not callable(features):
        raise ValueError(f"features must be callable, got {type(features).__name__}")
    phi_hat, phi = features(x_hat), features(x)
    for name, f in (("features(x_hat)", phi_hat), ("features(x)", phi)):
        if not isinstance(f, torch.Tensor) or f.ndim != 2 or f.shape[0] != x.shape[0]:
            raise ValueError(f"{name} must be a tensor of shape ({x.shape[0]}, F), got "
                             f"{shape_of(f)}")
    if torch.is_grad_enabled() and x_hat.requires_grad and not phi_hat.requires_grad:
        raise ValueError("features(x_hat) carries no gradient: the feature map must be "
                         "differentiable (not run under torch.no_grad)")
    return (phi_hat - phi.detach()).pow(2).mean(1)


def _freeze(generator: nn.Module) -> tuple[bool, list[bool]]:
    state = (generator.training, [p.requires_grad for p in generator.parameters()])
    generator.eval().requires_grad_(False)
    return state


def _restore(generator: nn.Module, state: tuple[bool, list[bool]]) -> None:
    generator.train(state[0])
    for p, flag in zip(generator.parameters(), state[1], strict=True):
        p.requires_grad_(flag)


def _latent_dim(generator: nn.Module, latent_dim: object) -> int:
    if latent_dim is None:
        latent_dim = getattr(generator, "latent_dim", None)
        if latent_dim is None:
            raise ValueError("latent_dim is needed: the generator has no latent_dim attribute "
                             "and neither z_init nor latent_dim was given")
    return check_int("latent_dim", latent_dim, minimum=1)


def invert(generator: nn.Module, x: torch.Tensor, *, steps: int = 200, lr: float = 0.05,
           loss: str = "mse", features: Callable[[torch.Tensor], torch.Tensor] | None = None,
           prior_weight: float = 0.0, shell: bool = False, restarts: int = 1,
           z_init: torch.Tensor | None = None, latent_dim: int | None = None,
           seed: int | None = None) -> InversionResult:
    """Solve (1) by Adam on z for a batch of targets, with R restarts run side by side.

    Every restart of every target has its own z, and J is a sum over them of per-target terms
    with an elementwise optimiser, so each trajectory is the one it would be alone.

    Args:
        generator: G, z (N, d) -> images (N, C, H, W); frozen and in eval mode while it runs.
        x: (B, C, H, W) the targets (moved to G's device and dtype).
        steps: T >= 1 Adam steps; lr: Adam's step size > 0.
        loss: ``"mse"``, ``"l1"`` or ``"features"`` (with ``features``), see the module.
        prior_weight: lambda >= 0 of the term lambda ‖z‖² (per target).
        shell: project z onto ‖z‖ = √d after every step (and at the start).
        restarts: R >= 1 starts per target; the one with the lowest final J is kept.
        z_init: the starts, (B, d) (R = 1) or (R, B, d); default z_0 ~ N(0, I) of shape (R, B, d)
            (the hybrid method passes E(x)).
        latent_dim: d, needed only without ``z_init`` if G has no ``latent_dim`` attribute.
        seed: seed of a local generator for the default z_0 (None: torch's global RNG).

    Returns:
        :class:`InversionResult` ``(z (B, d), loss (B,), trace (T + 1, B), seconds)``.
    """
    if not isinstance(generator, nn.Module):
        raise ValueError(f"generator must be a torch.nn.Module, got {type(generator).__name__}")
    x = _check_images("x", x)
    steps = check_int("steps", steps, minimum=1)
    lr = check_positive("lr", lr)
    loss = check_choice("loss", loss, INVERSION_LOSSES)
    if isinstance(prior_weight, bool) or not isinstance(prior_weight, (int, float)) \
            or not prior_weight >= 0 or prior_weight == float("inf"):
        raise ValueError(f"prior_weight must be a finite number >= 0, got {prior_weight!r}")
    if not isinstance(shell, bool):
        raise ValueError(f"shell must be a bool, got {shell!r}")
    restarts = check_int("restarts", restarts, minimum=1)
    param = next(iter(generator.parameters()), None)
    dev, dtype = (param.device, param.dtype) if param is not None else (x.device, x.dtype)
    b = x.shape[0]
    if z_init is None:
        d = _latent_dim(generator, latent_dim)
        gen = None if seed is None else torch.Generator().manual_seed(check_int("seed", seed,
                                                                                  minimum=0))
        z0 = torch.randn(restarts, b, d, generator=gen, dtype=dtype).to(dev)
    else:
        if not isinstance(z_init, torch.Tensor) or not z_init.is_floating_point() \
                or z_init.ndim not in (2, 3) or z_init.shape[-2] != b \
                or (z_init.ndim == 3 and z_init.shape[0] != restarts):
            raise ValueError(f"z_init must be a float tensor of shape ({b}, d) or ({restarts}, "
                             f"{b}, d) (restarts, targets, d), got {shape_of(z_init)}")
        z0 = z_init.detach().to(device=dev, dtype=dtype).reshape(restarts, b, -1)
        d = z0.shape[-1]
        expected = latent_dim if latent_dim is not None else getattr(generator, "latent_dim",
                                                                          None)
        if expected is not None and check_int("latent_dim", expected, minimum=1) != d:
            raise ValueError(f"z_init has d = {d} but the latent dimension is {expected}")
    target = x.detach().to(device=dev, dtype=dtype).repeat(restarts, 1, 1, 1)  # (R·B, C, H, W)
    radius = d ** 0.5

    def on_shell(z: torch.Tensor) -> torch.Tensor:    # z √d / ‖z‖ per row
        return z * (radius / z.norm(dim=1, keepdim=True).clamp_min(1e-12))

    z = z0.reshape(restarts * b, d).clone()
    if shell:
        z = on_shell(z)
    z.requires_grad_(True)
    state = _freeze(generator)
    t0 = time.perf_counter()
    try:
        x_hat = generator(z)
        if not isinstance(x_hat, torch.Tensor) or x_hat.shape != target.shape:
            raise ValueError(f"the generator must map z ({restarts * b}, {d}) to images of the "
                             f"targets' shape {tuple(target.shape)}, got {shape_of(x_hat)}")
        opt = torch.optim.Adam([z], lr=lr)
        trace = []
        for _ in range(steps):
            rec = reconstruction_loss(x_hat, target, loss, features)             # (R·B,)
            trace.append(rec.detach())
            objective = rec + prior_weight * z.pow(2).sum(1)                     # J per start
            opt.zero_grad(set_to_none=True)
            objective.sum().backward()
            opt.step()
            if shell:
                with torch.no_grad():
                    z.copy_(on_shell(z))
            x_hat = generator(z)
        with torch.no_grad():
            rec = reconstruction_loss(x_hat, target, loss, features)
            final = rec + prior_weight * z.pow(2).sum(1)
    finally:
        _restore(generator, state)
    finite = bool(torch.isfinite(final).all())       # reading it waits for a GPU's kernels
    seconds = time.perf_counter() - t0
    if not finite:
        raise ValueError("the inversion diverged (a non-finite loss); lower lr")
    best = final.view(restarts, b).argmin(0)                                     # (B,)
    cols = torch.arange(b, device=best.device)
    trace = torch.stack([*trace, rec]).view(steps + 1, restarts, b)[:, best, cols]
    return InversionResult(z=z.detach().view(restarts, b, d)[best, cols],
                           loss=rec.view(restarts, b)[best, cols], trace=trace, seconds=seconds)

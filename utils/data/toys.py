"""Two-dimensional toy distributions, three of them with a closed-form density.

The benchmarks every GAN, flow and diffusion paper draws first:

- ``ring8``: 8 Gaussians on a circle (the Unrolled-GAN benchmark, Metz et al. 2017);
- ``grid25``: 25 Gaussians on a 5x5 grid (the VEEGAN / PacGAN benchmark);
- ``swissroll``, ``moons``: curves with noise, no closed-form density;
- ``checkerboard``: uniform on the 8 black squares of a 4x4 board (the FFJORD toy).

For the mixtures the density is

    p(x) = (1/K) sum_k N(x; mu_k, sigma^2 I),
    log p(x) = logsumexp_k(-|x - mu_k|^2 / (2 sigma^2)) - log K - log(2 pi sigma^2),

and for the checkerboard it is 1/32 on the black squares (total area 8 * 2^2 = 32) and 0 elsewhere.
"""

from __future__ import annotations

import math

import torch

from utils.validation import check_choice, check_int

__all__ = ["TOY2D_NAMES", "toy2d", "toy2d_log_prob", "toy2d_mixture"]

TOY2D_NAMES = ("ring8", "grid25", "swissroll", "moons", "checkerboard")

RING8_RADIUS, RING8_STD = 2.0, 0.02
GRID25_SPACING, GRID25_STD = 2.0, 0.05
SWISSROLL_SCALE, SWISSROLL_NOISE = 1 / 3.5, 0.1
MOONS_NOISE, MOONS_MEAN, MOONS_SCALE = 0.05, (0.5, 0.25), math.sqrt(2.0)
CHECKERBOARD_HALF_WIDTH, CHECKERBOARD_SQUARE = 4.0, 2.0
CHECKERBOARD_LOG_DENSITY = -math.log(32.0)  # 8 black squares of area 2 * 2
MAX_SEED = 2**32  # sklearn's make_moons takes seeds below 2**32; every toy takes the same range

_MIXTURE_NAMES = ("ring8", "grid25")
_DENSITY_NAMES = ("ring8", "grid25", "checkerboard")


def toy2d_mixture(name: str) -> tuple[torch.Tensor, float]:
    """The centres and the common standard deviation of a Gaussian-mixture toy.

    Args:
        name: ``"ring8"`` (K = 8 centres 2 (cos 2 pi k/8, sin 2 pi k/8), sigma = 0.02) or
            ``"grid25"`` (K = 25 centres (-4 + 2i, -4 + 2j), i, j in 0..4, sigma = 0.05).

    Returns:
        ``(mu, sigma)``: mu (K, 2) float32, a fresh tensor each call; sigma a float. Every
        component has weight 1/K and covariance sigma^2 I.
    """
    if name not in _MIXTURE_NAMES:
        raise ValueError(f"toy2d_mixture knows the Gaussian mixtures {_MIXTURE_NAMES}, got "
                         f"{name!r}; of the other toys only 'checkerboard' has a closed-form "
                         f"density (see toy2d_log_prob)")
    if name == "ring8":
        angle = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
        mu = RING8_RADIUS * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
        return mu.to(torch.float32), RING8_STD
    ticks = -4.0 + GRID25_SPACING * torch.arange(5, dtype=torch.float64)
    i, j = torch.meshgrid(ticks, ticks, indexing="ij")
    mu = torch.stack([i.reshape(-1), j.reshape(-1)], dim=1)
    return mu.to(torch.float32), GRID25_STD


def toy2d(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """Draw ``n`` points from a 2-D toy distribution.

    Args:
        name: one of :data:`TOY2D_NAMES`:

            - ``"ring8"``: equal mixture of 8 Gaussians N(mu_k, 0.02^2 I), mu_k on the circle of
              radius 2 at angles 2 pi k / 8. Range about [-2.1, 2.1]^2.
            - ``"grid25"``: equal mixture of 25 Gaussians N(mu_ij, 0.05^2 I),
              mu_ij = (-4 + 2i, -4 + 2j), i, j in 0..4. Range about [-4.2, 4.2]^2.
            - ``"swissroll"``: t = 1.5 pi (1 + 2u), u ~ U[0, 1), x = (t cos t, t sin t) / 3.5 +
              0.1 eps, eps ~ N(0, I): columns 0 and 2 of ``sklearn.datasets.make_swiss_roll``,
              scaled by 1/3.5 to about [-4, 4]^2.
            - ``"moons"``: ``sklearn.datasets.make_moons(n, noise=0.05)``, centred on the
              noiseless moons' mean (0.5, 0.25) and scaled by sqrt(2), so that the average
              per-coordinate variance is about 1 (stds about 1.2 and 0.7); range about
              [-2.2, 2.2] x [-1.1, 1.1].
            - ``"checkerboard"``: uniform on the 8 black squares of the 4x4 board of side-2
              squares covering [-4, 4)^2; square (a, b) = [2a, 2a + 2) x [2b, 2b + 2) is black
              when a + b is even, so [0, 2)^2 is black. Density 1/32 there.
        n: number of points, an integer >= 1.
        seed: integer in [0, 2**32); the same seed gives the same points.

    Returns:
        x: (n, 2) float32.
    """
    name = check_choice("name", name, TOY2D_NAMES)
    n = check_int("n", n, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    if seed >= MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed}")
    generator = torch.Generator().manual_seed(seed)
    if name in _MIXTURE_NAMES:
        mu, sigma = toy2d_mixture(name)
        k = torch.randint(len(mu), (n,), generator=generator)
        x = mu[k] + sigma * torch.randn(n, 2, generator=generator)
    elif name == "swissroll":
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.float64))
        curve = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1)
        eps = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        x = SWISSROLL_SCALE * curve + SWISSROLL_NOISE * eps
    elif name == "moons":
        from sklearn.datasets import make_moons  # imported here: sklearn is slow to import

        points, _ = make_moons(n, noise=MOONS_NOISE, random_state=seed)
        x = MOONS_SCALE * (torch.from_numpy(points) - torch.tensor(MOONS_MEAN, dtype=torch.float64))
    else:  # checkerboard: column a uniform in 0..3, row b of the same parity, uniform inside
        a = torch.randint(4, (n,), generator=generator)
        b = 2 * torch.randint(2, (n,), generator=generator) + a % 2
        corner = torch.stack([a, b], dim=1).to(torch.float64) * CHECKERBOARD_SQUARE
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        x = corner + CHECKERBOARD_SQUARE * u - CHECKERBOARD_HALF_WIDTH
    return x.to(torch.float32)


def toy2d_log_prob(name: str, x: torch.Tensor) -> torch.Tensor:
    """The exact log-density log p(x) of a toy with a closed form.

    Args:
        name: ``"ring8"`` or ``"grid25"`` (log-sum-exp over the K Gaussian components, see
            :func:`toy2d_mixture`), or ``"checkerboard"`` (log(1/32) on the black squares,
            -inf elsewhere). ``"swissroll"`` and ``"moons"`` have no closed-form density.
        x: (N, 2) floating-point points, any device.

    Returns:
        log_p: (N,), the dtype and device of ``x``; finite for the mixtures, in
        {log(1/32), -inf} for the checkerboard.
    """
    name = check_choice("name", name, TOY2D_NAMES)
    if name not in _DENSITY_NAMES:
        raise ValueError(f"toy2d_log_prob knows the closed-form densities of {_DENSITY_NAMES}, "
                         f"got {name!r}, which has none")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 2 \
            or x.shape[1] != 2:
        got = (f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor)
               else type(x).__name__)
        raise ValueError(f"x must be a floating-point tensor of shape (N, 2), got {got}")
    if name == "checkerboard":
        inside_box = ((x >= -CHECKERBOARD_HALF_WIDTH) & (x < CHECKERBOARD_HALF_WIDTH)).all(dim=1)
        square = torch.floor(x / CHECKERBOARD_SQUARE).to(torch.int64)  # (a, b), each in -2..1
        black = (square.sum(dim=1) % 2) == 0
        log_p = torch.full((len(x),), -math.inf, dtype=x.dtype, device=x.device)
        return log_p.masked_fill(inside_box & black, CHECKERBOARD_LOG_DENSITY)
    mu, sigma = toy2d_mixture(name)
    mu = mu.to(dtype=x.dtype, device=x.device)
    squared_distance = ((x[:, None, :] - mu[None, :, :]) ** 2).sum(dim=2)  # (N, K)
    log_normaliser = math.log(len(mu)) + math.log(2 * math.pi * sigma**2)
    return torch.logsumexp(-squared_distance / (2 * sigma**2), dim=1) - log_normaliser

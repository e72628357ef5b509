"""Gradient dynamics of two-player games: simultaneous, alternating, extragradient and
optimistic updates.

A game is a function f(x, y) that player x minimises and player y maximises, given here by its
two partial gradients ``grad_x(x, y) = ∂f/∂x`` (shaped like x) and ``grad_y(x, y) = ∂f/∂y``
(shaped like y). With step size η (``lr``) and g = (∇ₓf, ∇ᵧf) evaluated where marked:

    simultaneous   x' = x − η ∇ₓf(x, y),          y' = y + η ∇ᵧf(x, y)
    alternating    x' = x − η ∇ₓf(x, y),          y' = y + η ∇ᵧf(x', y)
    extragradient  x½ = x − η ∇ₓf(x, y),          y½ = y + η ∇ᵧf(x, y)          (look ahead)
                   x' = x − η ∇ₓf(x½, y½),        y' = y + η ∇ᵧf(x½, y½)        (step from x, y)
    optimistic     x' = x − 2η ∇ₓf(zₜ) + η ∇ₓf(zₜ₋₁),  y' = y + 2η ∇ᵧf(zₜ) − η ∇ᵧf(zₜ₋₁)

(optimistic GDA starts with z₋₁ = z₀, so its first step is a simultaneous one).

On the bilinear game f(x, y) = xᵀ A y (A: (m, n)) every step is linear in the state; the matrix
of that map is ``bilinear_update_matrix`` and the modulus of its eigenvalues, for each singular
value σ of A, is ``bilinear_spectral_radius`` (the closed forms are derived in
``gans/02_gd_dynamics.ipynb``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from utils.validation import check_choice, check_int, check_positive, shape_of

__all__ = [
    "METHODS",
    "alternating_gda",
    "alternating_invariant",
    "bilinear_game",
    "bilinear_spectral_radius",
    "bilinear_update_matrix",
    "extragradient",
    "optimistic_gda",
    "simultaneous_gda",
]

METHODS = ("simultaneous", "alternating", "extragradient", "optimistic")

Grad = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_start(x0: object, y0: object, lr: object, steps: object) -> tuple[float, int]:
    for name, v in (("x0", x0), ("y0", y0)):
        if not isinstance(v, torch.Tensor) or not v.dtype.is_floating_point:
            raise ValueError(f"{name} must be a float tensor, got {shape_of(v)}")
    if x0.dtype != y0.dtype or x0.device != y0.device:
        raise ValueError(f"x0 and y0 must share dtype and device, got {x0.dtype}/{x0.device} "
                         f"and {y0.dtype}/{y0.device}")
    return check_positive("lr", lr), check_int("steps", steps, minimum=1)


def _grad(name: str, grad: Grad, x: torch.Tensor, y: torch.Tensor,
          like: torch.Tensor) -> torch.Tensor:
    g = grad(x, y)
    if not isinstance(g, torch.Tensor) or g.shape != like.shape:
        raise ValueError(f"{name}(x, y) must return a tensor of shape {tuple(like.shape)}, "
                         f"got {shape_of(g)}")
    return g


def _stack(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack(xs), torch.stack(ys)


def simultaneous_gda(grad_x: Grad, grad_y: Grad, x0: torch.Tensor, y0: torch.Tensor, lr: float,
                     steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Simultaneous gradient descent-ascent: x' = x − η∇ₓf(x, y), y' = y + η∇ᵧf(x, y).

    x0: any shape, y0: any shape (same dtype and device). Returns the trajectories
    xs: (steps + 1, *x0.shape) and ys: (steps + 1, *y0.shape), starting with x0, y0.
    """
    lr, steps = _check_start(x0, y0, lr, steps)
    xs, ys = [x0], [y0]
    for _ in range(steps):
        x, y = xs[-1], ys[-1]
        gx, gy = _grad("grad_x", grad_x, x, y, x), _grad("grad_y", grad_y, x, y, y)
        xs.append(x - lr * gx)
        ys.append(y + lr * gy)
    return _stack(xs, ys)


def alternating_gda(grad_x: Grad, grad_y: Grad, x0: torch.Tensor, y0: torch.Tensor, lr: float,
                    steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Alternating gradient descent-ascent (x moves first, y answers the new x):
    x' = x − η∇ₓf(x, y), y' = y + η∇ᵧf(x', y). Shapes as in ``simultaneous_gda``."""
    lr, steps = _check_start(x0, y0, lr, steps)
    xs, ys = [x0], [y0]
    for _ in range(steps):
        x, y = xs[-1], ys[-1]
        x_new = x - lr * _grad("grad_x", grad_x, x, y, x)
        xs.append(x_new)
        ys.append(y + lr * _grad("grad_y", grad_y, x_new, y, y))
    return _stack(xs, ys)


def extragradient(grad_x: Grad, grad_y: Grad, x0: torch.Tensor, y0: torch.Tensor, lr: float,
                  steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Extragradient (Korpelevich 1976): a look-ahead step to (x½, y½) = (x − η∇ₓf, y + η∇ᵧf),
    then the real step from (x, y) with the gradients taken at (x½, y½):
    x' = x − η∇ₓf(x½, y½), y' = y + η∇ᵧf(x½, y½). Shapes as in ``simultaneous_gda``."""
    lr, steps = _check_start(x0, y0, lr, steps)
    xs, ys = [x0], [y0]
    for _ in range(steps):
        x, y = xs[-1], ys[-1]
        x_half = x - lr * _grad("grad_x", grad_x, x, y, x)
        y_half = y + lr * _grad("grad_y", grad_y, x, y, y)
        xs.append(x - lr * _grad("grad_x", grad_x, x_half, y_half, x))
        ys.append(y + lr * _grad("grad_y", grad_y, x_half, y_half, y))
    return _stack(xs, ys)


def optimistic_gda(grad_x: Grad, grad_y: Grad, x0: torch.Tensor, y0: torch.Tensor, lr: float,
                   steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimistic gradient descent-ascent (Daskalakis et al. 2018):
    xₜ₊₁ = xₜ − 2η∇ₓf(zₜ) + η∇ₓf(zₜ₋₁), yₜ₊₁ = yₜ + 2η∇ᵧf(zₜ) − η∇ᵧf(zₜ₋₁), with z = (x, y)
    and z₋₁ = z₀ (the first step is a simultaneous one). Shapes as in ``simultaneous_gda``."""
    lr, steps = _check_start(x0, y0, lr, steps)
    xs, ys = [x0], [y0]
    gx_prev, gy_prev = _grad("grad_x", grad_x, x0, y0, x0), _grad("grad_y", grad_y, x0, y0, y0)
    for _ in range(steps):
        x, y = xs[-1], ys[-1]
        gx, gy = _grad("grad_x", grad_x, x, y, x), _grad("grad_y", grad_y, x, y, y)
        xs.append(x - 2 * lr * gx + lr * gx_prev)
        ys.append(y + 2 * lr * gy - lr * gy_prev)
        gx_prev, gy_prev = gx, gy
    return _stack(xs, ys)


def _check_matrix(A: object) -> torch.Tensor:
    if not isinstance(A, torch.Tensor) or A.ndim != 2 or not A.dtype.is_floating_point \
            or A.numel() == 0:
        raise ValueError(f"A must be a non-empty 2-D float tensor (m, n), got {shape_of(A)}")
    return A


def bilinear_game(A: torch.Tensor) -> tuple[Grad, Grad]:
    """The gradients of f(x, y) = xᵀ A y: ∇ₓf = A y and ∇ᵧf = Aᵀ x.

    A: (m, n). The returned functions take x: (..., m) and y: (..., n) (batched over leading
    dimensions) and return (..., m) and (..., n); a wrong last dimension is a ``ValueError``.
    The unique equilibrium (when A is square and invertible) is x = 0, y = 0.
    """
    A = _check_matrix(A)
    m, n = A.shape

    def _check(x: torch.Tensor, y: torch.Tensor) -> None:
        if x.shape[-1:] != (m,) or y.shape[-1:] != (n,):
            raise ValueError(f"for A of shape {(m, n)}, x must be (..., {m}) and y (..., {n}), "
                             f"got {tuple(x.shape)} and {tuple(y.shape)}")

    def grad_x(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check(x, y)
        return (y @ A.T.to(y)).expand(*torch.broadcast_shapes(x.shape[:-1], y.shape[:-1]), m)

    def grad_y(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check(x, y)
        return (x @ A.to(x)).expand(*torch.broadcast_shapes(x.shape[:-1], y.shape[:-1]), n)

    return grad_x, grad_y


def bilinear_update_matrix(method: str, lr: float, A: torch.Tensor | None = None) -> torch.Tensor:
    """The matrix M of one step of ``method`` on f(x, y) = xᵀ A y, acting on the state z = (x, y).

    A: (m, n), default the 1×1 matrix [[1]] (the game f = x·y); float64 unless A says otherwise.
    With I the identities and η = lr:

        simultaneous   M = [[I, −ηA], [ηAᵀ, I]]
        alternating    M = [[I, −ηA], [ηAᵀ, I − η²AᵀA]]
        extragradient  M = [[I − η²AAᵀ, −ηA], [ηAᵀ, I − η²AᵀA]]
        optimistic     on the state (zₜ, zₜ₋₁):  M = [[I + 2ηB, −ηB], [I, 0]],
                       B = [[0, −A], [Aᵀ, 0]] (simultaneous GDA is z' = z + ηBz)

    Returns (m + n, m + n), or (2(m + n), 2(m + n)) for ``optimistic``.
    """
    check_choice("method", method, METHODS)
    lr = check_positive("lr", lr)
    A = torch.ones(1, 1, dtype=torch.float64) if A is None else _check_matrix(A)
    m, n = A.shape
    Im = torch.eye(m, dtype=A.dtype, device=A.device)
    In = torch.eye(n, dtype=A.dtype, device=A.device)
    top_left, bottom_right = Im, In
    if method == "alternating":
        bottom_right = In - lr**2 * A.T @ A
    elif method == "extragradient":
        top_left, bottom_right = Im - lr**2 * A @ A.T, In - lr**2 * A.T @ A
    M = torch.cat([torch.cat([top_left, -lr * A], 1), torch.cat([lr * A.T, bottom_right], 1)], 0)
    if method != "optimistic":
        return M
    Z = torch.zeros(m, m, dtype=A.dtype, device=A.device), torch.zeros(n, n, dtype=A.dtype,
                                                                       device=A.device)
    B = torch.cat([torch.cat([Z[0], -A], 1), torch.cat([A.T, Z[1]], 1)], 0)
    eye = torch.eye(m + n, dtype=A.dtype, device=A.device)
    return torch.cat([torch.cat([eye + 2 * lr * B, -lr * B], 1),
                      torch.cat([eye, torch.zeros_like(eye)], 1)], 0)


def bilinear_spectral_radius(method: str, lr: float, sigma: torch.Tensor | float = 1.0
                             ) -> torch.Tensor:
    """Closed-form modulus of the largest eigenvalue of ``bilinear_update_matrix`` restricted to
    the mode of A with singular value σ (a = ησ):

        simultaneous   √(1 + a²)
        alternating    1 for a ≤ 2, else (a² − 2 + √((a² − 2)² − 4)) / 2
        extragradient  √((1 − a²)² + a²) = √(1 − a² + a⁴)
        optimistic     √((1 + √(1 − 4a²)) / 2) for a ≤ 1/2, else √(1 + (2a + √(4a² − 1))²) / 2

    sigma: a float or a tensor of any shape (σ ≥ 0); returns a tensor of its shape (float64 for
    a Python float). The spectral radius of the whole map is the maximum over A's singular values.
    """
    check_choice("method", method, METHODS)
    lr = check_positive("lr", lr)
    if not isinstance(sigma, torch.Tensor):
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
            raise ValueError(f"sigma must be a number or a float tensor, got {shape_of(sigma)}")
        sigma = torch.tensor(float(sigma), dtype=torch.float64)
    if not sigma.dtype.is_floating_point or bool((sigma < 0).any()) or bool(sigma.isnan().any()):
        raise ValueError(f"sigma must hold non-negative floats (singular values), got {sigma}")
    a = lr * sigma
    if method == "simultaneous":
        return torch.sqrt(1 + a**2)
    if method == "extragradient":
        return torch.sqrt((1 - a**2) ** 2 + a**2)
    if method == "alternating":
        t = (a**2 - 2).clamp_min(2.0)            # |trace| of the 2×2 block, where it exceeds 2
        return torch.where(a <= 2, torch.ones_like(a), (t + torch.sqrt(t**2 - 4)) / 2)
    disc = 1 - 4 * a**2                          # optimistic: λ² − (1 + 2ia)λ + ia = 0
    inside = torch.sqrt((1 + disc.clamp_min(0).sqrt()) / 2)
    outside = torch.sqrt(1 + (2 * a + (-disc).clamp_min(0).sqrt()) ** 2) / 2
    return torch.where(disc >= 0, inside, outside)


def alternating_invariant(x: torch.Tensor, y: torch.Tensor, lr: float,
                          A: torch.Tensor | None = None) -> torch.Tensor:
    """The quantity alternating GDA conserves exactly on f = xᵀ A y:
    Q(x, y) = |x|² + |y|² − η xᵀ A y (for f = x·y: x² + y² − η x y).

    x: (..., m), y: (..., n), A: (m, n) (default [[1]]); returns (...).
    """
    lr = check_positive("lr", lr)
    for name, v in (("x", x), ("y", y)):
        if not isinstance(v, torch.Tensor) or not v.dtype.is_floating_point or v.ndim < 1:
            raise ValueError(f"{name} must be a float tensor (..., dim), got {shape_of(v)}")
    A = torch.ones(1, 1, dtype=x.dtype, device=x.device) if A is None else _check_matrix(A)
    if x.shape[-1:] != A.shape[:1] or y.shape[-1:] != A.shape[1:]:
        raise ValueError(f"for A of shape {tuple(A.shape)}, x must be (..., {A.shape[0]}) and y "
                         f"(..., {A.shape[1]}), got {shape_of(x)} and {shape_of(y)}")
    return (x**2).sum(-1) + (y**2).sum(-1) - lr * ((x @ A.to(x)) * y).sum(-1)


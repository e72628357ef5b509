"""Parametric densities: the Gaussian and the Gaussian mixture, fitted by maximum likelihood.

A density model gives every point a log-density ``log p_θ(x)`` and can draw samples. The two here
are the book's first examples and reappear throughout (EM, the ELBO, scores, Tweedie):

    log N(x; μ, Σ) = -½ ‖L⁻¹(x - μ)‖² - Σ_i log L_ii - (D/2) log 2π,       Σ = L Lᵀ
    log p(x)       = logsumexp_k [ log π_k + log N(x; μ_k, Σ_k) ]

Shapes: points ``x: (..., D)``; log-densities ``(...)``; a mixture has ``K`` components, weights
``π: (K,)``, means ``μ: (K, D)``, Cholesky factors ``L: (K, D, D)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from utils.training import check_finite
from utils.validation import check_int

__all__ = ["GaussianMixture", "gaussian_log_prob", "gaussian_mle", "mle_step"]


def _check_points(x: torch.Tensor, d: int, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[-1] != d:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor of shape (..., {d}), got {shape}")


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor,
                      scale_tril: torch.Tensor) -> torch.Tensor:
    """log N(x; μ, L Lᵀ) for ``x: (..., D)``, ``mean: (*B, D)``, ``scale_tril: (*B, D, D)``.

    Uses triangular solves, never an explicit inverse or determinant: the Mahalanobis term is
    ‖L⁻¹(x - μ)‖² and log det Σ = 2 Σ_i log L_ii. The batch dimensions B of ``mean`` and
    ``scale_tril`` broadcast against the trailing batch dimensions of ``x``; the result has the
    broadcast batch shape. All points that share a covariance are solved together (one solve
    with many right-hand sides, not one small solve per point).
    """
    d = mean.shape[-1]
    _check_points(x, d)
    if scale_tril.shape[-2:] != (d, d):
        raise ValueError(f"scale_tril must have shape (..., {d}, {d}), got "
                         f"{tuple(scale_tril.shape)}")
    diag = torch.diagonal(scale_tril, dim1=-2, dim2=-1)
    if not bool(torch.all(diag > 0)):
        raise ValueError("scale_tril must have a positive diagonal (a Cholesky factor)")
    diff = x - mean
    b = scale_tril.ndim - 2
    batch = torch.broadcast_shapes(diff.shape[:-1], scale_tril.shape[:-2])
    diff = diff.expand(*batch, d)
    tail = batch[len(batch) - b:]  # the batch dimensions that carry their own covariance
    rhs = diff.reshape(-1, *tail, d).movedim(0, -1)  # (*tail, D, M): M points per covariance
    z = torch.linalg.solve_triangular(scale_tril.expand(*tail, d, d), rhs, upper=False)
    maha = z.pow(2).sum(-2).movedim(-1, 0).reshape(batch)
    return -0.5 * maha - diag.log().sum(-1) - 0.5 * d * math.log(2 * math.pi)


def gaussian_mle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The maximum-likelihood Gaussian for ``x: (N, D)``:
    ``μ̂ = (1/N) Σ_i x_i`` and ``Σ̂ = (1/N) Σ_i (x_i - μ̂)(x_i - μ̂)ᵀ``.

    Note the 1/N (the MLE), not the unbiased 1/(N-1). Returns ``(mean (D,), covariance (D, D))``.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"x must be a tensor of shape (N, D) with N >= 1, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    mean = x.mean(0)
    centred = x - mean
    return mean, centred.T @ centred / x.shape[0]


class GaussianMixture(nn.Module):
    """p(x) = Σ_k π_k N(x; μ_k, Σ_k), trainable by gradient descent on -log p.

    Give the weights ``π: (K,)`` (non-negative, summing to one), the means ``μ: (K, D)``, and
    either full ``covariances: (K, D, D)`` (symmetric positive definite) or ``scales``: standard
    deviations, ``(K,)`` for isotropic or ``(K, D)`` for diagonal components. A single Gaussian is
    the mixture with K = 1.

    The parameters are stored unconstrained, so any gradient step keeps a valid density: logits
    with π = softmax(logits), the means, and the Cholesky factors L_k with their diagonal stored
    as a logarithm (Σ_k = L_k L_kᵀ). dtype and device follow ``means``.
    """

    def __init__(self, weights: torch.Tensor, means: torch.Tensor,
                 covariances: torch.Tensor | None = None, *, scales: torch.Tensor | None = None):
        super().__init__()
        means = torch.as_tensor(means)
        if means.ndim != 2 or not means.dtype.is_floating_point:
            raise ValueError(f"means must be a float tensor of shape (K, D), got "
                             f"{tuple(means.shape)} {means.dtype}")
        k, d = means.shape
        opts = dict(dtype=means.dtype, device=means.device)
        weights = torch.as_tensor(weights, **opts)
        if weights.shape != (k,):
            raise ValueError(f"weights must have shape ({k},) to match the means, got "
                             f"{tuple(weights.shape)}")
        tol = 1e-5 if means.dtype == torch.float32 else 1e-10
        if bool(torch.any(weights < 0)) or abs(float(weights.sum()) - 1.0) > tol * k:
            raise ValueError(f"weights must be non-negative and sum to one, got {weights.tolist()} "
                             f"(sum {float(weights.sum())})")
        scale_tril = self._scale_tril_from(covariances, scales, k, d, opts)
        self.logits = nn.Parameter(weights.clamp_min(torch.finfo(means.dtype).tiny).log())
        self.means = nn.Parameter(means.clone())
        self.log_diag = nn.Parameter(torch.diagonal(scale_tril, dim1=-2, dim2=-1).log().clone())
        self.off_diag = nn.Parameter(torch.tril(scale_tril, diagonal=-1).clone())

    @staticmethod
    def _scale_tril_from(covariances, scales, k, d, opts) -> torch.Tensor:
        if (covariances is None) == (scales is None):
            raise ValueError("give exactly one of covariances (K, D, D) or scales (K,) / (K, D)")
        if covariances is not None:
            cov = torch.as_tensor(covariances, **opts)
            if cov.shape != (k, d, d):
                raise ValueError(f"covariances must have shape ({k}, {d}, {d}), got "
                                 f"{tuple(cov.shape)}")
            if not torch.allclose(cov, cov.transpose(-1, -2), atol=1e-6, rtol=1e-5):
                raise ValueError("covariances must be symmetric")
            scale_tril, info = torch.linalg.cholesky_ex(cov)
            if bool(torch.any(info != 0)):
                bad = torch.nonzero(info).flatten().tolist()
                raise ValueError(f"covariances of components {bad} are not positive definite")
            return scale_tril
        s = torch.as_tensor(scales, **opts)
        if s.shape == (k,):
            s = s[:, None].expand(k, d)
        if s.shape != (k, d):
            raise ValueError(f"scales must have shape ({k},) or ({k}, {d}), got {tuple(s.shape)}")
        if not bool(torch.all(s > 0)):
            raise ValueError(f"scales must be positive, got minimum {float(s.min())}")
        return torch.diag_embed(s)

    @classmethod
    def from_data(cls, x: torch.Tensor, k: int, seed: int = 0) -> GaussianMixture:
        """A starting point for fitting K components to ``x: (N, D)``: k-means++ seeding.

        Means are K data points drawn by D² sampling (each next centre with probability
        proportional to its squared distance to the nearest chosen one), weights are equal, and
        every component gets the isotropic scale of the points' RMS distance to their centre.
        """
        k = check_int("k", k, minimum=1)
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] < k:
            raise ValueError(f"x must have shape (N, D) with N >= k = {k}, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else x!r}")
        g = torch.Generator().manual_seed(seed)
        xd = x.detach()
        idx = [int(torch.randint(len(xd), (1,), generator=g))]
        d2 = (xd - xd[idx[0]]).pow(2).sum(1)
        for _ in range(k - 1):
            idx.append(int(torch.multinomial(d2.cpu() / d2.sum().cpu(), 1, generator=g)))
            d2 = torch.minimum(d2, (xd - xd[idx[-1]]).pow(2).sum(1))
        scale = d2.mean().div(x.shape[1]).sqrt().clamp_min(1e-3)
        return cls(torch.full((k,), 1.0 / k, dtype=x.dtype, device=x.device), xd[idx].clone(),
                   scales=scale.expand(k).clone())

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def weights(self) -> torch.Tensor:
        """π: (K,), softmax of the logits."""
        return torch.softmax(self.logits, dim=0)

    @property
    def scale_tril(self) -> torch.Tensor:
        """L: (K, D, D), lower triangular with a positive diagonal."""
        return torch.tril(self.off_diag, diagonal=-1) + torch.diag_embed(self.log_diag.exp())

    @property
    def covariances(self) -> torch.Tensor:
        """Σ: (K, D, D) = L Lᵀ."""
        L = self.scale_tril
        return L @ L.transpose(-1, -2)

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; μ_k, Σ_k) for every component: ``x: (..., D)`` → ``(..., K)``."""
        _check_points(x, self.dim)
        return gaussian_log_prob(x.unsqueeze(-2), self.means, self.scale_tril)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = logsumexp_k [log π_k + log N(x; μ_k, Σ_k)]: ``(..., D)`` → ``(...)``."""
        log_pi = torch.log_softmax(self.logits, dim=0)
        return torch.logsumexp(log_pi + self.component_log_prob(x), dim=-1)

    def posterior(self, x: torch.Tensor) -> torch.Tensor:
        """Responsibilities p(z = k | x) = π_k N(x; μ_k, Σ_k) / p(x) (Bayes): ``(..., K)``."""
        log_pi = torch.log_softmax(self.logits, dim=0)
        return torch.softmax(log_pi + self.component_log_prob(x), dim=-1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The score ∇_x log p(x) = Σ_k p(z = k | x) Σ_k⁻¹ (μ_k - x), in closed form: ``(..., D)``.

        Each component's score is -Σ_k⁻¹ (x - μ_k); the mixture's is their average weighted by
        the responsibilities (differentiate the log-sum-exp).
        """
        _check_points(x, self.dim)
        r = self.posterior(x)  # (..., K)
        L = self.scale_tril
        diff = (self.means - x.unsqueeze(-2)).unsqueeze(-1)  # (..., K, D, 1)
        L_b = L.expand(*diff.shape[:-2], self.dim, self.dim)
        precision_diff = torch.cholesky_solve(diff, L_b, upper=False).squeeze(-1)  # Σ⁻¹(μ - x)
        return (r.unsqueeze(-1) * precision_diff).sum(-2)

    def smoothed(self, sigma: float | torch.Tensor) -> GaussianMixture:
        """The density of y = x + σ ε, x ~ p, ε ~ N(0, I): the same mixture with every covariance
        Σ_k + σ² I (a Gaussian convolved with a Gaussian). A new, detached mixture."""
        sigma = torch.as_tensor(sigma, dtype=self.means.dtype, device=self.means.device)
        if sigma.ndim != 0 or not bool(sigma >= 0):
            raise ValueError(f"sigma must be a non-negative scalar, got {sigma}")
        eye = torch.eye(self.dim, dtype=self.means.dtype, device=self.means.device)
        with torch.no_grad():
            return GaussianMixture(self.weights, self.means, self.covariances + sigma**2 * eye)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Ancestral sampling, z ~ Categorical(π) then x = μ_z + L_z ε with ε ~ N(0, I): ``(n, D)``.

        ``generator`` must live on the model's device.
        """
        n = check_int("n", n, minimum=1)
        z = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, 1, generator=generator, dtype=self.means.dtype,
                          device=self.means.device)
        return self.means[z] + (self.scale_tril[z] @ eps).squeeze(-1)


def mle_step(model: nn.Module, optimizer: torch.optim.Optimizer
             ) -> Callable[[torch.Tensor], dict[str, float]]:
    """The :func:`utils.training.fit` step of maximum likelihood: one gradient step on the
    average negative log-likelihood -(1/B) Σ_i log p_θ(x_i) of a batch ``x: (B, D)``."""

    def step(x: torch.Tensor) -> dict[str, float]:
        optimizer.zero_grad(set_to_none=True)
        nll = -model.log_prob(x).mean()
        value = check_finite("nll", nll)  # before the update: NaN never reaches the weights
        nll.backward()
        optimizer.step()
        return {"nll": value}

    return step

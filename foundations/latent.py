"""Latent variable models: EM for Gaussian mixtures and probabilistic PCA
(``02_latent_variable_models``).

A latent variable model explains x through an unobserved z: p(x) = Σ_z p(z) p(x | z).

**EM for a Gaussian mixture** (z ∈ {1..K}, p(z = k) = π_k, p(x | z = k) = N(x; μ_k, Σ_k)) is
coordinate ascent on the lower bound, per point, for any responsibilities q_ik ≥ 0, Σ_k q_ik = 1:

    F(q, θ) = (1/N) Σ_i Σ_k q_ik [log π_k + log N(x_i; μ_k, Σ_k) - log q_ik]
            = ℓ(θ) - (1/N) Σ_i KL(q_i ‖ p(z | x_i, θ)) ≤ ℓ(θ) = (1/N) Σ_i log p(x_i | θ).

E step (max over q, makes the bound tight): q_ik = r_ik = p(z = k | x_i, θ).
M step (max over θ, closed form): N_k = Σ_i r_ik, π_k = N_k / N, μ_k = Σ_i r_ik x_i / N_k,
Σ_k = Σ_i r_ik (x_i - μ_k)(x_i - μ_k)ᵀ / N_k.

The ridge ``reg`` > 0 keeps every Σ_k positive definite (a component on one point, or on none,
would otherwise get a singular Σ_k and an infinite likelihood). It is a prior, not a patch: each
component sees one pseudo-point with scatter reg·I, log p(Σ_k) = -½ [log|Σ_k| + reg tr(Σ_k⁻¹)],
so the M step becomes Σ_k = (Σ_i r_ik (x_i - μ_k)(x_i - μ_k)ᵀ + reg I) / (N_k + 1), and EM is
coordinate ascent on F - (1/N) Σ_k ½ [log|Σ_k| + reg tr(Σ_k⁻¹)]. So it never decreases

    J(θ) = ℓ(θ) - (1/(2N)) Σ_k [log|Σ_k| + reg tr(Σ_k⁻¹)]      (J = ℓ when reg = 0: no prior).

A component that loses all its points keeps Σ_k = reg I and weight ≈ 0 instead of breaking.

**Probabilistic PCA** (Tipping & Bishop 1999): x = W z + μ + ε, z ~ N(0, I_q), ε ~ N(0, σ² I_D),
so x ~ N(μ, C) with C = W Wᵀ + σ² I_D. With S the sample covariance (1/N normalised) and
λ_1 ≥ … ≥ λ_D its eigenvalues, eigenvectors U, the maximum-likelihood solution is

    μ = x̄,   σ² = (1/(D - q)) Σ_{j>q} λ_j,   W = U_q (Λ_q - σ² I)^{1/2} R  (R any rotation; R = I).

Shapes: data ``x: (N, D)``; responsibilities ``r: (N, K)``; ``W: (D, q)``, ``mu: (D,)``,
``sigma2`` a scalar.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from tqdm import tqdm

from foundations.densities import GaussianMixture, gaussian_log_prob
from utils.training import NonFiniteLossError
from utils.validation import shape_of

__all__ = ["EMResult", "PPCA", "em_fit", "em_lower_bound", "em_m_step", "ppca_fit",
           "ppca_log_likelihood", "ppca_posterior"]


def _check_data(x: torch.Tensor, min_n: int = 1, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be a float tensor of shape (N, D), got {shape_of(x)}")
    if x.shape[0] < min_n or x.shape[1] < 1:
        raise ValueError(f"{name} must have N >= {min_n} points and D >= 1, got {shape_of(x)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} has non-finite entries (NaN or inf)")


def _check_reg(reg: float) -> None:
    if isinstance(reg, bool) or not (isinstance(reg, (int, float)) and math.isfinite(reg)
                                     and reg >= 0):
        raise ValueError(f"reg must be a finite number >= 0, got {reg!r}")


def _check_responsibilities(r: torch.Tensor, n: int) -> None:
    if not isinstance(r, torch.Tensor) or r.ndim != 2 or r.shape[0] != n or r.shape[1] < 1:
        raise ValueError(f"responsibilities must have shape (N={n}, K), got {shape_of(r)}")
    tol = 1e-5 if r.dtype == torch.float32 else 1e-10
    if not bool(torch.isfinite(r).all()) or bool((r < 0).any()):
        raise ValueError("responsibilities must be finite and non-negative")
    err = float((r.sum(1) - 1).abs().max())
    if err > tol * r.shape[1]:
        raise ValueError(f"responsibilities must sum to one over k for every point; off by "
                         f"{err:.3g}")


def _log_joint(x: torch.Tensor, mixture: GaussianMixture) -> torch.Tensor:
    """a_ik = log π_k + log N(x_i; μ_k, Σ_k) = log p(x_i, z = k): (N, K)."""
    return torch.log_softmax(mixture.logits, dim=0) + mixture.component_log_prob(x)


@torch.no_grad()
def em_m_step(x: torch.Tensor, r: torch.Tensor, reg: float = 0.0) -> GaussianMixture:
    """The M step: the mixture that maximises F(r, θ) - (1/(2N)) Σ_k [log|Σ_k| + reg tr(Σ_k⁻¹)]
    for fixed ``r`` (just F when ``reg = 0``).

    ``x: (N, D)``, ``r: (N, K)`` (rows on the simplex) → a :class:`GaussianMixture` with
    π_k = N_k / N, μ_k = Σ_i r_ik x_i / N_k and full covariances
    Σ_k = Σ_i r_ik (x_i - μ_k)(x_i - μ_k)ᵀ / N_k                 (reg = 0),
    Σ_k = (Σ_i r_ik (x_i - μ_k)(x_i - μ_k)ᵀ + reg I) / (N_k + 1)  (reg > 0),
    in ``x``'s dtype and device.
    """
    _check_data(x)
    _check_responsibilities(r, x.shape[0])
    _check_reg(reg)
    n, d = x.shape
    r = r.to(x.dtype)
    n_k = r.sum(0)                                                  # N_k: (K,)
    safe_n_k = n_k.clamp_min(torch.finfo(x.dtype).tiny)
    mu = (r.T @ x) / safe_n_k[:, None]                              # μ_k: (K, D)
    diff = x.unsqueeze(0) - mu.unsqueeze(1)                         # (K, N, D)
    scatter = (r.T.unsqueeze(-1) * diff).transpose(1, 2) @ diff     # Σ_i r_ik (x_i-μ_k)(..)ᵀ
    scatter = 0.5 * (scatter + scatter.transpose(-1, -2))
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    if reg > 0:
        cov = (scatter + reg * eye) / (n_k + 1)[:, None, None]
    else:
        cov = scatter / safe_n_k[:, None, None]
    _, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        bad = torch.nonzero(info).flatten().tolist()
        raise ValueError(f"components {bad} collapsed to a singular covariance (N_k = "
                         f"{n_k[bad].tolist()}); use reg > 0 or another start")
    pi = n_k / n_k.sum()                                            # π_k = N_k / N
    return GaussianMixture(pi, mu, cov)


@torch.no_grad()
def em_lower_bound(x: torch.Tensor, mixture: GaussianMixture, q: torch.Tensor) -> torch.Tensor:
    """F(q, θ) = (1/N) Σ_i Σ_k q_ik [log π_k + log N(x_i; μ_k, Σ_k) - log q_ik], a scalar.

    ``x: (N, D)``, ``q: (N, K)``. Equals ℓ(θ) - (1/N) Σ_i KL(q_i ‖ p(z | x_i)), so it is at most
    the average log-likelihood, with equality at q = the posterior (0 log 0 = 0).
    """
    _check_data(x)
    _check_responsibilities(q, x.shape[0])
    if q.shape[1] != mixture.num_components:
        raise ValueError(f"q has {q.shape[1]} columns, the mixture {mixture.num_components} "
                         f"components")
    a = _log_joint(x, mixture)
    terms = torch.where(q > 0, q * a, torch.zeros_like(a)) - torch.special.xlogy(q, q)
    return terms.sum(1).mean()


class EMResult(NamedTuple):
    """What :func:`em_fit` returns: the fitted ``mixture``; ``log_likelihood: (T+1,)``, the
    average log-likelihood ℓ(θ_t) at the start and after each of the T iterations; ``objective:
    (T+1,)``, J(θ_t) = ℓ(θ_t) + (1/N) Σ_k log p(Σ_k) (module docstring), which EM never
    decreases (= ℓ when reg = 0); ``converged``: whether J rose by less than ``tol`` before the
    last iteration."""

    mixture: GaussianMixture
    log_likelihood: torch.Tensor
    objective: torch.Tensor
    converged: bool


def _log_prior(mixture: GaussianMixture, reg: float, n: int) -> torch.Tensor:
    """(1/N) Σ_k log p(Σ_k) = -(1/(2N)) Σ_k [log|Σ_k| + reg tr(Σ_k⁻¹)]; 0 when reg = 0."""
    if reg == 0:
        return torch.zeros((), dtype=mixture.means.dtype, device=mixture.means.device)
    L = mixture.scale_tril
    eye = torch.eye(mixture.dim, dtype=L.dtype, device=L.device)
    trace_precision = torch.diagonal(torch.cholesky_solve(eye.expand_as(L), L),
                                     dim1=-2, dim2=-1).sum()
    log_det = 2 * torch.diagonal(L, dim1=-2, dim2=-1).log().sum()
    return -(log_det + reg * trace_precision) / (2 * n)


@torch.no_grad()
def em_fit(x: torch.Tensor, init: int | GaussianMixture, iterations: int = 100, *,
           tol: float = 1e-6, reg: float = 1e-6, seed: int = 0, progress: bool = False,
           desc: str = "EM") -> EMResult:
    """Fit a full-covariance Gaussian mixture to ``x: (N, D)`` by expectation-maximisation.

    Args:
        init: the number of components K (started by k-means++, ``GaussianMixture.from_data(x,
            K, seed)``) or a :class:`GaussianMixture` to start from (copied, cast to x's dtype).
        iterations: at most this many E+M steps.
        tol: stop once an iteration raises the objective J by less than ``tol`` nats per point.
        reg: the covariance prior (module docstring): one pseudo-point of scatter reg·I per
            component; squared units of x, so keep it well below the smallest variance expected.
            ``reg = 0`` is plain maximum likelihood (and fails if a component collapses).
        progress: show a tqdm bar.

    Each iteration: E step r = p(z | x, θ) by Bayes (the softmax of ``mixture.posterior``), then
    :func:`em_m_step`. Raises ``NonFiniteLossError`` if the log-likelihood stops being finite.
    """
    _check_data(x)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    _check_reg(reg)
    if isinstance(init, bool) or not isinstance(init, (int, GaussianMixture)):
        raise ValueError(f"init must be a number of components or a GaussianMixture, got "
                         f"{type(init).__name__}")
    if isinstance(init, int):
        if init < 1 or init > x.shape[0]:
            raise ValueError(f"k must satisfy 1 <= k <= N = {x.shape[0]}, got {init}")
        mixture = GaussianMixture.from_data(x, init, seed=seed)
    else:
        if init.dim != x.shape[1]:
            raise ValueError(f"the initial mixture has D = {init.dim}, x has D = {x.shape[1]}")
        mixture = GaussianMixture(init.weights.detach().to(x), init.means.detach().to(x),
                                  init.covariances.detach().to(x))

    def evaluate(m: GaussianMixture) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a = _log_joint(x, m)                                    # (N, K)
        log_p = torch.logsumexp(a, dim=1)                       # log p(x_i): (N,)
        ll = log_p.mean()
        if not bool(torch.isfinite(ll)):
            raise NonFiniteLossError(f"EM: the log-likelihood became {float(ll)}")
        r = (a - log_p[:, None]).exp()                          # p(z = k | x_i) by Bayes
        return r, ll, ll + _log_prior(m, reg, x.shape[0])

    r, ll, obj = evaluate(mixture)
    lls, objs, converged = [ll], [obj], False
    for _ in tqdm(range(iterations), desc=desc, disable=not progress, mininterval=1.0):
        mixture = em_m_step(x, r, reg)                          # M step
        r, ll, obj = evaluate(mixture)                          # E step for the next iteration
        lls.append(ll)
        objs.append(obj)
        if float(objs[-1] - objs[-2]) < tol:
            converged = True
            break
    return EMResult(mixture, torch.stack(lls), torch.stack(objs), converged)


class PPCA(NamedTuple):
    """Probabilistic PCA parameters: ``W: (D, q)``, ``mu: (D,)``, ``sigma2: ()``."""

    W: torch.Tensor
    mu: torch.Tensor
    sigma2: torch.Tensor


def ppca_fit(x: torch.Tensor, q: int) -> PPCA:
    """The closed-form maximum-likelihood PPCA of ``x: (N, D)`` with ``q`` latent dimensions.

    μ = x̄; S = (1/N) Σ_i (x_i - μ)(x_i - μ)ᵀ = U Λ Uᵀ (λ descending); σ² = mean of the D - q
    smallest λ; W = U_q (Λ_q - σ² I)^{1/2} (the rotation R = I; each column's largest-magnitude
    entry made positive, so the result is deterministic). Needs 1 <= q < D and N >= 2.
    """
    _check_data(x, min_n=2)
    n, d = x.shape
    if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q < d:
        raise ValueError(f"q must be an integer with 1 <= q < D = {d}, got {q!r}")
    mu = x.mean(0)
    centred = x - mu
    S = centred.T @ centred / n
    lam, U = torch.linalg.eigh(S)                       # ascending
    lam, U = lam.flip(0).clamp_min(0), U.flip(1)        # λ_1 ≥ … ≥ λ_D
    sigma2 = lam[q:].mean()
    if not float(sigma2) > torch.finfo(x.dtype).eps * float(lam[0]) * d:
        raise ValueError(f"the {d - q} smallest eigenvalues of the sample covariance are zero "
                         f"(N = {n}, D = {d}, q = {q}): the data lie in a q-dimensional subspace "
                         f"and the likelihood is unbounded; lower q or use more data")
    U_q = U[:, :q]
    sign = torch.sign(U_q.gather(0, U_q.abs().argmax(0, keepdim=True)))
    W = U_q * sign * (lam[:q] - sigma2).clamp_min(0).sqrt()
    return PPCA(W, mu, sigma2)


def _check_ppca(W, mu, sigma2, d: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(W, torch.Tensor) or W.ndim != 2 or not W.dtype.is_floating_point:
        raise ValueError(f"W must be a float tensor of shape (D, q), got {shape_of(W)}")
    D, q = W.shape
    if d is not None and D != d:
        raise ValueError(f"W must have D = {d} rows to match x, got {shape_of(W)}")
    if not isinstance(mu, torch.Tensor) or mu.shape != (D,):
        raise ValueError(f"mu must have shape ({D},), got {shape_of(mu)}")
    sigma2 = torch.as_tensor(sigma2, dtype=W.dtype, device=W.device)
    if sigma2.numel() != 1 or not bool(torch.isfinite(sigma2).all()) or not bool(sigma2 > 0):
        raise ValueError(f"sigma2 must be a positive finite scalar, got {sigma2}")
    if not (bool(torch.isfinite(W).all()) and bool(torch.isfinite(mu).all())):
        raise ValueError("W and mu must be finite")
    return sigma2.reshape(()), torch.eye(D, dtype=W.dtype, device=W.device)


def ppca_log_likelihood(x: torch.Tensor, W: torch.Tensor, mu: torch.Tensor,
                        sigma2: float | torch.Tensor) -> torch.Tensor:
    """log N(x; μ, C), C = W Wᵀ + σ² I, for each point: ``x: (..., D)`` → ``(...)``.

    With C = L Lᵀ (Cholesky): log N = -½ ‖L⁻¹(x - μ)‖² - Σ_j log L_jj - (D/2) log 2π, one
    triangular solve with all points as right-hand sides (no inverse, no determinant);
    differentiable in W, μ and σ². Its mean over a data set is -½ [D log 2π + log|C| + tr(C⁻¹ S)]
    with S the data's covariance about μ (1/N normalised).
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 1:
        raise ValueError(f"x must be a tensor of shape (..., D), got {shape_of(x)}")
    sigma2, eye = _check_ppca(W, mu, sigma2, d=x.shape[-1])
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x has non-finite entries (NaN or inf)")
    L = torch.linalg.cholesky(W @ W.T + sigma2 * eye)                 # C = L Lᵀ: (D, D)
    return gaussian_log_prob(x, mu, L)


def ppca_posterior(x: torch.Tensor, W: torch.Tensor, mu: torch.Tensor,
                   sigma2: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """p(z | x) = N(M⁻¹ Wᵀ (x - μ), σ² M⁻¹) with M = Wᵀ W + σ² I_q.

    ``x: (..., D)`` → ``(mean (..., q), covariance (q, q))`` (the covariance does not depend on x).
    The reconstruction W E[z | x] + μ tends to PCA's projection U_q U_qᵀ (x - μ) + μ as σ² → 0.
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 1:
        raise ValueError(f"x must be a tensor of shape (..., D), got {shape_of(x)}")
    sigma2, _ = _check_ppca(W, mu, sigma2, d=x.shape[-1])
    q = W.shape[1]
    M = W.T @ W + sigma2 * torch.eye(q, dtype=W.dtype, device=W.device)
    L = torch.linalg.cholesky(M)
    rhs = (x - mu) @ W                                               # (..., q)
    mean = torch.cholesky_solve(rhs.reshape(-1, q).T, L).T.reshape(rhs.shape)
    return mean, sigma2 * torch.cholesky_inverse(L)

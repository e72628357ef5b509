"""Small networks of the GAN part: MLPs for 2-D data, DCGAN for images, class-conditional
variants.

Shapes: noise z ``(B, latent_dim)`` float; labels y ``(B,)`` int64 in 0..num_classes-1; points
``(B, dim)``; images ``(B, C, H, W)`` with H = W = ``size``. Generators map (z[, y]) to samples,
critics map (x[, y]) to RAW scores ``(B,)`` (logits for the minimax / non-saturating losses; no
sigmoid here, the losses in :mod:`gans.losses` work on raw scores).

DCGAN (Radford, Metz & Chintala 2016): no pooling (strided convolutions down, transposed
convolutions up), BatchNorm in G and D except G's output layer and D's input layer, ReLU in G with
a tanh output (images in [-1, 1], as :func:`utils.data.digits` gives them), LeakyReLU(0.2) in D.
Resolutions: 16 = 4→8→16, 32 = 4→8→16→32, 28 = 7→14→28 (MNIST).

Class-conditional variants (``num_classes=K``): the generator concatenates a learned embedding
e(y) ∈ R^{latent_dim} to z; the critic is a projection discriminator (Miyato & Koyama 2018)

    D(x, y) = ψ(φ(x)) + ⟨e(y), φ(x)⟩,

with φ the feature extractor, ψ a linear head and e a learned class embedding.

``spectral_norm=True`` wraps every linear / convolutional weight W of a critic with
``torch.nn.utils.parametrizations.spectral_norm`` (Miyato et al. 2018): W / σ_max(W), σ_max
estimated by one power iteration per training forward pass. The class embedding is left
unnormalised. BatchNorm in a critic breaks the per-sample independence that a gradient penalty
assumes: pass ``batch_norm=False`` with ``gp_weight > 0`` (Gulrajani et al. 2017).

Packing (PacGAN, Lin et al. 2018): :class:`PackedCritic` scores m samples jointly,
D(x_1, …, x_m), so that it compares the product distributions P^m and Q^m, in which a dropped
mode is about m times as visible: TV(P^m, Q^m) = 1 − (1 − 1/K)^m when Q drops one of K equal
modes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from utils.validation import check_int, shape_of

__all__ = ["DCGANDiscriminator", "DCGANGenerator", "DCGAN_SIZES", "MLPCritic", "MLPGenerator",
           "PackedCritic"]

DCGAN_SIZES: tuple[int, ...] = (16, 28, 32)
_START = {16: (4, 2), 28: (7, 2), 32: (4, 3)}   # size -> (start resolution s0, number of ×2 steps)


def _check_classes(num_classes: object) -> int | None:
    return None if num_classes is None else check_int("num_classes", num_classes, minimum=1)


def _check_input(name: str, x: object, trailing: tuple[int, ...], what: str) -> torch.Tensor:
    """``x`` if it is a float tensor of shape ``(B, *trailing)`` with B ≥ 1."""
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point \
            or x.shape[1:] != trailing or x.ndim != 1 + len(trailing) or x.shape[0] < 1:
        raise ValueError(f"{name} must be a float tensor of shape {what}, got {shape_of(x)}"
                         + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))
    return x


def _check_labels(labels: object, batch: int, num_classes: int | None) -> torch.Tensor | None:
    """None for an unconditional network (labels must be None); else int64 ``(B,)`` in 0..K-1."""
    if num_classes is None:
        if labels is not None:
            raise ValueError("this network is unconditional (num_classes=None): pass no labels")
        return None
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 \
            or labels.shape != (batch,):
        dtype = f" of dtype {labels.dtype}" if isinstance(labels, torch.Tensor) else ""
        raise ValueError(f"labels must be an int64 tensor of shape ({batch},), got "
                         f"{shape_of(labels)}{dtype}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got values in "
                         f"{labels.min().item()}..{labels.max().item()}")
    return labels


def _maybe_sn(layer: nn.Module, on: bool) -> nn.Module:
    return _sn(layer) if on else layer


class _Conditioned(nn.Module):
    """Shared pieces: the latent / label checks and the generator's z ⊕ e(y) input."""

    def _init_classes(self, num_classes: object, embed_dim: int, *, critic: bool = False) -> None:
        self.num_classes = _check_classes(num_classes)
        self.embed = None if self.num_classes is None else nn.Embedding(self.num_classes,
                                                                         embed_dim)
        if critic and self.embed is not None:
            # e(y) ~ N(0, I) would make ⟨e(y), φ(x)⟩ √(3F) times larger than the linear head's
            # ψ(φ(x)) at initialisation; Xavier-uniform (as in Miyato & Koyama's code) keeps the
            # two terms of the same order.
            nn.init.xavier_uniform_(self.embed.weight)

    def _latent_input(self, z: object, labels: object) -> torch.Tensor:
        """z ``(B, latent_dim)`` → ``(B, latent_dim)``, or ``(B, 2·latent_dim)`` = [z, e(y)]."""
        z = _check_input("z", z, (self.latent_dim,), f"(B, {self.latent_dim})")
        labels = _check_labels(labels, z.shape[0], self.num_classes)
        return z if labels is None else torch.cat([z, self.embed(labels).to(z.dtype)], dim=1)

    def _project(self, features: torch.Tensor, score: torch.Tensor,
                 labels: object) -> torch.Tensor:
        """ψ(φ(x)) ``(B,)`` plus ⟨e(y), φ(x)⟩ for a conditional critic: features ``(B, F)``."""
        labels = _check_labels(labels, features.shape[0], self.num_classes)
        if labels is None:
            return score
        return score + (self.embed(labels).to(features.dtype) * features).sum(dim=1)


class MLPGenerator(_Conditioned):
    """z ``(B, latent_dim)`` [, labels ``(B,)``] → points ``(B, out_dim)``.

    ``depth`` hidden layers of ``hidden`` units with ReLU, then a linear output (unbounded: 2-D
    toys are not confined to a box).
    """

    def __init__(self, latent_dim: int = 2, out_dim: int = 2, hidden: int = 128, depth: int = 3,
                 num_classes: int | None = None):
        super().__init__()
        self.latent_dim = check_int("latent_dim", latent_dim, minimum=1)
        self.out_dim = check_int("out_dim", out_dim, minimum=1)
        hidden, depth = check_int("hidden", hidden, minimum=1), check_int("depth", depth, minimum=1)
        self._init_classes(num_classes, self.latent_dim)
        width = self.latent_dim * (1 if self.num_classes is None else 2)
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, self.out_dim))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self._latent_input(z, labels))


class MLPCritic(_Conditioned):
    """x ``(B, in_dim)`` [, labels ``(B,)``] → raw scores ``(B,)``.

    φ: ``depth`` hidden layers of ``hidden`` units with LeakyReLU(0.2); ψ: linear to one number;
    with ``num_classes`` the projection term ⟨e(y), φ(x)⟩ is added.
    """

    def __init__(self, in_dim: int = 2, hidden: int = 128, depth: int = 3,
                 spectral_norm: bool = False, num_classes: int | None = None):
        super().__init__()
        self.in_dim = check_int("in_dim", in_dim, minimum=1)
        hidden, depth = check_int("hidden", hidden, minimum=1), check_int("depth", depth, minimum=1)
        self._init_classes(num_classes, hidden, critic=True)
        layers: list[nn.Module] = []
        width = self.in_dim
        for _ in range(depth):
            layers += [_maybe_sn(nn.Linear(width, hidden), spectral_norm), nn.LeakyReLU(0.2)]
            width = hidden
        self.features = nn.Sequential(*layers)
        self.head = _maybe_sn(nn.Linear(hidden, 1), spectral_norm)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = _check_input("x", x, (self.in_dim,), f"(B, {self.in_dim})")
        phi = self.features(x)                                   # φ(x): (B, hidden)
        return self._project(phi, self.head(phi).squeeze(1), labels)


def _check_size(size: object) -> int:
    if not isinstance(size, int) or isinstance(size, bool) or size not in DCGAN_SIZES:
        raise ValueError(f"size must be one of {DCGAN_SIZES}, got {size!r}")
    return size


class DCGANGenerator(_Conditioned):
    """z ``(B, latent_dim)`` [, labels ``(B,)``] → images ``(B, channels, size, size)`` in [-1, 1].

    A linear layer to ``(c0, s0, s0)`` (s0 = 4, or 7 for size 28; c0 = width · 2^(n-1) for n
    doublings), BatchNorm + ReLU, then n transposed convolutions (kernel 4, stride 2, padding 1)
    that double the side and halve the channels, each followed by BatchNorm + ReLU except the last,
    which outputs ``channels`` maps through tanh.
    """

    def __init__(self, latent_dim: int = 64, channels: int = 1, size: int = 16, width: int = 64,
                 num_classes: int | None = None):
        super().__init__()
        self.latent_dim = check_int("latent_dim", latent_dim, minimum=1)
        self.channels = check_int("channels", channels, minimum=1)
        self.size = _check_size(size)
        width = check_int("width", width, minimum=1)
        self._init_classes(num_classes, self.latent_dim)
        s0, n = _START[self.size]
        c = width * 2 ** (n - 1)
        in_dim = self.latent_dim * (1 if self.num_classes is None else 2)
        self.project = nn.Linear(in_dim, c * s0 * s0, bias=False)   # BN follows: no bias
        self.start = (c, s0, s0)
        layers: list[nn.Module] = [nn.BatchNorm2d(c), nn.ReLU()]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2),
                       nn.ReLU()]
            c //= 2
        layers += [nn.ConvTranspose2d(c, self.channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.project(self._latent_input(z, labels))
        return self.net(h.view(h.shape[0], *self.start))


class DCGANDiscriminator(_Conditioned):
    """images ``(B, channels, size, size)`` [, labels ``(B,)``] → raw scores ``(B,)``.

    n strided convolutions (kernel 4, stride 2, padding 1) from ``size`` down to s0 (4, or 7 for
    28), channels width, 2·width, ...; LeakyReLU(0.2) after each, BatchNorm after all but the
    first (if ``batch_norm``). φ(x) is the flattened ``(B, c·s0·s0)`` feature map, ψ a linear
    layer; with ``num_classes`` the projection term ⟨e(y), φ(x)⟩ is added.
    """

    def __init__(self, channels: int = 1, size: int = 16, width: int = 64,
                 spectral_norm: bool = False, batch_norm: bool = True,
                 num_classes: int | None = None):
        super().__init__()
        self.channels = check_int("channels", channels, minimum=1)
        self.size = _check_size(size)
        width = check_int("width", width, minimum=1)
        s0, n = _START[self.size]
        layers: list[nn.Module] = []
        c_in, c = self.channels, width
        for i in range(n):
            layers.append(_maybe_sn(nn.Conv2d(c_in, c, 4, 2, 1, bias=i == 0 or not batch_norm),
                                    spectral_norm))
            if i > 0 and batch_norm:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.LeakyReLU(0.2))
            c_in, c = c, 2 * c
        self.features = nn.Sequential(*layers, nn.Flatten())
        n_features = c_in * s0 * s0
        self._init_classes(num_classes, n_features, critic=True)
        self.head = _maybe_sn(nn.Linear(n_features, 1), spectral_norm)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = _check_input("x", x, (self.channels, self.size, self.size),
                         f"(B, {self.channels}, {self.size}, {self.size})")
        phi = self.features(x)                                   # φ(x): (B, c·s0·s0)
        return self._project(phi, self.head(phi).squeeze(1), labels)


class PackedCritic(nn.Module):
    """PacGAN's packed critic: x ``(B, C, ...)`` → one raw score per pack ``(B/m,)``.

    The batch is cut into B/m packs of m CONSECUTIVE samples, each concatenated along the
    feature (channel) axis and scored by the wrapped critic:

        D_pack(x_{jm+1}, …, x_{jm+m}) = D([x_{jm+1} ⊕ … ⊕ x_{jm+m}]),   j = 0, …, B/m − 1,

    a reshape ``(B, C, ...)`` → ``(B/m, m·C, ...)``; so the wrapped critic takes m·C input
    features (``MLPCritic(in_dim=m·dim)``, ``DCGANDiscriminator(channels=m·C)``). Packs must be
    formed the same way from real and fake batches, from independent samples (a shuffled batch
    and i.i.d. noise give that). The losses of :mod:`gans.losses` then average over packs, so
    :func:`gans.adversarial_step` works unchanged. With ``pack=1`` this is the wrapped critic.
    Unconditional only; a gradient penalty would have to be taken per pack, not per sample.

    Args:
        critic: the wrapped critic, ``(B/m, m·C, ...)`` → ``(B/m,)``.
        pack: m ≥ 1, the samples per pack; B must be a multiple of it.
    """

    def __init__(self, critic: nn.Module, pack: int = 2):
        super().__init__()
        if not isinstance(critic, nn.Module):
            raise ValueError(f"critic must be a torch.nn.Module, got {type(critic).__name__}")
        self.critic = critic
        self.pack = check_int("pack", pack, minimum=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.ndim < 2 \
                or x.shape[0] < 1:
            raise ValueError(f"x must be a float tensor of shape (B, C, ...), got {shape_of(x)}")
        b, m = x.shape[0], self.pack
        if b % m:
            raise ValueError(f"the batch size must be a multiple of pack = {m}, got B = {b}")
        packs = x.reshape(b // m, m * x.shape[1], *x.shape[2:])   # row j = x_{jm} ⊕ … ⊕ x_{jm+m-1}
        return self.critic(packs)

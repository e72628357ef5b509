"""Procedurally drawn coloured shapes with labels and captions, for conditioning and multimodality.

Each image is one shape (circle, square or equilateral triangle pointing up) of one of six
colours, small or large, at a random position that keeps it wholly inside the frame, on a black
background. Coordinates are in pixels, x to the right (columns) and y down (rows); pixel (i, j)
covers [j, j + 1) x [i, i + 1). A shape's *radius* r is half the width of its bounding box:

- circle: the disc |p - c| <= r; area pi r^2, bounding box 2r x 2r;
- square: |p_x - c_x| <= r and |p_y - c_y| <= r; area 4 r^2, bounding box 2r x 2r;
- triangle: side 2r, height h = sqrt(3) r, apex up; area sqrt(3) r^2, bounding box 2r x h; its
  centre c is the centroid, 2h/3 below the apex.

Anti-aliasing: each pixel's coverage alpha is the fraction of its 4 x 4 sub-pixel centres that
fall inside the shape, and the pixel is background (1 - alpha) + colour alpha.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from utils.validation import check_int

__all__ = ["COLOUR_NAMES", "COLOUR_RGB", "SCALE_NAMES", "SHAPE_NAMES", "ShapesData", "shapes"]

SHAPE_NAMES = ("circle", "square", "triangle")
COLOUR_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan")
# RGB in [0, 1] for each colour name; the image holds 2 rgb - 1 in [-1, 1].
COLOUR_RGB = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0),
              (1.0, 1.0, 0.0), (1.0, 0.0, 1.0), (0.0, 1.0, 1.0))
SCALE_NAMES = ("small", "large")
SCALE_RADIUS = ((0.15, 0.25), (0.30, 0.40))  # r / size, uniform in this range, per scale
BACKGROUND = -1.0  # black, in every channel
SUPERSAMPLE = 4  # sub-pixels per pixel side
_SUBPIXELS_PER_CHUNK = 2**23  # bounds the working memory (about 32 MB a float32 array)
_SQRT3 = math.sqrt(3.0)


class ShapesData(NamedTuple):
    """The output of :func:`shapes` (n images).

    Attributes:
        images: (n, 3, size, size) float32 in [-1, 1]; background -1 (black).
        shape: (n,) int64 index into ``SHAPE_NAMES``.
        colour: (n,) int64 index into ``COLOUR_NAMES`` (RGB in ``COLOUR_RGB``).
        scale: (n,) int64 index into ``SCALE_NAMES``.
        captions: n strings "a {scale} {colour} {shape}", e.g. "a small red circle".
        centre: (n, 2) float32 (x, y) in pixels: the centre (centroid of a triangle).
        radius: (n,) float32 in pixels: half the width of the bounding box.
    """

    images: torch.Tensor
    shape: torch.Tensor
    colour: torch.Tensor
    scale: torch.Tensor
    captions: list[str]
    centre: torch.Tensor
    radius: torch.Tensor


def _bounding_box_height(shape: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Height of the bounding box: 2r for circles and squares, sqrt(3) r for triangles. (n,)."""
    is_triangle = shape == SHAPE_NAMES.index("triangle")
    return torch.where(is_triangle, _SQRT3 * radius, 2 * radius)


def shapes(n: int, size: int = 16, seed: int = 0) -> ShapesData:
    """Draw ``n`` images of one coloured shape each, with labels and captions.

    Labels are independent and uniform: shape over ``SHAPE_NAMES``, colour over ``COLOUR_NAMES``,
    scale over ``SCALE_NAMES``. The radius r (half the bounding-box width) is uniform in
    [0.15, 0.25] * size for small shapes and [0.30, 0.40] * size for large ones; the bounding box
    is placed uniformly among the positions that keep it inside the frame. Drawn in chunks, so
    n = 20,000 at size 32 needs the 246 MB of the result and a few tens of MB more.

    Args:
        n: number of images, an integer >= 1.
        size: side of the images in pixels, an integer >= 8.
        seed: integer >= 0; the same seed gives the same images.

    Returns:
        ``ShapesData(images, shape, colour, scale, captions, centre, radius)``; images
        (n, 3, size, size) float32 in [-1, 1], see :class:`ShapesData`.
    """
    n = check_int("n", n, minimum=1)
    size = check_int("size", size, minimum=8)
    seed = check_int("seed", seed, minimum=0)
    generator = torch.Generator().manual_seed(seed)
    shape = torch.randint(len(SHAPE_NAMES), (n,), generator=generator)
    colour = torch.randint(len(COLOUR_NAMES), (n,), generator=generator)
    scale = torch.randint(len(SCALE_NAMES), (n,), generator=generator)
    low, high = torch.tensor(SCALE_RADIUS, dtype=torch.float32)[scale].unbind(dim=1)
    radius = size * (low + (high - low) * torch.rand(n, generator=generator))
    height = _bounding_box_height(shape, radius)
    u = torch.rand(n, 2, generator=generator)
    left, top = u[:, 0] * (size - 2 * radius), u[:, 1] * (size - height)
    is_triangle = shape == SHAPE_NAMES.index("triangle")
    centre = torch.stack([left + radius, top + torch.where(is_triangle, 2 * height / 3, radius)],
                         dim=1)

    rgb = 2 * torch.tensor(COLOUR_RGB, dtype=torch.float32)[colour] - 1  # (n, 3) in {-1, 1}
    images = torch.empty(n, 3, size, size)
    chunk = max(1, _SUBPIXELS_PER_CHUNK // (SUPERSAMPLE * size) ** 2)
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        alpha = _coverage(shape[part], centre[part], radius[part], size)  # (B, size, size)
        # pixel = background (1 - alpha) + colour alpha
        images[part] = BACKGROUND + alpha[:, None] * (rgb[part, :, None, None] - BACKGROUND)
    captions = [f"a {SCALE_NAMES[s]} {COLOUR_NAMES[c]} {SHAPE_NAMES[k]}"
                for k, c, s in zip(shape.tolist(), colour.tolist(), scale.tolist(), strict=True)]
    return ShapesData(images, shape, colour, scale, captions, centre, radius)


def _coverage(shape: torch.Tensor, centre: torch.Tensor, radius: torch.Tensor,
              size: int) -> torch.Tensor:
    """Each pixel's coverage: the fraction of its SUPERSAMPLE^2 sub-pixel centres inside the
    shape. shape, radius: (B,); centre: (B, 2). Returns (B, size, size) in [0, 1]."""
    fine = SUPERSAMPLE * size
    p = (torch.arange(fine, dtype=torch.float32) + 0.5) / SUPERSAMPLE  # sub-pixel centres
    inside = torch.empty(len(shape), fine, fine, dtype=torch.bool)  # (B, rows y, columns x)
    for k, name in enumerate(SHAPE_NAMES):
        chosen = (shape == k).nonzero().squeeze(1)
        if len(chosen) == 0:
            continue
        cx, cy = centre[chosen, 0, None, None], centre[chosen, 1, None, None]
        r = radius[chosen, None, None]
        dx, dy = p[None, None, :] - cx, p[None, :, None] - cy  # (b, 1, fine), (b, fine, 1)
        if name == "circle":
            inside[chosen] = dx**2 + dy**2 <= r**2
        elif name == "square":
            inside[chosen] = (dx.abs() <= r) & (dy.abs() <= r)
        else:  # apex at cy - 2h/3, base at cy + h/3; half-width (depth below apex) / sqrt(3)
            h = _SQRT3 * r
            depth = dy + 2 * h / 3
            inside[chosen] = (dx.abs() * _SQRT3 <= depth) & (depth <= h)
    blocks = inside.view(len(shape), size, SUPERSAMPLE, size, SUPERSAMPLE)
    return blocks.to(torch.float32).mean(dim=(2, 4))

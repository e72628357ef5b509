"""Tests for utils.data.shapes: labels, captions, colours and the geometry of what is drawn."""

import math
import sys

import numpy as np
import pytest
import scipy.stats
import torch

from utils.data import COLOUR_NAMES, COLOUR_RGB, SCALE_NAMES, SHAPE_NAMES, ShapesData, shapes

SUBPIXEL = 1 / 4  # the renderer samples 4 x 4 points per pixel
P_FLOOR = 1e-3


@pytest.fixture(scope="module")
def data32():
    return shapes(600, size=32, seed=1)


@pytest.mark.parametrize("n, size", [(1, 8), (5, 16), (7, 32), (3, 13)])
def test_shapes_dtypes_ranges(n, size):
    data = shapes(n, size=size)
    assert isinstance(data, ShapesData)
    assert data.images.shape == (n, 3, size, size) and data.images.dtype == torch.float32
    assert data.images.min() >= -1 and data.images.max() <= 1
    for labels, names in [(data.shape, SHAPE_NAMES), (data.colour, COLOUR_NAMES),
                          (data.scale, SCALE_NAMES)]:
        assert labels.shape == (n,) and labels.dtype == torch.int64
        assert 0 <= labels.min() and labels.max() < len(names)
    assert data.centre.shape == (n, 2) and data.radius.shape == (n,)
    assert isinstance(data.captions, list) and len(data.captions) == n


def test_deterministic_given_seed():
    a, b, c = shapes(50, seed=3), shapes(50, seed=3), shapes(50, seed=4)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert not torch.equal(a.images, c.images)


def test_chunking_does_not_change_the_images(monkeypatch):
    reference = shapes(40, size=16, seed=2)
    monkeypatch.setattr(sys.modules["utils.data.drawn_shapes"], "_SUBPIXELS_PER_CHUNK", 3 * 64 * 64)
    chunked = shapes(40, size=16, seed=2)  # 3 images per chunk
    assert torch.equal(reference.images, chunked.images)


def test_captions_agree_with_labels(data32):
    for caption, k, c, s in zip(data32.captions, data32.shape, data32.colour, data32.scale,
                                strict=True):
        article, scale, colour, shape = caption.split(" ")
        assert article == "a"
        assert (SCALE_NAMES.index(scale), COLOUR_NAMES.index(colour), SHAPE_NAMES.index(shape)) \
            == (s.item(), c.item(), k.item())


def test_label_marginals_uniform():
    data = shapes(3000, size=8, seed=5)
    for labels, names in [(data.shape, SHAPE_NAMES), (data.colour, COLOUR_NAMES),
                          (data.scale, SCALE_NAMES)]:
        counts = np.bincount(labels.numpy(), minlength=len(names))
        assert scipy.stats.chisquare(counts).pvalue > P_FLOOR


def test_radius_and_position_within_ranges(data32):
    fraction = data32.radius / 32
    small = data32.scale == SCALE_NAMES.index("small")
    assert ((fraction[small] >= 0.15) & (fraction[small] <= 0.25)).all()
    assert ((fraction[~small] >= 0.30) & (fraction[~small] <= 0.40)).all()
    left, top, right, bottom = _bounding_box(data32)
    assert (left >= 0).all() and (top >= 0).all() and (right <= 32).all() and (bottom <= 32).all()


def _bounding_box(data):
    """(left, top, right, bottom) in pixels from the returned centre and radius."""
    cx, cy, r = data.centre[:, 0], data.centre[:, 1], data.radius
    triangle = data.shape == SHAPE_NAMES.index("triangle")
    h = math.sqrt(3) * r
    top = torch.where(triangle, cy - 2 * h / 3, cy - r)
    bottom = torch.where(triangle, cy + h / 3, cy + r)
    return cx - r, top, cx + r, bottom


def test_colour_at_the_centre_is_the_named_colour(data32):
    # At size 32, r >= 4.8 px; even a triangle's inscribed circle (radius r / sqrt(3) >= 2.77)
    # holds the whole pixel around its centroid (half-diagonal sqrt(2) / 2 from its centre,
    # so at most sqrt(2) from the centroid), so that pixel is fully covered: exactly the colour.
    rows, cols = data32.centre[:, 1].floor().long(), data32.centre[:, 0].floor().long()
    centre_pixel = data32.images[torch.arange(600), :, rows, cols]  # (n, 3)
    expected = 2 * torch.tensor(COLOUR_RGB)[data32.colour] - 1
    assert torch.equal(centre_pixel, expected)


def test_background_is_black_away_from_the_shape(data32):
    left, top, right, bottom = _bounding_box(data32)
    pixel = torch.arange(32, dtype=torch.float32)
    # Pixel (i, j) covers [j, j + 1) x [i, i + 1); it is clear of the box if it ends before the
    # box starts or starts after it ends, along either axis.
    clear_x = (pixel[None] + 1 <= left[:, None]) | (pixel[None] > right[:, None])  # (n, 32)
    clear_y = (pixel[None] + 1 <= top[:, None]) | (pixel[None] > bottom[:, None])
    clear = clear_y[:, :, None] | clear_x[:, None, :]  # (n, rows, cols)
    assert clear.float().mean() > 0.5
    background = data32.images.permute(1, 0, 2, 3)[:, clear]
    assert (background == -1).all()


def _coverage(data):
    """alpha = (pixel + 1) / 2 in a channel where the colour is 1 (every colour has one)."""
    return (data.images.max(dim=1).values + 1) / 2


def test_drawn_area_matches_the_closed_form_within_the_lattice_bound(data32):
    # The drawn area sum(alpha) is (1/16) x the number of sub-pixel centres inside the shape,
    # a lattice-point count at spacing h = 1/4. For a convex set of area A and perimeter P,
    # A - P h / 2 < count h^2 <= A + P h / 2 + h^2 (Nosarzewska 1948; Bokowski, Hadwiger and
    # Wills 1972).
    r = data32.radius.double()
    index = torch.arange(len(r)), data32.shape
    area = torch.stack([math.pi * r**2, 4 * r**2, math.sqrt(3) * r**2], dim=1)[index]
    perimeter = torch.stack([2 * math.pi * r, 8 * r, 6 * r], dim=1)[index]
    drawn = _coverage(data32).double().sum(dim=(1, 2))
    assert ((drawn - area).abs() <= perimeter * SUBPIXEL / 2 + SUBPIXEL**2).all()
    # Relative to the bounding box: circle pi / 4, square 1, triangle 1 / 2.
    box = torch.stack([4 * r**2, 4 * r**2, 2 * math.sqrt(3) * r**2], dim=1)[index]
    tolerance = (perimeter * SUBPIXEL / 2 + SUBPIXEL**2) / box
    target = torch.tensor([math.pi / 4, 1.0, 0.5], dtype=torch.float64)[data32.shape]
    assert ((drawn / box - target).abs() <= tolerance).all()


def test_lit_fraction_of_the_lit_bounding_box_tells_the_shapes_apart(data32):
    # From the image alone: lit pixels (coverage > 1/2) over the area of their bounding box is
    # about pi/4 for a circle, 1 for a square, 1/2 for a triangle; every large shape is
    # nearest its own value.
    lit = _coverage(data32) > 0.5
    height, width = lit.any(dim=2).sum(dim=1), lit.any(dim=1).sum(dim=1)
    ratio = lit.sum(dim=(1, 2)) / (height * width)
    targets = torch.tensor([math.pi / 4, 1.0, 0.5])
    nearest = (ratio[:, None] - targets[None]).abs().argmin(dim=1)
    large = data32.scale == SCALE_NAMES.index("large")
    assert torch.equal(nearest[large], data32.shape[large])


def test_large_shapes_light_more_pixels_than_small(data32):
    drawn = _coverage(data32).sum(dim=(1, 2))
    small = data32.scale == SCALE_NAMES.index("small")
    assert drawn[~small].mean() > 1.5 * drawn[small].mean()
    for k in range(len(SHAPE_NAMES)):
        kind = data32.shape == k
        # Radii (0.15-0.25 vs 0.30-0.40 of the frame) do not overlap, nor do the areas.
        assert drawn[kind & ~small].min() > drawn[kind & small].max()


@pytest.mark.parametrize("n", [0, -1, 2.5, True, "4"])
def test_bad_n(n):
    with pytest.raises(ValueError, match=r"n must be an integer >= 1, got"):
        shapes(n)


@pytest.mark.parametrize("size", [7, 0, -16, 16.0, False, None])
def test_bad_size(size):
    with pytest.raises(ValueError, match=r"size must be an integer >= 8, got"):
        shapes(4, size=size)


@pytest.mark.parametrize("seed", [-1, 0.5])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match=r"seed must be an integer >= 0, got"):
        shapes(4, seed=seed)

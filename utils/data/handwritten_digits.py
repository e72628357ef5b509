"""The 1,797 real 8x8 handwritten digits that scikit-learn ships inside its wheel (offline).

They are the UCI "Optical Recognition of Handwritten Digits" test set: 32x32 bitmaps of digits
written by 43 people, each counted in non-overlapping 4x4 blocks, so a pixel is an integer 0..16.
We map a pixel v to v / 8 - 1 in [-1, 1] and split off a fixed stratified 20% as the test set.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from utils.data._common import LabelledImages
from utils.validation import check_choice, is_int

__all__ = ["DIGITS_SPLITS", "digits"]

DIGITS_SPLITS = ("train", "test", "all")
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
DIGITS_MAX_PIXEL = 16  # load_digits counts ink in 4x4 blocks: 0..16


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The raw pixels (1797, 8, 8) uint8 in 0..16, labels (1797,) and each split's indices.

    Cached in-process: the caller copies before it hands anything out, so nobody can change the
    cache through a returned tensor.
    """
    from sklearn.datasets import load_digits  # imported here: sklearn is slow to import
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    pixels = bunch.images.astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    index = np.arange(len(labels))
    train, test = train_test_split(index, test_size=DIGITS_TEST_FRACTION, stratify=labels,
                                   random_state=DIGITS_SPLIT_SEED)
    splits = {"train": np.sort(train), "test": np.sort(test), "all": index}
    for array in (pixels, labels, *splits.values()):
        array.setflags(write=False)
    return pixels, labels, splits


def digits(split: str = "train", size: int = 8) -> LabelledImages:
    """The scikit-learn handwritten digits as images in [-1, 1] with their labels.

    Pixels v in 0..16 become v / 8 - 1, so blank paper is -1 and full ink is +1. The test split
    is a fixed stratified 20% (``train_test_split(..., test_size=0.2, stratify=labels,
    random_state=0)``): 360 images, 1,437 in train; the two are disjoint and together make
    ``"all"``. Within a split the images keep scikit-learn's order.

    For ``size > 8`` the 8x8 image is *resized* (bilinear interpolation, align_corners=False,
    then clamped to [-1, 1]), not padded, so the digit fills the frame as conv nets expect.

    Args:
        split: ``"train"`` (1,437 images), ``"test"`` (360) or ``"all"`` (1,797).
        size: side of the returned images, a positive multiple of 8 (8, 16, 32, ...).

    Returns:
        ``LabelledImages(images, labels)``: images (N, 1, size, size) float32 in [-1, 1];
        labels (N,) int64 in 0..9. Fresh tensors on every call.
    """
    split = check_choice("split", split, DIGITS_SPLITS)
    if not is_int(size) or size < 8 or size % 8 != 0:
        raise ValueError(f"size must be a positive multiple of 8 (8, 16, 32, ...), got {size!r}")
    size = int(size)
    pixels, labels, splits = _load_digits()
    index = splits[split]
    images = torch.from_numpy(pixels[index]).to(torch.float32)[:, None] / 8.0 - 1.0
    if size > 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        images = images.clamp(-1.0, 1.0)
    return LabelledImages(images, torch.from_numpy(labels[index].copy()))

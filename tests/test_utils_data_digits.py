"""Tests for utils.data.digits: the real scikit-learn digits, their split, and the resizing."""

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from utils.data import DIGITS_SPLITS, LabelledImages, digits

SKLEARN = load_digits()
SPLIT_SIZES = {"train": 1437, "test": 360, "all": 1797}


@pytest.mark.parametrize("split", DIGITS_SPLITS)
@pytest.mark.parametrize("size", [8, 16, 32])
def test_shapes_dtypes_ranges(split, size):
    data = digits(split, size)
    assert isinstance(data, LabelledImages)
    n = SPLIT_SIZES[split]
    assert data.images.shape == (n, 1, size, size) and data.images.dtype == torch.float32
    assert data.labels.shape == (n,) and data.labels.dtype == torch.int64
    assert data.images.min() == -1.0 and data.images.max() == 1.0
    assert set(data.labels.tolist()) == set(range(10))


def test_pixels_are_sklearns_mapped_by_x_over_8_minus_1():
    data = digits("all")
    np.testing.assert_array_equal(data.images[:, 0].numpy(), SKLEARN.images / 8 - 1)
    np.testing.assert_array_equal(data.labels.numpy(), SKLEARN.target)


def test_label_counts_and_stratified_test_split():
    all_counts = np.bincount(digits("all").labels.numpy(), minlength=10)
    np.testing.assert_array_equal(all_counts, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    test_counts = np.bincount(digits("test").labels.numpy(), minlength=10)
    train_counts = np.bincount(digits("train").labels.numpy(), minlength=10)
    np.testing.assert_array_equal(test_counts + train_counts, all_counts)
    # Stratified: every class is split 20 / 80 up to rounding.
    assert np.abs(test_counts - 0.2 * all_counts).max() <= 1


def _examples(data):
    """The split as a multiset of (pixels, label): digits can repeat, so compare multisets."""
    return Counter((image.numpy().tobytes(), int(label))
                   for image, label in zip(*data, strict=True))


def test_train_and_test_partition_all():
    train, test, everything = (_examples(digits(s)) for s in ("train", "test", "all"))
    assert train + test == everything
    assert sum(train.values()) == 1437 and sum(test.values()) == 360


@pytest.mark.parametrize("split", DIGITS_SPLITS)
def test_deterministic_and_fresh(split):
    first = digits(split)
    first.images.fill_(0.0)
    first.labels.fill_(0)
    second, third = digits(split), digits(split)
    assert torch.equal(second.images, third.images) and torch.equal(second.labels, third.labels)
    assert second.images.min() == -1.0 and second.labels.max() == 9


def test_size_16_is_a_bilinear_resize_of_the_8x8():
    # Bilinear 2x upsampling (align_corners=False) puts 3/4 x_i + 1/4 x_{i-1} and
    # 3/4 x_i + 1/4 x_{i+1} in output pixels 2i and 2i + 1 (edges replicated); averaging them
    # gives the filter [1/8, 3/4, 1/8] along each axis. So avg-pool(2) of the 16x16 image is the
    # 8x8 original smoothed by that separable filter, and close to it.
    small, large = digits("test", 8).images.double(), digits("test", 16).images.double()
    kernel_1d = torch.tensor([1 / 8, 3 / 4, 1 / 8], dtype=torch.float64)
    kernel = (kernel_1d[:, None] * kernel_1d[None, :])[None, None]
    expected = F.conv2d(F.pad(small, (1, 1, 1, 1), mode="replicate"), kernel)
    pooled = F.avg_pool2d(large, 2)
    torch.testing.assert_close(pooled, expected, rtol=0, atol=1e-6)
    # Close: per axis y_i - x_i = (x_{i-1} - x_i) / 8 + (x_{i+1} - x_i) / 8 and the filter has
    # L1 operator norm 1, so sum |pooled - small| <= (sum |row diffs| + sum |column diffs|) / 4.
    total_variation = small.diff(dim=-1).abs().sum() + small.diff(dim=-2).abs().sum()
    assert (pooled - small).abs().sum() <= total_variation / 4


def test_size_32_keeps_the_digit_filling_the_frame():
    small, large = digits("test", 8).images, digits("test", 32).images
    pooled = F.avg_pool2d(large, 4)
    # Resized, not padded: the ink sits where it sat in the 8x8 image.
    correlation = torch.corrcoef(torch.stack([pooled.flatten(), small.flatten()]))[0, 1]
    assert correlation > 0.9


@pytest.mark.parametrize("split", ["val", "Train", "", None, 0])
def test_bad_split(split):
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test', 'all'\), got"):
        digits(split)


@pytest.mark.parametrize("size", [0, 12, -8, 4, 8.0, 16.0, True, "16", None])
def test_bad_size(size):
    with pytest.raises(ValueError, match=r"size must be a positive multiple of 8 .*got"):
        digits("train", size)

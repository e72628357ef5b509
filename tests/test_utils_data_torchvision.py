"""Tests for utils.data.torchvision_sets, which never download: missing files, a failing
download, and small files written in the real on-disk formats."""

import pickle
import struct
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets

from utils.data import LabelledImages, cifar10, data_root, fashion_mnist, mnist

LOADERS = {  # loader: (torchvision class name, words of the offline alternative)
    mnist: ("MNIST", "digits(size=16)"),
    fashion_mnist: ("FashionMNIST", "digits(size=16)"),
    cifar10: ("CIFAR10", "shapes(n, size=32)"),
}
MNIST_LIKE = [(mnist, "MNIST"), (fashion_mnist, "FashionMNIST")]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any download torchvision might attempt fails instead of touching the network."""
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to download")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", refuse)
    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", refuse)


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("split", ["train", "test"])
def test_missing_files_name_dataset_folder_download_and_alternative(loader, split, tmp_path):
    _, alternative = LOADERS[loader]
    with pytest.raises(FileNotFoundError) as error:
        loader(split, root=tmp_path)
    message = str(error.value)
    assert "not found in" in message and str(tmp_path) in message
    assert "download=True" in message
    assert f"utils.data.{alternative}" in message


def test_root_defaults_to_dgm_data_then_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DGM_DATA", str(tmp_path))
    assert data_root() == tmp_path
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "MNIST" / "raw")):
        mnist()
    monkeypatch.delenv("DGM_DATA")
    assert data_root() == Path("~/.cache/dgm-book/data").expanduser()
    assert data_root("~/elsewhere") == Path.home() / "elsewhere"


@pytest.mark.parametrize("loader", list(LOADERS))
def test_failed_download_names_the_alternative(loader, tmp_path, monkeypatch):
    name, alternative = LOADERS[loader]

    def offline(self):
        raise URLError("no network")

    monkeypatch.setattr(getattr(torchvision.datasets, name), "download", offline)
    with pytest.raises(RuntimeError, match="could not download") as error:
        loader("train", root=tmp_path, download=True)
    assert f"utils.data.{alternative}" in str(error.value)
    assert isinstance(error.value.__cause__, URLError)


def _write_idx(path, magic, payload):
    """An idx file: big-endian int32 magic and sizes, then the uint8 payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(f">{1 + payload.ndim}i", magic, *payload.shape)
    path.write_bytes(header + payload.astype(np.uint8).tobytes())


def _fake_mnist(root, folder):
    """Train: 5 images, test: 3, with known pixels (including 0 and 255) and labels."""
    rng = np.random.default_rng(0)
    written = {}
    for split, prefix, n in [("train", "train", 5), ("test", "t10k", 3)]:
        pixels = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        pixels[0, 0, 0], pixels[0, 0, 1] = 0, 255
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", 2051, pixels)
        _write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", 2049, labels)
        written[split] = (pixels, labels)
    return written


@pytest.mark.parametrize("loader, folder", MNIST_LIKE)
@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_like_reads_the_idx_files(loader, folder, split, tmp_path):
    pixels, labels = _fake_mnist(tmp_path, folder)[split]
    data = loader(split, root=tmp_path)
    assert isinstance(data, LabelledImages)
    assert data.images.shape == (len(pixels), 1, 28, 28) and data.images.dtype == torch.float32
    assert data.labels.dtype == torch.int64
    np.testing.assert_array_equal(data.labels.numpy(), labels)
    np.testing.assert_allclose(data.images[:, 0].numpy(), pixels / 127.5 - 1, rtol=0, atol=1e-6)
    assert data.images[0, 0, 0, 0] == -1 and data.images[0, 0, 0, 1] == 1
    back = ((data.images[:, 0].double() + 1) * 127.5).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(back, pixels)


def test_mnist_needs_all_four_files(tmp_path):
    _fake_mnist(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="missing t10k-labels-idx1-ubyte"):
        mnist("train", root=tmp_path)


def _fake_cifar10(root):
    """data_batch_1..5 with one image each, test_batch with two, and batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    written = {"train": ([], []), "test": ([], [])}
    files = [(f"data_batch_{i}", "train", 1) for i in range(1, 6)] + [("test_batch", "test", 2)]
    for name, split, n in files:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
        written[split][0].append(data)
        written[split][1].extend(labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"airplane"] * 10, b"num_cases_per_batch": 10000,
                     b"num_vis": 3072}, f)
    return {split: (np.concatenate(data), np.array(labels)) for split, (data, labels)
            in written.items()}


@pytest.mark.parametrize("split, n", [("train", 5), ("test", 2)])
def test_cifar10_reads_the_pickled_batches(split, n, tmp_path):
    flat, labels = _fake_cifar10(tmp_path)[split]
    data = cifar10(split, root=tmp_path)
    assert data.images.shape == (n, 3, 32, 32) and data.images.dtype == torch.float32
    assert data.labels.dtype == torch.int64
    np.testing.assert_array_equal(data.labels.numpy(), labels)
    # Row layout: 1024 red values, then green, then blue, each 32 x 32 row-major.
    image, channel, row, col = 1, 2, 3, 4
    expected = flat[image, channel * 1024 + row * 32 + col] / 127.5 - 1
    assert data.images[image, channel, row, col].item() == pytest.approx(expected, abs=1e-6)
    np.testing.assert_allclose(data.images.reshape(n, -1).numpy(), flat / 127.5 - 1,
                               rtol=0, atol=1e-6)


def test_cifar10_rejects_a_malformed_batch(tmp_path):
    _fake_cifar10(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match=r"expected b'data' uint8 \(N, 3072\).*got data uint8"):
        cifar10("test", root=tmp_path)


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("split", ["all", "valid", None])
def test_bad_split(loader, split, tmp_path):
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test'\), got"):
        loader(split, root=tmp_path)


@pytest.mark.parametrize("loader", list(LOADERS))
def test_bad_root_and_download(loader, tmp_path):
    with pytest.raises(ValueError, match="root must be a path"):
        loader("train", root=3)
    with pytest.raises(ValueError, match="download must be a bool, got 'yes'"):
        loader("train", root=tmp_path, download="yes")

"""MNIST, Fashion-MNIST and CIFAR-10 for the gpu profile, behind the same ``LabelledImages``.

Nothing downloads unless asked (``download=True``). The files live under ``root``, by default
``$DGM_DATA`` or ``~/.cache/dgm-book/data``, in torchvision's layout:

- ``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (and ``FashionMNIST/raw/...``):
  idx files, a big-endian int32 header (magic 2051 for images, 2049 for labels, then the sizes)
  followed by uint8 pixels or labels; read by ``torchvision.datasets.MNIST`` / ``FashionMNIST``.
- ``root/cifar-10-batches-py/{data_batch_1..5,test_batch}``: pickles of a dict with ``b"data"``,
  uint8 (N, 3072) (1024 red, 1024 green, 1024 blue values, each 32x32 row-major), and
  ``b"labels"``, N ints. We read them ourselves because torchvision's ``CIFAR10`` insists on the
  md5 checksums of the full files; torchvision only downloads them.

Pixels p in 0..255 become p / 127.5 - 1 in [-1, 1]. Offline, each loader fails with an error that
names the offline stand-in: ``digits(size=16)`` for the MNISTs, ``shapes(n, size=32)`` for CIFAR-10.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch

from utils.data._common import LabelledImages, uint8_to_unit_interval
from utils.validation import check_choice

__all__ = ["CIFAR10_CLASSES", "FASHION_MNIST_CLASSES", "data_root", "cifar10", "fashion_mnist",
           "mnist"]

SPLITS = ("train", "test")
DATA_ENV_VAR = "DGM_DATA"
DEFAULT_DATA_ROOT = "~/.cache/dgm-book/data"
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_MNIST_LIKE = {"MNIST": ("MNIST", "mnist"), "FashionMNIST": ("Fashion-MNIST", "fashion_mnist")}
_MNIST_ALTERNATIVE = ("utils.data.digits(size=16) (the 1,797 real 8x8 handwritten digits shipped "
                      "with scikit-learn, resized to 16x16)")
_CIFAR10_ALTERNATIVE = ("utils.data.shapes(n, size=32) (procedurally drawn coloured shapes with "
                        "labels, 3x32x32)")


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data folder: ``root`` if given, else ``$DGM_DATA``, else ``~/.cache/dgm-book/data``."""
    if root is None:
        root = os.environ.get(DATA_ENV_VAR) or DEFAULT_DATA_ROOT
    if not isinstance(root, (str, os.PathLike)):
        raise ValueError(f"root must be a path (str or os.PathLike) or None, got "
                         f"{type(root).__name__}")
    return Path(root).expanduser()


def mnist(split: str = "train", root: str | os.PathLike | None = None,
          download: bool = False) -> LabelledImages:
    """MNIST handwritten digits (60,000 train, 10,000 test).

    Args:
        split: ``"train"`` or ``"test"``.
        root: data folder (see :func:`data_root`); the files are under ``root/MNIST/raw``.
        download: fetch the files with torchvision if they are missing (needs internet).

    Returns:
        ``LabelledImages(images, labels)``: images (N, 1, 28, 28) float32 in [-1, 1] (p / 127.5
        - 1 of the uint8 pixel p); labels (N,) int64 in 0..9.

    Raises:
        FileNotFoundError: the files are missing and ``download`` is False.
        RuntimeError: the download failed (no network); both name the offline alternative.
    """
    return _load_mnist_like("MNIST", split, root, download)


def fashion_mnist(split: str = "train", root: str | os.PathLike | None = None,
                  download: bool = False) -> LabelledImages:
    """Fashion-MNIST clothing images (60,000 train, 10,000 test).

    Args:
        split: ``"train"`` or ``"test"``.
        root: data folder (see :func:`data_root`); the files are under ``root/FashionMNIST/raw``.
        download: fetch the files with torchvision if they are missing (needs internet).

    Returns:
        ``LabelledImages(images, labels)``: images (N, 1, 28, 28) float32 in [-1, 1]; labels
        (N,) int64 in 0..9, named by ``FASHION_MNIST_CLASSES``.

    Raises:
        FileNotFoundError: the files are missing and ``download`` is False.
        RuntimeError: the download failed (no network); both name the offline alternative.
    """
    return _load_mnist_like("FashionMNIST", split, root, download)


def cifar10(split: str = "train", root: str | os.PathLike | None = None,
            download: bool = False) -> LabelledImages:
    """CIFAR-10 natural images (50,000 train, 10,000 test).

    Args:
        split: ``"train"`` (``data_batch_1`` to ``data_batch_5``) or ``"test"`` (``test_batch``).
        root: data folder (see :func:`data_root`); the files are under
            ``root/cifar-10-batches-py``.
        download: fetch the files with torchvision if they are missing (needs internet).

    Returns:
        ``LabelledImages(images, labels)``: images (N, 3, 32, 32) float32 in [-1, 1], RGB;
        labels (N,) int64 in 0..9, named by ``CIFAR10_CLASSES``.

    Raises:
        FileNotFoundError: the files are missing and ``download`` is False.
        RuntimeError: the download failed (no network); both name the offline alternative.
    """
    split = check_choice("split", split, SPLITS)
    base = data_root(root)
    folder = base / CIFAR10_FOLDER
    files = [folder / name for name in CIFAR10_FILES[split]]
    _ensure_files("CIFAR-10", "CIFAR10", "cifar10", files, folder, download, base,
                  _CIFAR10_ALTERNATIVE)
    images, labels = [], []
    for path in files:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")  # the CIFAR-10 format is a pickle
        data, batch_labels = batch[b"data"], np.asarray(batch[b"labels"], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 \
                or len(batch_labels) != len(data):
            raise ValueError(f"{path}: expected b'data' uint8 (N, 3072) and N b'labels', got "
                             f"data {data.dtype} {data.shape} and {len(batch_labels)} labels")
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.from_numpy(batch_labels))
    return LabelledImages(uint8_to_unit_interval(torch.cat(images)), torch.cat(labels))


def _load_mnist_like(name: str, split: str, root: str | os.PathLike | None,
                     download: bool) -> LabelledImages:
    """MNIST or FashionMNIST (torchvision's class and folder name) as ``LabelledImages``."""
    import torchvision.datasets  # imported here: only the gpu profile needs it

    split = check_choice("split", split, SPLITS)
    base = data_root(root)
    folder = base / name / "raw"
    label, loader = _MNIST_LIKE[name]
    _ensure_files(label, name, loader, [folder / f for f in MNIST_FILES], folder, download, base,
                  _MNIST_ALTERNATIVE)
    dataset = getattr(torchvision.datasets, name)(str(base), train=split == "train",
                                                  download=False)
    images = uint8_to_unit_interval(dataset.data)[:, None]  # (N, 28, 28) uint8 -> (N, 1, 28, 28)
    return LabelledImages(images.contiguous(), dataset.targets.to(torch.int64))


def _ensure_files(label: str, torchvision_name: str, loader: str, files: list[Path],
                  folder: Path, download: bool, root: Path, alternative: str) -> None:
    """Download with torchvision if files are missing and ``download``; else explain.

    label: the dataset's name for people; torchvision_name: its torchvision class; loader: the
    ``utils.data`` function that loads it; alternative: the offline stand-in to suggest.
    """
    if not isinstance(download, bool):
        raise ValueError(f"download must be a bool, got {download!r}")
    if all(path.is_file() for path in files):
        return
    if not download:
        missing = ", ".join(path.name for path in files if not path.is_file())
        raise FileNotFoundError(
            f"{label} not found in {folder} (missing {missing}). Download it once with "
            f"utils.data.{loader}(download=True) (needs internet), or point root / "
            f"${DATA_ENV_VAR} at a folder that has it; offline, use {alternative} instead.")
    import torchvision.datasets

    try:  # torchvision downloads, checks the md5 and unpacks into root
        getattr(torchvision.datasets, torchvision_name)(str(root), train=True, download=True)
    except (URLError, OSError, RuntimeError) as error:
        raise RuntimeError(
            f"could not download {label} into {root} ({type(error).__name__}: {error}). "
            f"Without network, use {alternative} instead.") from error

"""Dataset sources: where the raw pixels come from."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import SafeReuseError
from .core import RawData
from .download import download_fashion_mnist
from .idx import read_idx
from .registry import DATASETS

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FASHION_FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


FASHION_COUNTS = (60000, 10000)


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/safereuse`` (default ``~/.cache/safereuse``): where downloads go."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "safereuse"


def fashion_search_dirs(data_dir: str | None) -> list[Path]:
    """Folders searched for the Fashion-MNIST files, in order.

    Args:
        data_dir: the user's ``--data-dir`` (searched first, as is and its ``fashion-mnist/``).

    Returns:
        ``data_dir``, ``$SAFEREUSE_DATA`` (each as is and with ``fashion-mnist/``), Debian's
        ``/usr/share/datasets/fashion-mnist`` and the download cache.
    """
    dirs: list[Path] = []
    if data_dir:
        dirs += [Path(data_dir), Path(data_dir) / "fashion-mnist"]
    if os.environ.get("SAFEREUSE_DATA"):
        env = Path(os.environ["SAFEREUSE_DATA"])
        dirs += [env, env / "fashion-mnist"]
    dirs += [DEBIAN_FASHION_DIR, cache_dir() / "fashion-mnist"]
    return dirs


def find_fashion_dir(data_dir: str | None) -> Path | None:
    """The first folder of :func:`fashion_search_dirs` that holds all 4 files, or None."""
    for d in fashion_search_dirs(data_dir):
        if all((d / f).is_file() for f in FASHION_FILES.values()):
            return d
    return None


@DATASETS.register("fashion-mnist", "Fashion-MNIST, 70k 28×28 grey images, 10 classes")
def load_fashion_mnist(
    data_dir: str | None = None, *, expect_counts: tuple[int, int] | None = FASHION_COUNTS
) -> RawData:
    """Fashion-MNIST (Xiao et al. 2017): 60k/10k 28×28 grey images, 10 classes.

    Looks in :func:`fashion_search_dirs` and downloads into the cache when no folder has the files.

    Args:
        data_dir: extra folder to look in first.
        expect_counts: the (train, test) counts the files must hold, and then also 28×28 images;
            None accepts any count and size (small fixtures in tests).

    Returns:
        The raw train/test images in [0, 1] (``[N, 1, 28, 28]``) and labels 0-9.
    """
    folder = find_fashion_dir(data_dir)
    if folder is None:
        folder = download_fashion_mnist(cache_dir() / "fashion-mnist", searched=fashion_search_dirs(data_dir))
    n_train, n_test = expect_counts if expect_counts is not None else (None, None)
    fix = "delete the files and get them again (or reinstall Debian's dataset-fashion-mnist)"
    tx = read_idx(folder / FASHION_FILES["train_x"], 3, n_train)
    ty = read_idx(folder / FASHION_FILES["train_y"], 1, n_train)
    vx = read_idx(folder / FASHION_FILES["test_x"], 3, n_test)
    vy = read_idx(folder / FASHION_FILES["test_y"], 1, n_test)
    for x, y, split in ((tx, ty, "train"), (vx, vy, "t10k")):
        if len(x) != len(y):
            raise SafeReuseError(f"{folder} has {len(x)} {split} images but {len(y)} labels", fix=fix)
        if expect_counts is not None and tuple(x.shape[1:]) != (28, 28):
            raise SafeReuseError(f"{folder} holds {tuple(x.shape[1:])} {split} images, not 28×28", fix=fix)
        if len(y) and int(y.max()) > 9:
            raise SafeReuseError(f"{folder} has {split} labels outside 0-9", fix=fix)
    return RawData(
        tx.unsqueeze(1).float().div_(255),
        ty.long(),
        vx.unsqueeze(1).float().div_(255),
        vy.long(),
        list(FASHION_CLASSES),
        str(folder),
    )


@DATASETS.register("digits", "scikit-learn digits (1,797 images) resized to 28×28, 10 classes")
def load_digits(data_dir: str | None = None, image_size: int = 28, test_fraction: float = 0.25) -> RawData:
    """scikit-learn's bundled 8×8 digits (1,797 images), resized to 28×28; fixed 75/25 split.

    Args:
        data_dir: unused (the data ships with scikit-learn); accepted like every dataset loader.
        image_size: side of the resized images.
        test_fraction: share of the images in the test split, drawn with a fixed seed.

    Returns:
        Images ``[N, 1, image_size, image_size]`` in [0, 1] and labels 0-9.
    """
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    size = (image_size, image_size)
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    x = x.clamp_(0.0, 1.0)
    y = torch.from_numpy(d.target.astype(np.int64))
    gen = torch.Generator().manual_seed(1234)  # fixed: the test split must never depend on a run's seed
    perm = torch.randperm(len(y), generator=gen)
    n_test = int(len(y) * test_fraction)
    te, tr = perm[:n_test], perm[n_test:]
    return RawData(x[tr], y[tr], x[te], y[te], [str(i) for i in range(10)], "sklearn.datasets.load_digits")

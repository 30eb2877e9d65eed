"""SVHN (Netzer et al. 2011), the cropped-digits format: ``train_32x32.mat`` and ``test_32x32.mat``.

Each file is a MATLAB (v5) file holding ``X``, ``uint8`` ``[32, 32, 3, N]`` (height, width, channel,
image), and ``y``, ``[N, 1]`` with labels 1-10, where 10 is the digit 0. The loader reads only these two
variables with :func:`scipy.io.loadmat` and, as is conventional (torchvision does the same), maps label
10 to 0 so that label ``d`` is the digit ``d``. The ``extra_32x32.mat`` set is not used.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import SafeReuseError
from .core import RawData
from .download import download_dataset
from .locate import search_dirs
from .registry import DATASETS
from .sources import cache_dir

SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
# Images per file in the official release; looked up when a file is read (tests patch it).
SVHN_COUNTS: dict[str, int] = {"train_32x32.mat": 73_257, "test_32x32.mat": 26_032}
_LAYOUT = "train_32x32.mat and test_32x32.mat"


def _fix(name: str) -> str:
    return f"delete it and get {name} again (http://ufldl.stanford.edu/housenumbers/{name})"


def read_svhn_mat(path: Path, expect_count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one SVHN cropped-digits ``.mat`` file.

    Args:
        path: ``train_32x32.mat`` or ``test_32x32.mat`` (or a file in the same format).
        expect_count: the number of images the file must hold (None: any).

    Returns:
        ``(images, labels)``: ``uint8`` ``[N, 3, 32, 32]`` and ``int64`` digits 0-9 (10 read as 0).

    Raises:
        SafeReuseError: the file is unreadable, truncated or not a MATLAB file, lacks ``X`` or ``y``,
            has the wrong shape, type or count, or labels outside 1-10; one line naming the file.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     write_svhn_mat(Path(d) / "t.mat", np.zeros((2, 3, 32, 32), np.uint8), np.array([0, 7]))
        ...     x, y = read_svhn_mat(Path(d) / "t.mat")
        >>> tuple(x.shape), y.tolist()
        ((2, 3, 32, 32), [0, 7])
    """
    import scipy.io
    from scipy.io.matlab import MatReadError

    path = Path(path)
    fix = _fix(path.name)
    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except (MatReadError, ValueError, TypeError, OSError, EOFError, IndexError, KeyError, struct.error,
            NotImplementedError, OverflowError, zlib.error) as exc:  # fmt: skip
        raise SafeReuseError(
            f"{path} is corrupt or truncated, or not a MATLAB file ({type(exc).__name__}: {exc})", fix=fix
        ) from None
    missing = [k for k in ("X", "y") if k not in mat]
    if missing:
        raise SafeReuseError(f"{path} has no variable {' or '.join(missing)}: not an SVHN file", fix=fix)
    x, y = mat["X"], mat["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise SafeReuseError(
            f"{path} holds X {x.dtype} {tuple(x.shape)}, not uint8 (32, 32, 3, N) images", fix=fix
        )
    n = x.shape[3]
    if y.size != n:
        raise SafeReuseError(f"{path} has {y.size} labels for {n} images", fix=fix)
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise SafeReuseError(f"{path} holds y of type {y.dtype}, not numeric labels", fix=fix)
    y = y.reshape(-1)
    if expect_count is not None and n != expect_count:
        raise SafeReuseError(f"{path} holds {n} images, expected {expect_count}", fix=fix)
    bad = np.flatnonzero((y < 1) | (y > 10) | (y != np.round(y)))
    if len(bad):
        raise SafeReuseError(
            f"{path} has labels outside 1-10 (first: image {int(bad[0])}, label {y[bad[0]]})", fix=fix
        )
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))
    return images, torch.from_numpy(y.astype(np.int64) % 10)


def write_svhn_mat(path: Path, images: np.ndarray, digits: np.ndarray) -> None:
    """Write images and digits as an SVHN cropped-digits ``.mat`` file (tests and fixtures).

    Args:
        path: the ``.mat`` file.
        images: ``uint8`` ``[N, 3, 32, 32]``.
        digits: ``[N]`` digits 0-9 (stored as the official files do: 0 as 10).
    """
    import scipy.io

    x = np.ascontiguousarray(np.asarray(images, dtype=np.uint8).transpose(2, 3, 1, 0))
    y = np.asarray(digits, dtype=np.uint8).reshape(-1, 1).copy()
    y[y == 0] = 10
    scipy.io.savemat(path, {"X": x, "y": y})


def find_svhn(data_dir: str | None) -> tuple[Path | None, list[Path]]:
    """The first search folder holding both ``.mat`` files (or None), and the folders searched.

    Raises:
        SafeReuseError: a folder other than the download cache holds one of the two files but not the
            other.
    """
    dirs = search_dirs("svhn", data_dir)
    for d in dirs:
        present = [f for f in SVHN_FILES if (d / f).is_file()]
        if len(present) == len(SVHN_FILES):
            return d, dirs
        if present and d != cache_dir() / "svhn":  # a part in the cache: an interrupted download, resumed
            other = next(f for f in SVHN_FILES if f not in present)
            raise SafeReuseError(f"{d} has {present[0]} but not {other}", fix=f"put {other} next to it")
    return None, dirs


@DATASETS.register("svhn", "SVHN cropped digits (official .mat files), 99k 32×32 colour images, 10 classes")
def load_svhn(data_dir: str | None = None) -> RawData:
    """SVHN cropped digits: 73,257/26,032 32×32 colour images of digits 0-9 (10 stored as 0).

    Looks in :func:`~safereuse.data.locate.search_dirs` for ``train_32x32.mat`` and ``test_32x32.mat``
    and downloads them into the cache when no folder has them.

    Args:
        data_dir: extra folder to look in first.

    Returns:
        Images ``[N, 3, 32, 32]`` in [0, 1] and labels 0-9 (class ``d`` is the digit ``d``).

    Raises:
        SafeReuseError: a file is missing, corrupt or of the wrong shape or count, a label is outside
            1-10, or (no copy found) the download failed.
    """
    folder, dirs = find_svhn(data_dir)
    if folder is None:
        folder = download_dataset("svhn", cache_dir() / "svhn", dirs, _LAYOUT)
    tx, ty = read_svhn_mat(folder / SVHN_FILES[0], SVHN_COUNTS.get(SVHN_FILES[0]))
    vx, vy = read_svhn_mat(folder / SVHN_FILES[1], SVHN_COUNTS.get(SVHN_FILES[1]))
    return RawData(
        tx.float().div_(255), ty, vx.float().div_(255), vy, [str(d) for d in range(10)], str(folder)
    )


__all__ = ["SVHN_COUNTS", "SVHN_FILES", "find_svhn", "load_svhn", "read_svhn_mat", "write_svhn_mat"]

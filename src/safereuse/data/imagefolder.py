"""A folder of images, one sub-folder per class, as a dataset (``imagefolder:PATH``).

Layouts::

    PATH/<class>/<image>                 split 80/20 into train/test (stratified, fixed seed)
    PATH/train/<class>/<image>           used as the splits as they are
    PATH/test/<class>/<image>

Rules:

* Class names are the sorted sub-folder names (of ``train/`` in the second layout); label ``i`` is the
  ``i``-th name. Hidden files and folders (``.name``) are ignored; images may sit in nested folders
  inside a class folder. Files with other extensions than ``IMAGE_EXTENSIONS`` are ignored.
* Images are grey (1 channel) when every image is stored in a grey mode (``1``, ``L``, ``LA``, ``I``,
  ``I;16``) or as a palette image whose pixels are all grey (GIF); otherwise all are RGB (3 channels,
  alpha dropped, grey images repeated).
* Size: ``size`` (an int for square, or ``(height, width)``) resizes every image to it. By default
  images keep their size when they all have the same one, and are otherwise all resized to 32×32 —
  a fixed size rather than, say, the most common one, so the shape does not depend on which files
  happen to be in the folder. Resizing is bilinear with antialiasing.
* Pixels are scaled to [0, 1] (8-bit by 255, 16-bit by 65535).
* The 80/20 split is stratified and deterministic: it depends on the folder's content (sorted file
  names) and a fixed seed, never on a run's seed, so the test split is the same for every run.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import SafeReuseError
from .core import RawData

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
DEFAULT_SIZE = (32, 32)
SPLIT_SEED = 1234  # fixed: the test split must never depend on a run's seed
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N"})

_LAYOUT_FIX = (
    "lay the images out as PATH/<class>/<image>.png (or PATH/train/<class>/… and PATH/test/<class>/…)"
)


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def _hidden_part(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _class_dirs(root: Path) -> list[Path]:
    return sorted((d for d in root.iterdir() if d.is_dir() and _visible(d)), key=lambda d: d.name)


def _images_in(folder: Path) -> list[Path]:
    files = [
        f
        for f in folder.rglob("*")
        if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not _hidden_part(f.relative_to(folder))
    ]
    return sorted(files, key=lambda f: f.relative_to(folder).as_posix())


def _scan(root: Path, names: list[str] | None = None) -> tuple[list[str], list[Path], list[int]]:
    """(class names, image files, labels) under ``root``; ``names`` fixes the classes (test split)."""
    dirs = _class_dirs(root)
    if not dirs:
        loose = [f.name for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]
        what = f"only loose images ({loose[0]}, …)" if loose else "no class sub-folders"
        raise SafeReuseError(f"image folder {root} has {what}", fix=_LAYOUT_FIX)
    found = [d.name for d in dirs]
    if names is None:
        names = found
    else:
        extra = sorted(set(found) - set(names))
        if extra:
            raise SafeReuseError(
                f"{root} has classes {extra} that the train folder lacks",
                fix="give train/ and test/ the same class folders",
            )
    files: list[Path] = []
    labels: list[int] = []
    for d in dirs:
        imgs = _images_in(d)
        if not imgs:
            raise SafeReuseError(
                f"class folder {d} has no images",
                fix=f"add images ({', '.join(sorted(IMAGE_EXTENSIONS))}) or remove the folder",
            )
        files += imgs
        labels += [names.index(d.name)] * len(imgs)
    return names, files, labels


def _read(path: Path) -> np.ndarray:
    """One image as float32 ``[C, H, W]`` in [0, 1], C = 1 for grey modes and 3 otherwise."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                mode = img.mode
                if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
                    arr = np.asarray(img, dtype=np.float32) / 65535.0
                elif mode in _GREY_MODES:
                    arr = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
                else:
                    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
                    if mode in ("P", "PA") and (arr == arr[..., :1]).all():
                        arr = arr[..., 0]  # a palette of greys (how GIF stores grey images)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:  # fmt: skip
        raise SafeReuseError(
            f"image {path} is corrupt or unreadable ({type(exc).__name__}: {exc})",
            fix="replace or delete that file",
        ) from None
    arr = np.clip(arr, 0.0, 1.0)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _stack(arrays: list[np.ndarray], channels: int, size: tuple[int, int]) -> torch.Tensor:
    out = torch.empty((len(arrays), channels, *size), dtype=torch.float32)
    for i, a in enumerate(arrays):
        t = torch.from_numpy(np.ascontiguousarray(a))
        if t.shape[0] != channels:
            t = t.expand(channels, -1, -1)
        if tuple(t.shape[1:]) != size:
            t = torch.nn.functional.interpolate(
                t[None], size=size, mode="bilinear", align_corners=False, antialias=True
            )[0].clamp_(0.0, 1.0)
        out[i] = t
    return out


def _stratified_split(labels: list[int], test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[np.random.default_rng([SPLIT_SEED, int(c)]).permutation(len(idx))]
        n_test = int(round(len(idx) * test_fraction))
        if len(idx) >= 2 and test_fraction > 0:
            n_test = max(1, n_test)
        n_test = min(n_test, len(idx) - 1)  # every class keeps a training image
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_imagefolder(
    path: str | Path, size: int | tuple[int, int] | None = None, test_fraction: float = 0.2
) -> RawData:
    """Load a folder of class sub-folders of images (see the module doc for the rules).

    Args:
        path: the folder.
        size: common image size, an int (square) or ``(height, width)``; None keeps the size when all
            images share it, else 32×32.
        test_fraction: share of each class put in the test split when the folder has no
            ``train/``/``test/`` sub-folders.

    Returns:
        :class:`RawData` with images ``[N, C, H, W]`` in [0, 1], labels and the class names.

    Raises:
        SafeReuseError: the path is missing or not a folder, has no class folders, a class folder has
            no images, an image is corrupt (the message names it), or the options are invalid.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise SafeReuseError(f"image folder {root} does not exist", fix="check the path after imagefolder:")
    if not root.is_dir():
        raise SafeReuseError(f"{root} is not a folder", fix=_LAYOUT_FIX)
    if not 0.0 <= test_fraction < 1.0:
        raise SafeReuseError(f"test_fraction {test_fraction} must be in [0, 1)", fix="use e.g. 0.2")
    target: tuple[int, int] | None = None
    if size is not None:
        target = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if min(target) < 1:
            raise SafeReuseError(f"image size {size} must be positive", fix="use e.g. 32")

    has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
    if has_train != has_test:
        present, missing = ("train", "test") if has_train else ("test", "train")
        raise SafeReuseError(
            f"{root} has a {present}/ folder but no {missing}/ folder",
            fix=f"add {root / missing}, or rename {present}/ if it is a class",
        )
    if has_train:
        names, tr_files, tr_labels = _scan(root / "train")
        _, te_files, te_labels = _scan(root / "test", names)
        files, labels = tr_files + te_files, tr_labels + te_labels
        tr = np.arange(len(tr_files))
        te = np.arange(len(tr_files), len(files))
    else:
        names, files, labels = _scan(root)
        tr, te = _stratified_split(labels, test_fraction)

    arrays = [_read(f) for f in files]
    channels = 3 if any(a.shape[0] == 3 for a in arrays) else 1
    if target is None:
        sizes = {tuple(a.shape[1:]) for a in arrays}
        target = sizes.pop() if len(sizes) == 1 else DEFAULT_SIZE
    x = _stack(arrays, channels, target)
    y = torch.tensor(labels, dtype=torch.long)
    tr_t, te_t = torch.from_numpy(tr), torch.from_numpy(te)
    return RawData(x[tr_t], y[tr_t], x[te_t], y[te_t], list(names), str(root))

"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) from the official *binary* versions — never the pickles.

Files (``cifar-10-batches-bin/`` and ``cifar-100-binary/`` as the archives unpack, or the archives
``cifar-10-binary.tar.gz`` / ``cifar-100-binary.tar.gz`` themselves, read in place)::

    cifar-10-batches-bin/data_batch_{1..5}.bin, test_batch.bin   records of 1 label byte + 3,072 pixels
    cifar-10-batches-bin/batches.meta.txt                        the 10 class names, one a line
    cifar-100-binary/train.bin, test.bin                         records of 2 label bytes (coarse, fine)
    cifar-100-binary/coarse_label_names.txt, fine_label_names.txt        + 3,072 pixels

The pixels of a record are the red, green and blue 32×32 planes, rows in order: exactly ``[3, 32, 32]``.
The Python versions of CIFAR are pickles, and unpickling a file runs whatever code it holds, so they are
never read.

CIFAR-100's 20 superclasses (SeaM's multi-class target problems are built from them) are available two
ways: the dataset ``cifar100-coarse`` is CIFAR-100 labelled with the superclasses, and
:func:`cifar100_superclass` gives a superclass's fine class ids, i.e. the ``classes`` of a ``cifar100``
:class:`~safereuse.data.DataSpec` whose labels are that superclass's 5 classes. The fine → superclass
table is fixed by the dataset (:data:`CIFAR100_FINE_TO_COARSE`); the loader checks the files against it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import SafeReuseError
from .core import RawData
from .download import download_dataset
from .locate import FileTree, search_dirs, tar_tree
from .registry import DATASETS
from .sources import cache_dir

PIXELS = 3 * 32 * 32

# Images per file in the official release; a file with another count is corrupt. Looked up when a file
# is read (tests write tiny files and patch this).
CIFAR_RECORDS: dict[str, int] = {
    **{f"data_batch_{i}.bin": 10_000 for i in range(1, 6)},
    "test_batch.bin": 10_000,
    "train.bin": 50_000,
    "test.bin": 10_000,
}

CIFAR100_SUPERCLASSES: tuple[str, ...] = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
)  # fmt: skip
"""The 20 superclass names, in label order, as ``coarse_label_names.txt`` writes them."""

CIFAR100_FINE_TO_COARSE: tuple[int, ...] = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)  # fmt: skip
"""The superclass of each fine class (fine label → coarse label), as the official files pair them."""


@dataclass(frozen=True)
class _Layout:
    key: str  # cache folder and download key
    title: str
    folder: str
    archive: str
    train: tuple[str, ...]
    test: str
    names: tuple[str, ...]  # class-name files, one per label byte: (meta,) or (coarse, fine)
    label_bytes: int
    num_classes: tuple[int, ...]  # per label byte

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, self.test, *self.names)

    @property
    def how(self) -> str:
        return f"{self.folder}/ or {self.archive}"


CIFAR10 = _Layout("cifar10", "CIFAR-10", "cifar-10-batches-bin", "cifar-10-binary.tar.gz",
                  tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin",
                  ("batches.meta.txt",), 1, (10,))  # fmt: skip
CIFAR100 = _Layout("cifar100", "CIFAR-100", "cifar-100-binary", "cifar-100-binary.tar.gz",
                   ("train.bin",), "test.bin", ("coarse_label_names.txt", "fine_label_names.txt"),
                   2, (20, 100))  # fmt: skip


def _fix(layout: _Layout) -> str:
    return (
        f"delete it and get {layout.archive} again (https://www.cs.toronto.edu/~kriz/{layout.archive}), "
        "or point --data-dir at an intact copy"
    )


def parse_cifar_records(
    data: bytes, label_bytes: int, num_classes: tuple[int, ...], where: str, expect: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split the bytes of a CIFAR binary file into images and labels, checking size and label range.

    Args:
        data: the file's bytes.
        label_bytes: 1 (CIFAR-10) or 2 (CIFAR-100: coarse, then fine).
        num_classes: the number of classes of each label byte, e.g. ``(20, 100)``.
        where: how errors name the file.
        expect: the number of records the file must hold (None: any).

    Returns:
        ``(images, labels)``: ``uint8`` arrays ``[N, 3, 32, 32]`` and ``[N, label_bytes]``.

    Raises:
        SafeReuseError: the length is not a whole number of records, the count is not ``expect``, or
            a label is out of range; one line naming the file.

    Example:
        >>> rec = bytes([7]) + bytes(range(256)) * 12
        >>> x, y = parse_cifar_records(rec * 2, 1, (10,), "mem")
        >>> x.shape, y[:, 0].tolist(), int(x[0, 2, 31, 31])
        ((2, 3, 32, 32), [7, 7], 255)
    """
    record = label_bytes + PIXELS
    fix = "delete the file and get the official binary version again"
    if len(data) % record or not data:
        raise SafeReuseError(
            f"{where} has {len(data)} bytes, not a whole number of {record}-byte CIFAR records", fix=fix
        )
    n = len(data) // record
    if expect is not None and n != expect:
        raise SafeReuseError(f"{where} holds {n} images, expected {expect}", fix=fix)
    arr = np.frombuffer(data, dtype=np.uint8).reshape(n, record)
    labels = arr[:, :label_bytes].copy()
    for j, k in enumerate(num_classes):
        top = int(labels[:, j].max())
        if top >= k:
            first = int(np.flatnonzero(labels[:, j] >= k)[0])
            raise SafeReuseError(
                f"{where} has label {top} (first bad: image {first}) but there are only {k} classes",
                fix=fix,
            )
    return arr[:, label_bytes:].reshape(n, 3, 32, 32).copy(), labels


def write_cifar_binary(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write images and labels as a CIFAR binary file (tests and fixtures).

    Args:
        path: the ``.bin`` file.
        images: ``uint8`` ``[N, 3, 32, 32]``.
        labels: ``[N]`` (CIFAR-10) or ``[N, 2]`` (CIFAR-100: coarse, fine).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     write_cifar_binary(Path(d) / "b.bin", np.zeros((3, 3, 32, 32), np.uint8), np.array([0, 1, 2]))
        ...     (Path(d) / "b.bin").stat().st_size
        9219
    """
    x = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), PIXELS)
    y = np.asarray(labels, dtype=np.uint8).reshape(len(images), -1)
    Path(path).write_bytes(np.concatenate([y, x], axis=1).tobytes())


def _names(text: bytes, want: int, where: str, fix: str) -> list[str]:
    try:
        names = [line.strip() for line in text.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise SafeReuseError(f"{where} is not a text file of class names", fix=fix) from None
    if len(names) != want:
        raise SafeReuseError(f"{where} has {len(names)} class names, expected {want}", fix=fix)
    return names


def _find(layout: _Layout, data_dir: str | None) -> tuple[FileTree | None, list[Path]]:
    """The first search folder holding the files (or the archive), and the folders searched."""
    dirs = search_dirs(layout.key, data_dir)
    for d in dirs:
        for root in (d / layout.folder, d):
            present = [f for f in layout.files if (root / f).is_file()]
            if len(present) == len(layout.files):
                return FileTree(str(root), {f: (root / f).read_bytes for f in layout.files}), dirs
            if present and root.name == layout.folder:
                missing = [f for f in layout.files if f not in present]
                raise SafeReuseError(
                    f"{root} lacks {', '.join(missing)} of {layout.title}",
                    fix=f"unpack {layout.archive} there again, or remove the folder",
                )
        if (d / layout.archive).is_file():
            wanted = {f"{layout.folder}/{f}" for f in layout.files}
            tree = tar_tree(d / layout.archive, wanted.__contains__, fix=_fix(layout))
            missing = sorted(w for w in wanted if w not in tree)
            if missing:
                raise SafeReuseError(
                    f"archive {d / layout.archive} lacks {', '.join(missing)}: it is not the official "
                    f"{layout.title} binary version",
                    fix=_fix(layout),
                )
            return tree.subtree(layout.folder + "/"), dirs
    return None, dirs


def _load(layout: _Layout, data_dir: str | None) -> tuple[FileTree, list[np.ndarray], list[list[str]]]:
    """(tree, [train x, train y, test x, test y], the class names of each label byte)."""
    tree, dirs = _find(layout, data_dir)
    if tree is None:
        dest = download_dataset(layout.key, cache_dir() / layout.key, dirs, layout.how)
        tree, _ = _find(layout, str(dest))
        if tree is None:  # pragma: no cover - download_dataset verified the archive
            raise SafeReuseError(f"{dest} holds no {layout.title}", fix=_fix(layout))
    fix = _fix(layout)
    parts = []
    for files in (layout.train, (layout.test,)):
        xs, ys = [], []
        for f in files:
            data = tree.read(f, fix)
            x, y = parse_cifar_records(
                data, layout.label_bytes, layout.num_classes, f"{tree.where}/{f}", CIFAR_RECORDS.get(f)
            )
            xs.append(x)
            ys.append(y)
        parts += [np.concatenate(xs), np.concatenate(ys)]
    names = [
        _names(tree.read(f, fix), k, f"{tree.where}/{f}", fix)
        for f, k in zip(layout.names, layout.num_classes, strict=True)
    ]
    return tree, parts, names


def _raw(
    x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, names: list[str], source: str
) -> RawData:
    return RawData(
        torch.from_numpy(x_tr).float().div_(255),
        torch.from_numpy(y_tr.astype(np.int64)),
        torch.from_numpy(x_te).float().div_(255),
        torch.from_numpy(y_te.astype(np.int64)),
        names,
        source,
    )


@DATASETS.register("cifar10", "CIFAR-10 (official binary version), 60k 32×32 colour images, 10 classes")
def load_cifar10(data_dir: str | None = None) -> RawData:
    """CIFAR-10: 50k/10k 32×32 colour images, 10 classes, from the official binary version.

    Looks in :func:`~safereuse.data.locate.search_dirs` for ``cifar-10-batches-bin/`` (or its files,
    or ``cifar-10-binary.tar.gz``) and downloads the archive into the cache when none is found.

    Args:
        data_dir: extra folder to look in first.

    Returns:
        Images ``[N, 3, 32, 32]`` in [0, 1], labels 0-9 and the names of ``batches.meta.txt``.

    Raises:
        SafeReuseError: a file is missing, of the wrong length or count, has labels out of range, the
            archive is corrupt, or (no copy found) the download failed.
    """
    tree, (x_tr, y_tr, x_te, y_te), names = _load(CIFAR10, data_dir)
    return _raw(x_tr, y_tr[:, 0], x_te, y_te[:, 0], names[0], tree.where)


def _check_pairs(y: np.ndarray, where: str) -> None:
    table = np.asarray(CIFAR100_FINE_TO_COARSE)
    bad = np.flatnonzero(table[y[:, 1]] != y[:, 0])
    if len(bad):
        raise SafeReuseError(
            f"{where}: {len(bad)} images have a superclass that does not match their class (first: image "
            f"{int(bad[0])}, class {int(y[bad[0], 1])} in superclass {int(y[bad[0], 0])})",
            fix=_fix(CIFAR100),
        )


def _load_cifar100(data_dir: str | None, coarse: bool) -> RawData:
    tree, (x_tr, y_tr, x_te, y_te), (coarse_names, fine_names) = _load(CIFAR100, data_dir)
    _check_pairs(y_tr, f"{tree.where}/train.bin")
    _check_pairs(y_te, f"{tree.where}/test.bin")
    col = 0 if coarse else 1
    names = coarse_names if coarse else fine_names
    return _raw(x_tr, y_tr[:, col], x_te, y_te[:, col], names, tree.where)


@DATASETS.register("cifar100", "CIFAR-100 (official binary version), 60k 32×32 colour images, 100 classes")
def load_cifar100(data_dir: str | None = None) -> RawData:
    """CIFAR-100 with its 100 fine classes: 50k/10k 32×32 colour images, from the binary version.

    Looks for ``cifar-100-binary/`` (or its files, or ``cifar-100-binary.tar.gz``) like
    :func:`load_cifar10`. A superclass's fine classes are :func:`cifar100_superclass` of it.

    Args:
        data_dir: extra folder to look in first.

    Returns:
        Images ``[N, 3, 32, 32]`` in [0, 1], fine labels 0-99 and the names of
        ``fine_label_names.txt``.

    Raises:
        SafeReuseError: as :func:`load_cifar10`, and when a (superclass, class) pair of the files does
            not match :data:`CIFAR100_FINE_TO_COARSE`.
    """
    return _load_cifar100(data_dir, coarse=False)


@DATASETS.register("cifar100-coarse", "CIFAR-100 labelled with its 20 superclasses (coarse labels)")
def load_cifar100_coarse(data_dir: str | None = None) -> RawData:
    """CIFAR-100 labelled with its 20 superclasses (the files' coarse labels): same images, same split.

    Args:
        data_dir: extra folder to look in first.

    Returns:
        Images ``[N, 3, 32, 32]`` in [0, 1], superclass labels 0-19 and the names of
        ``coarse_label_names.txt``.
    """
    return _load_cifar100(data_dir, coarse=True)


def cifar100_superclass(superclass: int | str) -> list[int]:
    """The fine class ids of a CIFAR-100 superclass: the ``classes`` of a ``cifar100`` DataSpec for a
    target problem made of that superclass (as SeaM's multi-class reuse experiments build them).

    Args:
        superclass: its label (0-19) or name (``"vehicles_1"``; spaces and case are ignored).

    Returns:
        The 5 fine class ids, ascending.

    Raises:
        SafeReuseError: no such superclass (the message suggests the closest name).

    Example:
        >>> cifar100_superclass("aquatic mammals"), cifar100_superclass(18)
        ([4, 30, 55, 72, 95], [8, 13, 48, 58, 90])
    """
    if isinstance(superclass, str):
        key = superclass.strip().lower().replace(" ", "_")
        if key.isdigit():
            superclass = int(key)
        elif key in CIFAR100_SUPERCLASSES:
            superclass = CIFAR100_SUPERCLASSES.index(key)
        else:
            close = difflib.get_close_matches(key, CIFAR100_SUPERCLASSES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise SafeReuseError(
                f"CIFAR-100 has no superclass {superclass!r}",
                fix=hint + "use 0-19 or one of " + ", ".join(CIFAR100_SUPERCLASSES),
            )
    if isinstance(superclass, bool) or not 0 <= int(superclass) < len(CIFAR100_SUPERCLASSES):
        raise SafeReuseError(f"CIFAR-100 has no superclass {superclass!r}", fix="use 0-19 or a name")
    return [f for f, c in enumerate(CIFAR100_FINE_TO_COARSE) if c == int(superclass)]


__all__ = [
    "CIFAR100_FINE_TO_COARSE",
    "CIFAR100_SUPERCLASSES",
    "CIFAR_RECORDS",
    "cifar100_superclass",
    "load_cifar10",
    "load_cifar100",
    "load_cifar100_coarse",
    "parse_cifar_records",
    "write_cifar_binary",
]

"""GTSRB, the German Traffic Sign Recognition Benchmark (Stallkamp et al. 2012), official layout.

Files, as the official archives unpack (``GTSRB_Final_Training_Images.zip``,
``GTSRB_Final_Test_Images.zip``, ``GTSRB_Final_Test_GT.zip``; the zips themselves are read in place)::

    GTSRB/Final_Training/Images/000NN/*.ppm          training images of class NN (00000-00042)
    GTSRB/Final_Training/Images/000NN/GT-000NN.csv   their annotations
    GTSRB/Final_Test/Images/*.ppm                    test images
    GT-final_test.csv                                test annotations, with labels (the GT zip; also
                                                     found in GTSRB/, GTSRB/Final_Test/ or its Images/)

Annotation files are semicolon-separated with a header: ``Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;
Roi.Y2;ClassId``. Images are of varying size (15×15 to 250×250) with a margin of about 10 % around the
sign; as is common, each image is cropped to its ROI — ``(X1, Y1)`` inclusive, ``(X2, Y2)`` exclusive,
which leaves the documented margin of at least 5 pixels outside the crop — and resized to 32×32 (bilinear,
antialiased) as RGB. Class names are the folder names ``00000``-``00042``: the benchmark names no
classes.
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import SafeReuseError
from .core import RawData
from .download import download_dataset
from .locate import FileTree, folder_tree, safe_member_name, search_dirs, zip_tree
from .registry import DATASETS
from .sources import cache_dir

GTSRB_CLASSES = 43
# Images in the official release; looked up when the files are read (tests patch it).
GTSRB_COUNTS: dict[str, int] = {"train": 39_209, "test": 12_630}
TRAIN_DIR = "GTSRB/Final_Training/Images/"
TEST_DIR = "GTSRB/Final_Test/Images/"
GT_NAME = "GT-final_test.csv"
GT_PLACES = (TEST_DIR + GT_NAME, "GTSRB/Final_Test/" + GT_NAME, "GTSRB/" + GT_NAME, GT_NAME)
ZIPS = ("GTSRB_Final_Training_Images.zip", "GTSRB_Final_Test_Images.zip", "GTSRB_Final_Test_GT.zip")
_COLUMNS = ("Filename", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")
_LAYOUT = "GTSRB/Final_Training/, GTSRB/Final_Test/ and GT-final_test.csv (or the three official zips)"
_FIX = (
    "get the official GTSRB files again (https://benchmark.ini.rub.de) or point --data-dir at an intact copy"
)

Row = tuple[str, tuple[int, int, int, int], int]  # file name, ROI (x1, y1, x2, y2), class id


def _tree_of(d: Path) -> FileTree | None:
    """The GTSRB files in folder ``d`` (unpacked folders and official zips merged), or None."""
    trees = []
    if (d / "GTSRB").is_dir():
        trees.append(folder_tree(d / "GTSRB", "GTSRB/"))
    elif (d / "Final_Training").is_dir() or (d / "Final_Test").is_dir():
        trees.append(folder_tree(d, "GTSRB/"))  # d is the GTSRB folder itself
    if (d / GT_NAME).is_file():
        trees.append(FileTree(str(d), {GT_NAME: (d / GT_NAME).read_bytes}))
    trees += [zip_tree(d / z, _FIX) for z in ZIPS if (d / z).is_file()]
    return FileTree.merge(str(d), trees) if trees else None


def find_gtsrb(data_dir: str | None) -> tuple[FileTree | None, list[Path]]:
    """The GTSRB files of the first search folder that holds them (or None), and the folders searched.

    Raises:
        SafeReuseError: a folder other than the download cache holds part of GTSRB (e.g. the training
            images but no test labels).
    """
    dirs = search_dirs("gtsrb", data_dir)
    for d in dirs:
        tree = _tree_of(d)
        if tree is None:
            continue
        parts = {
            f"training images ({TRAIN_DIR})": bool(tree.names(TRAIN_DIR)),
            f"test images ({TEST_DIR})": any(n.endswith(".ppm") for n in tree.names(TEST_DIR)),
            f"test labels ({GT_NAME})": any(p in tree for p in GT_PLACES),
        }
        if all(parts.values()):
            return tree, dirs
        if d == cache_dir() / "gtsrb":  # an interrupted download: download_dataset fetches the rest
            continue
        missing = [k for k, ok in parts.items() if not ok]
        raise SafeReuseError(
            f"{d} holds part of GTSRB but lacks its {' and '.join(missing)}",
            fix=f"add them (the zips {', '.join(ZIPS)} or their unpacked files), or remove the partial copy",
        )
    return None, dirs


def read_annotations(data: bytes, where: str) -> list[Row]:
    """Parse a GTSRB annotation file (``GT-000NN.csv`` or ``GT-final_test.csv``).

    Args:
        data: the file's bytes.
        where: how errors name the file.

    Returns:
        One ``(filename, (x1, y1, x2, y2), class_id)`` per image, in file order.

    Raises:
        SafeReuseError: a column is missing, a row is short or not numeric, or a file name is a path.

    Example:
        >>> read_annotations(b"Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\\n"
        ...                  b"00000_00000.ppm;29;30;5;6;24;25;0\\n", "GT-00000.csv")
        [('00000_00000.ppm', (5, 6, 24, 25), 0)]
    """
    try:
        lines = data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise SafeReuseError(f"{where} is not a text file", fix=_FIX) from None
    reader = csv.reader(lines, delimiter=";")
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in _COLUMNS if c not in header]
    if missing:
        raise SafeReuseError(f"{where} is not a GTSRB annotation file (no {missing[0]} column)", fix=_FIX)
    cols = [header.index(c) for c in _COLUMNS]
    rows: list[Row] = []
    for line_no, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            name = row[cols[0]].strip()
            x1, y1, x2, y2, cls = (int(row[c]) for c in cols[1:])
        except (IndexError, ValueError):
            raise SafeReuseError(
                f"line {line_no} of {where} is malformed: {';'.join(row)!r}", fix=_FIX
            ) from None
        if safe_member_name(name) != name or "/" in name:
            raise SafeReuseError(f"line {line_no} of {where} names {name!r}, not a file name", fix=_FIX)
        rows.append((name, (x1, y1, x2, y2), cls))
    return rows


def _image(data: bytes, roi: tuple[int, int, int, int] | None, size: int, where: str) -> np.ndarray:
    """One image as ``uint8`` ``[size, size, 3]``, cropped to ``roi`` when given."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                rgb = img.convert("RGB")
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:  # fmt: skip
        raise SafeReuseError(
            f"image {where} is corrupt or unreadable ({type(exc).__name__}: {exc})", fix=_FIX
        ) from None
    if roi is not None:
        x1, y1, x2, y2 = roi
        w, h = rgb.size
        if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
            raise SafeReuseError(f"the ROI {roi} of image {where} lies outside its {w}×{h} pixels", fix=_FIX)
        rgb = rgb.crop(roi)
    return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def _read_split(tree: FileTree, folder: str, rows: list[Row], size: int, crop: bool) -> np.ndarray:
    out = np.empty((len(rows), size, size, 3), dtype=np.uint8)
    for i, (name, roi, _) in enumerate(rows):
        rel = folder + name
        out[i] = _image(tree.read(rel, _FIX), roi if crop else None, size, f"{tree.where}/{rel}")
    return out


@DATASETS.register("gtsrb", "GTSRB traffic signs (official layout), 52k images cropped to 32×32, 43 classes")
def load_gtsrb(data_dir: str | None = None, *, size: int = 32, crop_roi: bool = True) -> RawData:
    """GTSRB: 39,209/12,630 traffic-sign images of 43 classes, cropped to the sign and resized.

    Looks in :func:`~safereuse.data.locate.search_dirs` for the official layout (unpacked or the three
    zips) and downloads the zips into the cache when no folder has them. Decoding all 52k images takes a
    while; the result is cached per process like every dataset.

    Args:
        data_dir: extra folder to look in first.
        size: side of the square output images.
        crop_roi: crop each image to its annotated ROI before resizing (see the module doc).

    Returns:
        Images ``[N, 3, size, size]`` in [0, 1], labels 0-42, class names ``00000``-``00042``.

    Raises:
        SafeReuseError: a class folder, annotation file or image is missing or corrupt, a label or ROI
            is out of range, the counts differ from the official ones, or (no copy found) the download
            failed.
    """
    tree, dirs = find_gtsrb(data_dir)
    if tree is None:
        dest = download_dataset("gtsrb", cache_dir() / "gtsrb", dirs, _LAYOUT)
        tree, _ = find_gtsrb(str(dest))
        if tree is None:  # pragma: no cover - download_dataset verified the zips
            raise SafeReuseError(f"{dest} holds no GTSRB", fix=_FIX)
    names = [f"{k:05d}" for k in range(GTSRB_CLASSES)]
    found = {
        n[len(TRAIN_DIR) :].split("/", 1)[0] for n in tree.names(TRAIN_DIR) if "/" in n[len(TRAIN_DIR) :]
    }
    absent = [n for n in names if n not in found]
    if absent:
        raise SafeReuseError(
            f"{tree.where} lacks the training class folders {', '.join(absent[:5])}"
            + (f" and {len(absent) - 5} more" if len(absent) > 5 else ""),
            fix=_FIX,
        )
    train_x, train_y = [], []
    for k, cls in enumerate(names):
        rel = f"{TRAIN_DIR}{cls}/GT-{cls}.csv"
        rows = read_annotations(tree.read(rel, _FIX), f"{tree.where}/{rel}")
        wrong = [r for r in rows if r[2] != k]
        if wrong:
            raise SafeReuseError(
                f"{tree.where}/{rel} gives {wrong[0][0]} class {wrong[0][2]}, but it is in folder {cls}",
                fix=_FIX,
            )
        train_x.append(_read_split(tree, f"{TRAIN_DIR}{cls}/", rows, size, crop_roi))
        train_y += [k] * len(rows)
    gt = next(p for p in GT_PLACES if p in tree)
    test_rows = read_annotations(tree.read(gt, _FIX), f"{tree.where}/{gt}")
    bad = [r for r in test_rows if not 0 <= r[2] < GTSRB_CLASSES]
    if bad:
        raise SafeReuseError(
            f"{tree.where}/{gt} gives {bad[0][0]} class {bad[0][2]}, outside 0-{GTSRB_CLASSES - 1}", fix=_FIX
        )
    for split, n in (("train", len(train_y)), ("test", len(test_rows))):
        want = GTSRB_COUNTS.get(split)
        if want is not None and n != want:
            raise SafeReuseError(f"{tree.where} lists {n} {split} images, expected {want}", fix=_FIX)
    test_x = _read_split(tree, TEST_DIR, test_rows, size, crop_roi)

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255).contiguous()

    return RawData(
        tensor(np.concatenate(train_x)),
        torch.tensor(train_y, dtype=torch.long),
        tensor(test_x),
        torch.tensor([r[2] for r in test_rows], dtype=torch.long),
        names,
        tree.where,
    )


__all__ = ["GTSRB_CLASSES", "GTSRB_COUNTS", "find_gtsrb", "load_gtsrb", "read_annotations"]

"""CIFAR-10/100, SVHN and GTSRB: tiny files in each official format, read back through ``load_data``;
search order, archives, downloads from a local server, and one-line errors for corrupt files."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

import safereuse.data as data_pkg
from cli_helpers import assert_one_line_error, run_cli
from safereuse.data import DataSpec, cifar, gtsrb, load_data, load_raw, svhn
from safereuse.data import download as dl
from safereuse.data.cifar import CIFAR100_FINE_TO_COARSE, cifar100_superclass, write_cifar_binary
from safereuse.data.locate import search_dirs
from safereuse.data.svhn import write_svhn_mat
from safereuse.errors import SafeReuseError

C10_TRAIN, C10_TEST = 4, 10  # per data_batch_i.bin (5 files: 20 images, 2 a class) and test_batch.bin
C100_TRAIN, C100_TEST = 200, 100  # 2 / 1 image a fine class
SVHN_TRAIN, SVHN_TEST = 20, 10
GT_TRAIN_PER_CLASS = 2  # GTSRB: 43 classes × 2 training images, 1 test image a class


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def env(monkeypatch, tmp_path):
    """No real data, no network, a private cache, tiny official counts, a fresh raw-data cache."""
    for var in ("SAFEREUSE_DATA", dl.MIRROR_ENV, "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(data_pkg, "_RAW_CACHE", {})
    counts = {f"data_batch_{i}.bin": C10_TRAIN for i in range(1, 6)}
    counts |= {"test_batch.bin": C10_TEST, "train.bin": C100_TRAIN, "test.bin": C100_TEST}
    monkeypatch.setattr(cifar, "CIFAR_RECORDS", counts)
    monkeypatch.setattr(svhn, "SVHN_COUNTS", {"train_32x32.mat": SVHN_TRAIN, "test_32x32.mat": SVHN_TEST})
    monkeypatch.setattr(gtsrb, "GTSRB_COUNTS", {"train": 43 * GT_TRAIN_PER_CLASS, "test": 43})
    return tmp_path


def rng_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


C10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(folder: Path) -> Path:
    """``folder/cifar-10-batches-bin`` with 5×4 training and 10 test images (labels i % 10)."""
    d = folder / "cifar-10-batches-bin"
    d.mkdir(parents=True, exist_ok=True)
    for b in range(1, 6):
        write_cifar_binary(d / f"data_batch_{b}.bin", rng_images(C10_TRAIN, b), (np.arange(4) + 4 * b) % 10)
    write_cifar_binary(d / "test_batch.bin", rng_images(C10_TEST, 9), np.arange(C10_TEST) % 10)
    (d / "batches.meta.txt").write_text("\n".join(C10_NAMES) + "\n\n")  # the official file ends in blanks
    return d


def write_cifar100(folder: Path) -> Path:
    d = folder / "cifar-100-binary"
    d.mkdir(parents=True, exist_ok=True)
    table = np.asarray(CIFAR100_FINE_TO_COARSE)
    for name, n, seed in (("train.bin", C100_TRAIN, 1), ("test.bin", C100_TEST, 2)):
        fine = np.arange(n) % 100
        write_cifar_binary(d / name, rng_images(n, seed), np.stack([table[fine], fine], 1))
    (d / "coarse_label_names.txt").write_text("\n".join(cifar.CIFAR100_SUPERCLASSES) + "\n")
    (d / "fine_label_names.txt").write_text("\n".join(f"fine{i}" for i in range(100)) + "\n")
    return d


def write_svhn(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_svhn_mat(folder / "train_32x32.mat", rng_images(SVHN_TRAIN, 1), np.arange(SVHN_TRAIN) % 10)
    write_svhn_mat(folder / "test_32x32.mat", rng_images(SVHN_TEST, 2), np.arange(SVHN_TEST) % 10)
    return folder


def ppm(w: int, h: int, roi: tuple[int, int, int, int], seed: int) -> bytes:
    """A w×h PPM: blue margin, the ROI a solid colour that encodes ``seed``."""
    from PIL import Image

    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 2] = 255
    x1, y1, x2, y2 = roi
    arr[y1:y2, x1:x2] = (200, seed % 256, 0)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PPM")
    return buf.getvalue()


HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"


def write_gtsrb(folder: Path) -> Path:
    """The official unpacked layout under ``folder/GTSRB`` (+ GT-final_test.csv in ``folder``)."""
    train = folder / "GTSRB" / "Final_Training" / "Images"
    for k in range(43):
        d = train / f"{k:05d}"
        d.mkdir(parents=True)
        rows = [HEADER]
        for j in range(GT_TRAIN_PER_CLASS):
            name = f"{j:05d}_{0:05d}.ppm"
            w, h = 12 + j, 14
            (d / name).write_bytes(ppm(w, h, (2, 3, w - 2, h - 3), k))
            rows.append(f"{name};{w};{h};2;3;{w - 2};{h - 3};{k}")
        (d / f"GT-{k:05d}.csv").write_text("\n".join(rows) + "\n")
    test = folder / "GTSRB" / "Final_Test" / "Images"
    test.mkdir(parents=True)
    rows = [HEADER]
    for i in range(43):
        k = (i * 5) % 43  # test files in an order unlike the classes
        (test / f"{i:05d}.ppm").write_bytes(ppm(16, 15, (3, 3, 13, 12), k))
        rows.append(f"{i:05d}.ppm;16;15;3;3;13;12;{k}")
    (folder / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    (test / "GT-final_test.test.csv").write_text(HEADER.rsplit(";", 1)[0] + "\n")  # as the test zip has
    return folder


def zip_gtsrb(src: Path, dest: Path) -> Path:
    """The three official zips, made from an unpacked ``src`` (as :func:`write_gtsrb` wrote it)."""
    dest.mkdir(parents=True, exist_ok=True)
    parts = {
        "GTSRB_Final_Training_Images.zip": sorted((src / "GTSRB" / "Final_Training").rglob("*")),
        "GTSRB_Final_Test_Images.zip": sorted((src / "GTSRB" / "Final_Test").rglob("*")),
        "GTSRB_Final_Test_GT.zip": [src / "GT-final_test.csv"],
    }
    for zname, files in parts.items():
        with zipfile.ZipFile(dest / zname, "w") as zf:
            for f in files:
                if f.is_file():
                    zf.write(f, f.relative_to(src).as_posix())
    return dest


def tar_dir(folder: Path, archive: Path, extra: dict[str, bytes] | None = None) -> Path:
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname=folder.name)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return archive


def one_line(err: pytest.ExceptionInfo[SafeReuseError]) -> str:
    msg = str(err.value)
    assert "\n" not in msg and err.value.fix, msg
    return msg


# ------------------------------------------------------------------------------------------------ CIFAR
@pytest.mark.parametrize("layout", ["folder", "files", "named-subfolder", "archive", "env"])
def test_cifar10_layouts(env, monkeypatch, layout):
    root = env / "data"
    src = write_cifar10(env / "src")
    if layout == "folder":
        write_cifar10(root)
    elif layout == "files":  # --data-dir is the batches folder itself
        root = write_cifar10(env / "data")
    elif layout == "named-subfolder":
        write_cifar10(root / "cifar10")
    elif layout == "archive":
        root.mkdir()
        tar_dir(src, root / "cifar-10-binary.tar.gz")
    else:
        write_cifar10(root)
        monkeypatch.setenv("SAFEREUSE_DATA", str(root))
    b = load_data(DataSpec("cifar10", data_dir=None if layout == "env" else str(root), val_fraction=0.0))
    assert b.class_names == C10_NAMES and b.channels == 3 and b.image_size == 32
    assert tuple(b.train.x.shape) == (20, 3, 32, 32) and tuple(b.test.x.shape) == (10, 3, 32, 32)
    assert sorted(b.test.y.tolist()) == list(range(10))
    assert len(b.mean) == len(b.std) == 3


def test_cifar10_pixels_and_labels_are_exact(env):
    """Records written by hand: label byte, then the R, G and B planes row by row."""
    d = write_cifar10(env)
    planes = np.arange(3 * 1024, dtype=np.uint32).reshape(3, 32, 32) % 251
    rec = bytes([7]) + planes.astype(np.uint8).tobytes()
    (d / "test_batch.bin").write_bytes(rec * C10_TEST)
    raw = load_raw("cifar10", str(env))
    assert raw.test_y.tolist() == [7] * C10_TEST
    assert torch.equal(raw.test_x[3], torch.from_numpy(planes.astype(np.float32)) / 255)
    assert raw.train_y.tolist() == [int(v) for v in (np.arange(4, 24) % 10)]
    assert (
        raw.train_x.dtype == torch.float32
        and 0.0 <= float(raw.train_x.min()) <= float(raw.train_x.max()) <= 1
    )


def test_cifar10_classes_and_train_size(env):
    write_cifar10(env)
    b = load_data(DataSpec("cifar10", classes=[3, 1], train_size=3, per_class=False, data_dir=str(env)))
    assert b.class_names == ["cat", "automobile"]
    assert len(b.train) + len(b.val) == 3
    assert sorted(b.test.y.tolist()) == [0, 1]  # one test image of each, relabelled in the given order
    raw = load_raw("cifar10", str(env))
    assert torch.equal(b.test.x[b.test.y == 0], raw.test_x[raw.test_y == 3])
    per = load_data(DataSpec("cifar10", train_size=1, per_class=True, val_fraction=0.0, data_dir=str(env)))
    assert sorted(per.train.y.tolist()) == list(range(10))


def test_cifar100_fine_coarse_and_superclasses(env):
    write_cifar100(env)
    fine = load_raw("cifar100", str(env))
    coarse = load_raw("cifar100-coarse", str(env))
    assert len(fine.class_names) == 100 and coarse.class_names == list(cifar.CIFAR100_SUPERCLASSES)
    assert torch.equal(fine.train_x, coarse.train_x) and torch.equal(fine.test_x, coarse.test_x)
    table = torch.tensor(CIFAR100_FINE_TO_COARSE)
    assert torch.equal(table[fine.train_y], coarse.train_y) and torch.equal(table[fine.test_y], coarse.test_y)
    # A superclass's fine classes, as a cifar100 target problem: 5 classes, images = that superclass's.
    ids = cifar100_superclass("vehicles_1")
    assert ids == [8, 13, 48, 58, 90]
    b = load_data(DataSpec("cifar100", classes=ids, val_fraction=0.0, data_dir=str(env)))
    assert b.class_names == [f"fine{i}" for i in ids] and b.num_classes == 5
    assert len(b.train) == 10 and len(b.test) == 5
    sup = CIFAR100_FINE_TO_COARSE[8]
    assert torch.equal(
        torch.sort(b.train.x.reshape(10, -1), 0).values,
        torch.sort(coarse.train_x[coarse.train_y == sup].reshape(10, -1), 0).values,
    )
    c = load_data(DataSpec("cifar100-coarse", classes=[sup], data_dir=str(env), val_fraction=0.0))
    assert c.class_names == ["vehicles_1"] and len(c.train) == 10


def test_cifar100_superclass_helper():
    groups = [cifar100_superclass(i) for i in range(20)]
    assert sorted(sum(groups, [])) == list(range(100)) and all(len(g) == 5 for g in groups)
    assert cifar100_superclass("Aquatic Mammals") == cifar100_superclass(0) == cifar100_superclass("0")
    with pytest.raises(SafeReuseError, match="did you mean 'vehicles_1'"):
        cifar100_superclass("vehicle_1")
    with pytest.raises(SafeReuseError, match="no superclass 20"):
        cifar100_superclass(20)


def test_archive_is_read_in_place_and_hostile_members_are_ignored(env):
    src = write_cifar10(env / "src")
    data = env / "data"
    data.mkdir()
    evil = {
        "../escaped.txt": b"x",
        "/tmp/abs-safereuse-test.txt": b"x",
        "cifar-10-batches-bin/../up.txt": b"x",
    }
    tar_dir(src, data / "cifar-10-binary.tar.gz", evil)
    raw = load_raw("cifar10", str(data))
    assert raw.source.endswith("cifar-10-binary.tar.gz:cifar-10-batches-bin") and len(raw.train_y) == 20
    assert sorted(p.name for p in data.iterdir()) == ["cifar-10-binary.tar.gz"]  # nothing extracted
    assert not (env / "escaped.txt").exists() and not Path("/tmp/abs-safereuse-test.txt").exists()


def _corrupt_cifar(env: Path, how: str) -> Path:
    d = write_cifar10(env / "data")
    f = d / "data_batch_2.bin"
    if how == "length":
        f.write_bytes(f.read_bytes() + b"\0")
    elif how == "count":
        f.write_bytes(f.read_bytes()[: 3 * 3073])
    elif how == "label":
        b = bytearray(f.read_bytes())
        b[3073] = 10
        f.write_bytes(bytes(b))
    elif how == "missing":
        (d / "data_batch_3.bin").unlink()
    elif how == "meta":
        (d / "batches.meta.txt").write_text("\n".join(C10_NAMES[:9]))
    elif how in ("truncated-archive", "archive-lacks-member"):
        if how == "archive-lacks-member":
            (d / "test_batch.bin").unlink()
        (env / "arc").mkdir()
        arc = tar_dir(d, env / "arc" / "cifar-10-binary.tar.gz")
        if how == "truncated-archive":
            arc.write_bytes(arc.read_bytes()[:5000])
        return env / "arc"
    return env / "data"


@pytest.mark.parametrize(
    "how, needles",
    [
        ("length", ["data_batch_2.bin has 12293 bytes, not a whole number of 3073-byte CIFAR records"]),
        ("count", ["data_batch_2.bin holds 3 images, expected 4"]),
        ("label", ["data_batch_2.bin has label 10 (first bad: image 1) but there are only 10 classes"]),
        ("missing", ["lacks data_batch_3.bin of CIFAR-10", "unpack cifar-10-binary.tar.gz"]),
        ("meta", ["batches.meta.txt has 9 class names, expected 10"]),
        ("truncated-archive", ["cifar-10-binary.tar.gz is corrupt or unreadable"]),
        ("archive-lacks-member", ["lacks cifar-10-batches-bin/test_batch.bin", "not the official"]),
    ],
)
def test_corrupt_cifar_is_one_line(env, how, needles):
    folder = _corrupt_cifar(env, how)
    with pytest.raises(SafeReuseError) as err:
        load_data(DataSpec("cifar10", data_dir=str(folder)))
    msg = one_line(err)
    for n in needles:
        assert n in msg, msg


def test_cifar100_mismatched_superclass_is_an_error(env):
    d = write_cifar100(env)
    b = bytearray((d / "test.bin").read_bytes())
    b[5 * 3074] = (b[5 * 3074] + 1) % 20  # image 5's coarse label no longer fits its fine label
    (d / "test.bin").write_bytes(bytes(b))
    with pytest.raises(SafeReuseError, match="1 images have a superclass that does not match") as err:
        load_raw("cifar100", str(env))
    assert "first: image 5, class 5" in one_line(err)


def test_data_dir_wins_over_env_and_cache(env, monkeypatch):
    write_cifar10(env / "mine")
    write_cifar10(env / "shared")
    monkeypatch.setenv("SAFEREUSE_DATA", str(env / "shared"))
    assert load_raw("cifar10", str(env / "mine")).source == str(env / "mine" / "cifar-10-batches-bin")
    assert load_raw("cifar10").source == str(env / "shared" / "cifar-10-batches-bin")
    dirs = search_dirs("cifar10", str(env / "mine"))
    assert dirs == [env / "mine", env / "mine" / "cifar10", env / "shared", env / "shared" / "cifar10",
                    env / "xdg-cache" / "safereuse" / "cifar10"]  # fmt: skip


# ------------------------------------------------------------------------------------------------- SVHN
def test_svhn_official_layout_and_label_10_is_0(env):
    folder = env / "svhn"
    folder.mkdir()
    x = np.random.default_rng(0).integers(0, 256, (32, 32, 3, SVHN_TRAIN), dtype=np.uint8)  # H, W, C, N
    y = (np.arange(SVHN_TRAIN) % 10 + 1).reshape(-1, 1).astype(np.uint8)  # 1-10, 10 = digit 0
    scipy.io.savemat(folder / "train_32x32.mat", {"X": x, "y": y})
    write_svhn_mat(folder / "test_32x32.mat", rng_images(SVHN_TEST, 2), np.arange(SVHN_TEST) % 10)
    raw = load_raw("svhn", str(env))  # found in DATA_DIR/svhn
    assert raw.class_names == [str(d) for d in range(10)]
    assert raw.train_y.tolist() == [int(v) % 10 for v in y[:, 0]] and 0 in raw.train_y.tolist()
    assert torch.equal(raw.train_x[5, 1], torch.from_numpy(x[:, :, 1, 5].astype(np.float32)) / 255)
    b = load_data(DataSpec("svhn", classes=[0, 9], train_size=3, data_dir=str(env)))
    assert b.num_classes == 2 and b.channels == 3 and len(b.train) + len(b.val) == 3
    assert sorted(b.test.y.tolist()) == [0, 1]


@pytest.mark.parametrize(
    "how, needle",
    [
        ("truncated", "train_32x32.mat is corrupt or truncated, or not a MATLAB file"),
        ("not-mat", "train_32x32.mat is corrupt or truncated, or not a MATLAB file"),
        ("label-11", "has labels outside 1-10 (first: image 3, label 11)"),
        ("label-0", "has labels outside 1-10 (first: image 0, label 0)"),
        ("no-y", "train_32x32.mat has no variable y: not an SVHN file"),
        ("grey", "not uint8 (32, 32, 3, N) images"),
        ("count", "train_32x32.mat holds 10 images, expected 20"),
        ("one-file", "has test_32x32.mat but not train_32x32.mat"),
    ],
)
def test_corrupt_svhn_is_one_line(env, how, needle):
    folder = write_svhn(env / "data")
    f = folder / "train_32x32.mat"
    x = np.zeros((32, 32, 3, SVHN_TRAIN), np.uint8)
    y = np.ones((SVHN_TRAIN, 1), np.uint8)
    if how == "truncated":
        f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    elif how == "not-mat":
        f.write_bytes(b"<html>404 not found</html>" * 20)
    elif how == "label-11":
        y[3] = 11
        scipy.io.savemat(f, {"X": x, "y": y})
    elif how == "label-0":
        y[0] = 0
        scipy.io.savemat(f, {"X": x, "y": y})
    elif how == "no-y":
        scipy.io.savemat(f, {"X": x})
    elif how == "grey":
        scipy.io.savemat(f, {"X": np.zeros((28, 28, SVHN_TRAIN), np.uint8), "y": y})
    elif how == "count":
        scipy.io.savemat(f, {"X": x[..., :10], "y": y[:10]})
    else:
        f.unlink()
    with pytest.raises(SafeReuseError) as err:
        load_data(DataSpec("svhn", data_dir=str(folder)))
    assert needle in one_line(err)


# ------------------------------------------------------------------------------------------------ GTSRB
@pytest.mark.parametrize("layout", ["unpacked", "zips", "gtsrb-folder-itself"])
def test_gtsrb_layouts(env, layout):
    src = write_gtsrb(env / "src")
    if layout == "unpacked":
        root = src
    elif layout == "zips":
        root = zip_gtsrb(src, env / "zips")
    else:  # --data-dir is the GTSRB folder, labels inside Final_Test/
        root = src / "GTSRB"
        (src / "GT-final_test.csv").rename(root / "Final_Test" / "GT-final_test.csv")
    raw = load_raw("gtsrb", str(root))
    assert raw.class_names == [f"{k:05d}" for k in range(43)]
    assert tuple(raw.train_x.shape) == (86, 3, 32, 32) and tuple(raw.test_x.shape) == (43, 3, 32, 32)
    assert raw.train_y.tolist() == [k for k in range(43) for _ in range(GT_TRAIN_PER_CLASS)]
    assert raw.test_y.tolist() == [(i * 5) % 43 for i in range(43)]
    # Cropped to the ROI: every pixel is the sign's colour (R 200, G = class id), no blue margin.
    assert torch.all(raw.test_x[:, 2] == 0)
    assert torch.allclose(raw.test_x[:, 1, 16, 16] * 255, raw.test_y.float(), atol=1e-3)
    assert torch.allclose(raw.train_x[:, 0], torch.full_like(raw.train_x[:, 0], 200 / 255))
    b = load_data(DataSpec("gtsrb", classes=[42, 0, 7], train_size=1, per_class=True, data_dir=str(root)))
    assert b.class_names == ["00042", "00000", "00007"] and len(b.train) == 3 and len(b.val) == 0
    assert sorted(b.test.y.tolist()) == [0, 1, 2]


def test_gtsrb_without_roi_crop_keeps_the_margin(env):
    write_gtsrb(env)
    raw = gtsrb.load_gtsrb(str(env), crop_roi=False, size=16)
    assert tuple(raw.test_x.shape) == (43, 3, 16, 16)
    assert float(raw.test_x[:, 2, 0, 0].min()) == 1.0  # the blue corner is still there


def _corrupt_gtsrb(env: Path, how: str) -> Path:
    root = write_gtsrb(env / "data")
    train = root / "GTSRB" / "Final_Training" / "Images"
    gt = root / "GT-final_test.csv"
    if how == "no-class-folder":
        for f in (train / "00042").iterdir():
            f.unlink()
        (train / "00042").rmdir()
    elif how == "no-column":
        f = train / "00003" / "GT-00003.csv"
        f.write_text(f.read_text().replace(";ClassId", ";Label"))
    elif how == "wrong-class":
        f = train / "00003" / "GT-00003.csv"
        f.write_text(f.read_text().replace(";3\n", ";4\n", 1))
    elif how == "test-label":
        gt.write_text(gt.read_text().replace(";0\n", ";43\n", 1))
    elif how == "roi":
        gt.write_text(gt.read_text().replace("00002.ppm;16;15;3;3;13;12", "00002.ppm;16;15;3;3;19;12"))
    elif how == "malformed":
        gt.write_text(gt.read_text().replace("00002.ppm;16;15;3;3;13;12", "00002.ppm;16;15;three;3;13;12"))
    elif how == "bad-image":
        (root / "GTSRB" / "Final_Test" / "Images" / "00004.ppm").write_bytes(b"P6\n16 15\n255\n" + b"\0" * 9)
    elif how == "missing-image":
        (root / "GTSRB" / "Final_Test" / "Images" / "00001.ppm").unlink()
    elif how == "no-labels":
        gt.unlink()
    elif how == "count":
        gt.write_text("\n".join(gt.read_text().splitlines()[:-1]) + "\n")
    elif how == "bad-zip":
        zips = zip_gtsrb(root, env / "zips")
        z = zips / "GTSRB_Final_Test_Images.zip"
        z.write_bytes(z.read_bytes()[:100])
        return zips
    return root


@pytest.mark.parametrize(
    "how, needle",
    [
        ("no-class-folder", "lacks the training class folders 00042"),
        ("no-column", "GT-00003.csv is not a GTSRB annotation file (no ClassId column)"),
        ("wrong-class", "gives 00000_00000.ppm class 4, but it is in folder 00003"),
        ("test-label", "GT-final_test.csv gives 00000.ppm class 43, outside 0-42"),
        ("roi", "the ROI (3, 3, 19, 12) of image"),
        ("malformed", "line 4 of"),
        ("bad-image", "00004.ppm is corrupt or unreadable"),
        ("missing-image", "has no GTSRB/Final_Test/Images/00001.ppm"),
        ("no-labels", "holds part of GTSRB but lacks its test labels (GT-final_test.csv)"),
        ("count", "lists 42 test images, expected 43"),
        ("bad-zip", "GTSRB_Final_Test_Images.zip is corrupt or unreadable"),
    ],
)
def test_corrupt_gtsrb_is_one_line(env, how, needle):
    root = _corrupt_gtsrb(env, how)
    with pytest.raises(SafeReuseError) as err:
        load_data(DataSpec("gtsrb", data_dir=str(root)))
    assert needle in one_line(err)


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_lists_the_datasets_and_a_corrupt_file_is_one_line(env, capsys):
    code, out, _ = run_cli(capsys, "list", "datasets")
    assert code == 0 and all(n in out for n in ("cifar10", "cifar100-coarse", "svhn", "gtsrb"))
    folder = _corrupt_cifar(env, "length")
    code, _, err = run_cli(capsys, "teacher", "train", "--data", "cifar10", "--data-dir", str(folder),
                           "--out", str(env / "t"))  # fmt: skip
    assert code == 2
    assert_one_line_error(code, err, "not a whole number of 3073-byte CIFAR records")
    assert not (env / "t").exists()


# -------------------------------------------------------------------------------------------- downloads


def serve_official(dataset: str, served: Path, work: Path) -> list[str]:
    """Write ``dataset``'s official files into ``served``; return their names."""
    if dataset == "cifar10":
        tar_dir(write_cifar10(work), served / "cifar-10-binary.tar.gz")
    elif dataset == "cifar100":
        tar_dir(write_cifar100(work), served / "cifar-100-binary.tar.gz")
    elif dataset == "svhn":
        write_svhn(served)
    else:
        zip_gtsrb(write_gtsrb(work), served)
    return [f.name for f in dl.OFFICIAL_FILES[dataset]]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pin(monkeypatch, dataset: str, served: Path, wrong: bool = False) -> None:
    files = tuple(
        dl.OfficialFile(f.name, f.url, "0" * 64 if wrong else sha(served / f.name))
        for f in dl.OFFICIAL_FILES[dataset]
    )
    monkeypatch.setitem(dl.OFFICIAL_FILES, dataset, files)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "svhn", "gtsrb"])
def test_download_lands_in_cache_verified(env, server, monkeypatch, dataset):
    url, served, log = server
    names = serve_official(dataset, served, env / "work")
    pin(monkeypatch, dataset, served)
    monkeypatch.setenv(dl.MIRROR_ENV, url)
    raw = load_raw(dataset)
    cache = env / "xdg-cache" / "safereuse" / dataset
    assert raw.source.startswith(str(cache))
    assert sorted(p.name for p in cache.iterdir()) == sorted(names)  # no temporary files left
    assert sorted(log) == sorted(f"/{n}" for n in names)
    data_pkg._RAW_CACHE.clear()
    load_raw(dataset)  # found in the cache now: the server is not asked again
    assert len(log) == len(names)


def test_interrupted_download_is_resumed(env, server, monkeypatch):
    url, served, log = server
    serve_official("gtsrb", served, env / "work")
    pin(monkeypatch, "gtsrb", served)
    monkeypatch.setenv(dl.MIRROR_ENV, url)
    cache = env / "xdg-cache" / "safereuse" / "gtsrb"
    cache.mkdir(parents=True)
    first = dl.OFFICIAL_FILES["gtsrb"][0].name
    (cache / first).write_bytes((served / first).read_bytes())  # only the first zip got through
    assert len(load_raw("gtsrb").train_y) == 86
    assert sorted(log) == sorted(f"/{f.name}" for f in dl.OFFICIAL_FILES["gtsrb"][1:])


def test_download_checksum_mismatch_leaves_nothing(env, server, monkeypatch):
    url, served, _ = server
    serve_official("svhn", served, env / "work")
    pin(monkeypatch, "svhn", served, wrong=True)
    monkeypatch.setenv(dl.MIRROR_ENV, url)
    with pytest.raises(SafeReuseError, match="failed its SHA-256 check") as err:
        load_raw("svhn")
    assert url + "train_32x32.mat" in one_line(err)
    assert list((env / "xdg-cache" / "safereuse" / "svhn").iterdir()) == []


def test_download_checksums_argument_and_kept_files(env, server):
    url, served, log = server
    serve_official("cifar10", served, env / "work")
    good = {"cifar-10-binary.tar.gz": [sha(served / "cifar-10-binary.tar.gz")]}
    dest = env / "dest"
    assert dl.download_dataset("cifar10", dest, [], "x", base_url=url, checksums=good) == dest
    assert dl.download_dataset("cifar10", dest, [], "x", base_url=url, checksums=good) == dest
    assert log == ["/cifar-10-binary.tar.gz"]  # the verified file was kept
    with pytest.raises(SafeReuseError, match="SHA-256"):
        dl.download_dataset("cifar10", env / "b", [], "x", base_url=url, checksums={})
    assert list((env / "b").iterdir()) == []


def test_offline_is_one_clear_line(env, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(dl.MIRROR_ENV, f"http://127.0.0.1:{port}/")
    with pytest.raises(SafeReuseError) as err:
        load_data(DataSpec("cifar100-coarse", data_dir=str(env / "mine")))
    msg = one_line(err)
    for needle in ("CIFAR-100 was not found", str(env / "mine"), "--data-dir", "$SAFEREUSE_DATA",
                   "cifar-100-binary/ or cifar-100-binary.tar.gz",
                   "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"):  # fmt: skip
        assert needle in msg, needle
    assert list((env / "xdg-cache" / "safereuse" / "cifar100").iterdir()) == []


def test_pins_are_sha256_hex():
    for files in dl.OFFICIAL_FILES.values():
        for f in files:
            assert len(f.sha256) == 64 and int(f.sha256, 16) >= 0 and f.url.endswith("/" + f.name)

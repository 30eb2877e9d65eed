"""Data layer: idx files, Fashion-MNIST lookup and download, digits, image folders, splits."""

from __future__ import annotations

import gzip
import hashlib
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

import safereuse.data as data_pkg
from safereuse.data import DataSpec, RawData, build_bundle, load_data, parse_classes, sources
from safereuse.data import download as dl
from safereuse.data.idx import read_idx, write_idx
from safereuse.data.imagefolder import load_imagefolder
from safereuse.errors import SafeReuseError

FILES = list(sources.FASHION_FILES.values())
N_TRAIN, N_TEST = 40, 20  # tiny fake Fashion-MNIST: 4 train / 2 test images per class


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def env(monkeypatch, tmp_path):
    """No real data, no proxy, a private cache, a fresh raw-data cache."""
    for var in ("SAFEREUSE_DATA", dl.URL_ENV, "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(sources, "DEBIAN_FASHION_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(data_pkg, "_RAW_CACHE", {})
    return tmp_path


def write_fake_fashion(folder: Path, seed: int = 0) -> Path:
    """Four small idx files in ``folder`` (labels 0-9, each class present in both splits)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    write_idx(folder / FILES[0], rng.integers(0, 256, (N_TRAIN, 28, 28)))
    write_idx(folder / FILES[1], np.arange(N_TRAIN) % 10)
    write_idx(folder / FILES[2], rng.integers(0, 256, (N_TEST, 28, 28)))
    write_idx(folder / FILES[3], np.arange(N_TEST) % 10)
    return folder


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def make_raw(sizes=(12, 12, 12, 12), test_per_class=3, hw=2) -> RawData:
    """Synthetic data whose pixel [0, 0, 0] holds the image's id (train ids < 1000, test ids ≥ 1000)."""
    ty = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    vy = torch.arange(len(sizes)).repeat_interleave(test_per_class)
    tx = torch.rand(len(ty), 1, hw, hw, generator=torch.Generator().manual_seed(0))
    vx = torch.rand(len(vy), 1, hw, hw, generator=torch.Generator().manual_seed(1))
    tx[:, 0, 0, 0] = torch.arange(len(ty)) / 10000
    vx[:, 0, 0, 0] = (1000 + torch.arange(len(vy))) / 10000
    return RawData(tx, ty, vx, vy, [f"c{i}" for i in range(len(sizes))], "synthetic")


def ids(x: torch.Tensor) -> set[int]:
    """The ids of the images in ``x`` (see :func:`make_raw`)."""
    return {round(float(v) * 10000) for v in x[:, 0, 0, 0]}


# --------------------------------------------------------------------------------------------- idx files
@pytest.mark.parametrize("shape", [(7, 5, 3), (11,)])
def test_idx_round_trip(tmp_path, shape):
    arr = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    path = tmp_path / "x.gz"
    write_idx(path, arr)
    out = read_idx(path, len(shape), shape[0])
    assert out.dtype == torch.uint8 and out.numpy().tolist() == arr.tolist()
    # A raw (not gzipped) idx file reads the same.
    raw = tmp_path / "x.idx"
    raw.write_bytes(gzip.decompress(path.read_bytes()))
    assert torch.equal(read_idx(raw, len(shape)), out)


def _corrupt(kind: str, path: Path) -> tuple[int, int | None]:
    """Write a broken idx file of the given ``kind``; return the (dims, count) to read it with."""
    good = tmp = path.with_suffix(".tmp")
    write_idx(tmp, np.zeros((4, 3, 3)))
    payload = gzip.decompress(good.read_bytes())
    if kind == "bad magic":
        path.write_bytes(gzip.compress(b"\x12\x34" + payload[2:]))
    elif kind == "wrong dims":
        return 1, None  # a 3-d file read as labels: magic says 3 dims
    elif kind == "truncated data":
        path.write_bytes(gzip.compress(payload[:-5]))
    elif kind == "truncated header":
        path.write_bytes(gzip.compress(payload[:6]))
    elif kind == "empty":
        path.write_bytes(gzip.compress(b""))
    elif kind == "wrong count":
        path.write_bytes(good.read_bytes())
        return 3, 5
    elif kind == "not gzip":
        path.write_bytes(b"this is not a gzip file at all")
    elif kind == "truncated gzip":
        path.write_bytes(good.read_bytes()[:20])
    elif kind == "missing":
        path.unlink(missing_ok=True)
    return 3, None


@pytest.mark.parametrize(
    "kind",
    ["bad magic", "wrong dims", "truncated data", "truncated header", "empty", "wrong count", "not gzip",
     "truncated gzip", "missing"],
)  # fmt: skip
def test_idx_corrupt_files_name_the_file(tmp_path, kind):
    path = tmp_path / "broken-idx3-ubyte.gz"
    write_idx(path, np.zeros((4, 3, 3)))
    dims, count = _corrupt(kind, path)
    with pytest.raises(SafeReuseError, match="broken-idx3-ubyte.gz"):
        read_idx(path, dims, count)


# ---------------------------------------------------------------------------------- Fashion-MNIST lookup
@pytest.mark.parametrize("sub", ["", "fashion-mnist"])
def test_fake_fashion_found_through_data_dir(env, sub):
    folder = write_fake_fashion(env / "mine" / sub if sub else env / "mine")
    raw = sources.load_fashion_mnist(str(env / "mine"), expect_counts=None)
    assert raw.source == str(folder)
    assert raw.train_x.shape == (N_TRAIN, 1, 28, 28) and raw.test_x.shape == (N_TEST, 1, 28, 28)
    assert raw.train_x.dtype == torch.float32 and raw.train_x.min() >= 0 and raw.train_x.max() <= 1
    assert raw.train_y.tolist() == [i % 10 for i in range(N_TRAIN)]
    assert raw.class_names[0] == "T-shirt/top" and len(raw.class_names) == 10


def test_fake_fashion_found_through_env_and_data_dir_wins(env, monkeypatch):
    write_fake_fashion(env / "env-data" / "fashion-mnist", seed=1)
    monkeypatch.setenv("SAFEREUSE_DATA", str(env / "env-data"))
    raw = sources.load_fashion_mnist(expect_counts=None)
    assert raw.source == str(env / "env-data" / "fashion-mnist")
    write_fake_fashion(env / "explicit", seed=2)
    raw = sources.load_fashion_mnist(str(env / "explicit"), expect_counts=None)
    assert raw.source == str(env / "explicit")


def test_real_loader_is_strict_about_counts(env):
    write_fake_fashion(env / "mine")
    with pytest.raises(SafeReuseError, match="holds 40 items, expected 60000"):
        sources.load_fashion_mnist(str(env / "mine"))


def test_fashion_label_image_mismatch(env):
    folder = write_fake_fashion(env / "mine")
    write_idx(folder / FILES[1], np.zeros(N_TRAIN - 1))
    with pytest.raises(SafeReuseError, match="40 train images but 39 labels"):
        sources.load_fashion_mnist(str(folder), expect_counts=None)


def test_fashion_labels_out_of_range(env):
    folder = write_fake_fashion(env / "mine")
    write_idx(folder / FILES[3], np.full(N_TEST, 10))
    with pytest.raises(SafeReuseError, match="labels outside 0-9"):
        sources.load_fashion_mnist(str(folder), expect_counts=None)


# -------------------------------------------------------------------------------- Fashion-MNIST download
def pin(monkeypatch, folder: Path, wrong: bool = False) -> None:
    digests = {f: ("0" * 64 if wrong else sha(folder / f)) for f in FILES}
    monkeypatch.setattr(dl, "FASHION_SHA256", digests)
    monkeypatch.setattr(dl, "FASHION_CONTENT_SHA256", {})


def test_download_lands_in_cache(env, server, monkeypatch):
    url, served, log = server
    write_fake_fashion(served)
    pin(monkeypatch, served)
    monkeypatch.setenv(dl.URL_ENV, url)
    raw = sources.load_fashion_mnist(expect_counts=None)
    cache = env / "xdg-cache" / "safereuse" / "fashion-mnist"
    assert raw.source == str(cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES)  # no temporary files left
    assert all(sha(cache / f) == sha(served / f) for f in FILES)
    assert sorted(log) == sorted(f"/{f}" for f in FILES)
    # The second time the cache is found; the server is not asked again.
    sources.load_fashion_mnist(expect_counts=None)
    assert len(log) == len(FILES)


def test_download_keeps_verified_files_and_replaces_bad_ones(env, server, monkeypatch):
    url, served, log = server
    write_fake_fashion(served)
    pin(monkeypatch, served)
    dest = env / "dest"
    write_fake_fashion(dest)
    (dest / FILES[1]).write_bytes(b"garbage")
    (dest / FILES[3]).unlink()
    assert dl.download_fashion_mnist(dest, [], base_url=url) == dest
    assert sorted(log) == sorted([f"/{FILES[1]}", f"/{FILES[3]}"])
    assert all(dl.verify_file(dest / f) for f in FILES)


def test_download_checksum_mismatch_leaves_nothing(env, server, monkeypatch):
    url, served, _ = server
    write_fake_fashion(served)
    pin(monkeypatch, served, wrong=True)
    monkeypatch.setenv(dl.URL_ENV, url)
    with pytest.raises(SafeReuseError, match="SHA-256") as err:
        sources.load_fashion_mnist(expect_counts=None)
    assert url in str(err.value)
    cache = env / "xdg-cache" / "safereuse" / "fashion-mnist"
    assert list(cache.iterdir()) == []


def test_download_checksum_parameter(env, server):
    url, served, _ = server
    write_fake_fashion(served)
    good = {f: [sha(served / f)] for f in FILES}
    assert dl.download_fashion_mnist(env / "a", [], base_url=url, checksums=good) == env / "a"
    with pytest.raises(SafeReuseError, match="SHA-256"):
        dl.download_fashion_mnist(env / "b", [], base_url=url, checksums={f: ["0" * 64] for f in FILES})
    assert list((env / "b").iterdir()) == []


def test_download_unreachable_is_one_clear_line(env, monkeypatch):
    monkeypatch.setenv(dl.URL_ENV, closed_port_url())
    with pytest.raises(SafeReuseError) as err:
        sources.load_fashion_mnist(str(env / "mine"))
    msg = str(err.value)
    assert "\n" not in msg and msg == err.value.one_line()
    for needle in ("apt-get install dataset-fashion-mnist", "--data-dir", "$SAFEREUSE_DATA",
                   str(env / "mine"), str(env / "no-debian"), "train-images-idx3-ubyte.gz"):  # fmt: skip
        assert needle in msg
    assert list((env / "xdg-cache" / "safereuse" / "fashion-mnist").iterdir()) == []


def test_download_base_url_argument_wins_and_404(env, server, monkeypatch):
    url, _, log = server  # serves an empty folder
    monkeypatch.setenv(dl.URL_ENV, closed_port_url())
    with pytest.raises(SafeReuseError, match="HTTP 404"):
        dl.download_fashion_mnist(env / "dest", [env / "x"], base_url=url.rstrip("/"))
    assert log == [f"/{FILES[0]}"]


def test_verify_accepts_either_pin(tmp_path, monkeypatch):
    path = tmp_path / FILES[1]
    write_idx(path, np.arange(10))
    content = hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()
    monkeypatch.setattr(dl, "FASHION_SHA256", {FILES[1]: sha(path)})
    monkeypatch.setattr(dl, "FASHION_CONTENT_SHA256", {FILES[1]: "0" * 64})
    assert dl.verify_file(path)
    # A re-gzipped copy (different .gz bytes, same data) verifies through the content pin.
    monkeypatch.setattr(dl, "FASHION_SHA256", {FILES[1]: "0" * 64})
    monkeypatch.setattr(dl, "FASHION_CONTENT_SHA256", {FILES[1]: content})
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1, mtime=0))
    assert dl.verify_file(path)
    path.write_bytes(b"not gzip")
    assert not dl.verify_file(path)


# ------------------------------------------------------------------------------------------------ digits
def test_digits():
    raw = sources.load_digits()
    assert len(raw.train_y) + len(raw.test_y) == 1797
    assert raw.train_x.shape[1:] == (1, 28, 28) and raw.test_x.shape[1:] == (1, 28, 28)
    for x in (raw.train_x, raw.test_x):
        assert x.dtype == torch.float32 and float(x.min()) >= 0 and float(x.max()) <= 1
    assert sorted(set(raw.train_y.tolist())) == list(range(10))
    assert torch.equal(sources.load_digits().test_y, raw.test_y)  # fixed split


def test_load_data_digits_example():
    b = load_data("digits", classes="0-2", train_size=30, seed=0)
    assert b.num_classes == 3 and len(b.train) + len(b.val) == 30
    assert b.channels == 1 and b.image_size == 28 and b.class_names == ["0", "1", "2"]


# ------------------------------------------------------------------------------------------ image folder
def save(path: Path, value, mode="L", size=(6, 4)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def test_imagefolder_flat_grey(tmp_path):
    for i in range(5):
        save(tmp_path / "dog" / f"{i}.png", 255)
        save(tmp_path / "cat" / f"{i}.{'gif' if i == 0 else 'bmp'}", 51)  # grey GIFs open as palette
    (tmp_path / "cat" / "notes.txt").write_text("ignored")
    (tmp_path / ".hidden").mkdir()
    raw = load_imagefolder(str(tmp_path))
    assert raw.class_names == ["cat", "dog"]
    assert raw.train_x.shape == (8, 1, 4, 6) and raw.test_x.shape == (2, 1, 4, 6)  # (H, W) = (4, 6)
    assert sorted(raw.test_y.tolist()) == [0, 1] and sorted(raw.train_y.tolist()) == [0] * 4 + [1] * 4
    assert torch.allclose(raw.train_x[raw.train_y == 1], torch.tensor(1.0))
    assert torch.allclose(raw.train_x[raw.train_y == 0], torch.tensor(0.2))
    again = load_imagefolder(tmp_path)
    assert torch.equal(again.test_x, raw.test_x) and torch.equal(again.train_y, raw.train_y)


def test_imagefolder_colour_sizes_and_split_folders(tmp_path):
    save(tmp_path / "train" / "a" / "1.png", 10, size=(8, 8))
    save(tmp_path / "train" / "a" / "2.jpg", (255, 0, 0), mode="RGB", size=(16, 8))
    save(tmp_path / "train" / "b" / "sub" / "3.gif", 100, size=(8, 8))
    save(tmp_path / "test" / "b" / "4.webp", (0, 0, 255), mode="RGB", size=(8, 8))
    raw = load_imagefolder(tmp_path)
    assert raw.class_names == ["a", "b"]
    assert raw.train_x.shape == (3, 3, 32, 32) and raw.test_x.shape == (1, 3, 32, 32)
    assert raw.train_y.tolist() == [0, 0, 1] and raw.test_y.tolist() == [1]
    grey = raw.train_x[0]
    assert torch.allclose(grey[0], grey[1]) and torch.allclose(grey[0], torch.tensor(10 / 255), atol=1e-6)
    assert float(raw.test_x[0, 2].mean()) > 0.9 and float(raw.test_x[0, 0].mean()) < 0.1
    assert load_imagefolder(tmp_path, size=5).train_x.shape == (3, 3, 5, 5)
    assert load_imagefolder(tmp_path, size=(4, 7)).test_x.shape == (1, 3, 4, 7)


def test_imagefolder_through_load_data(tmp_path, env):
    for c in ("x", "y", "z"):
        for i in range(10):
            save(tmp_path / "imgs" / c / f"{i}.png", 20 * i)
    b = load_data(f"imagefolder:{tmp_path / 'imgs'}", classes=[2, 0], val_fraction=0.25)
    assert b.class_names == ["z", "x"] and b.num_classes == 2
    assert len(b.test) == 4 and len(b.train) == 12 and len(b.val) == 4


@pytest.mark.parametrize(
    "layout, match",
    [
        ("missing", "does not exist"),
        ("file", "is not a folder"),
        ("no classes", "no class sub-folders"),
        ("loose images", "only loose images"),
        ("empty class", "class folder .*empty.* has no images"),
        ("corrupt", "bad.png is corrupt"),
        ("truncated", "cut.jpg is corrupt"),
        ("train only", "no test/ folder"),
        ("extra test class", "classes \\['c'\\] that the train folder lacks"),
    ],
)
def test_imagefolder_errors(tmp_path, layout, match):
    root = tmp_path / "root"
    if layout != "missing":
        root.mkdir()
    if layout == "file":
        root.rmdir()
        root.write_text("x")
    elif layout == "loose images":
        save(root / "a.png", 1)
    elif layout in ("empty class", "corrupt", "truncated"):
        save(root / "full" / "ok.png", 1)
        (root / "empty").mkdir()
        if layout == "corrupt":
            (root / "empty").rmdir()
            (root / "full" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        elif layout == "truncated":
            (root / "empty").rmdir()
            save(root / "full" / "cut.jpg", (1, 2, 3), mode="RGB", size=(64, 64))
            cut = root / "full" / "cut.jpg"
            cut.write_bytes(cut.read_bytes()[:200])
    elif layout == "train only":
        save(root / "train" / "a" / "1.png", 1)
    elif layout == "extra test class":
        save(root / "train" / "a" / "1.png", 1)
        save(root / "test" / "c" / "1.png", 1)
    with pytest.raises(SafeReuseError, match=match):
        load_imagefolder(root)


# ------------------------------------------------------------------------------------- slices and splits
def test_parse_classes():
    assert parse_classes("0-2,7") == [0, 1, 2, 7]
    assert parse_classes(" 3 , 1 ") == [3, 1]
    assert parse_classes([4, 2]) == [4, 2] and parse_classes((1,)) == [1] and parse_classes(5) == [5]
    assert parse_classes(None) is None
    for bad in ("", "a-b", "3-1", "1,1", [1, 1], [], [-1], "x", ["1"], [1.5], True):
        with pytest.raises(SafeReuseError):
            parse_classes(bad)


def test_class_subset_is_relabelled_in_the_given_order():
    raw = make_raw()
    b = build_bundle(raw, DataSpec("syn", classes=[3, 1], val_fraction=0))
    assert b.class_names == ["c3", "c1"] and b.num_classes == 2
    orig = {i: int(raw.train_y[i]) for i in range(len(raw.train_y))}
    for x, y in zip(b.train.x, b.train.y, strict=True):
        assert orig[round(float(x[0, 0, 0]) * 10000)] == [3, 1][int(y)]
    assert len(b.train) == 24 and sorted(b.test.y.tolist()) == [0] * 3 + [1] * 3
    assert ids(b.test.x[b.test.y == 0]) == ids(raw.test_x[raw.test_y == 3])
    assert ids(b.test.x[b.test.y == 1]) == ids(raw.test_x[raw.test_y == 1])


@pytest.mark.parametrize(
    "sizes, train_size, expected",
    [((30, 20, 10), 12, [6, 4, 2]), ((40, 40, 40), 7, [3, 2, 2]), ((50, 3, 1), 6, [4, 1, 1])],
)
def test_train_size_total_is_stratified_and_exact(sizes, train_size, expected):
    b = build_bundle(make_raw(sizes), DataSpec("syn", train_size=train_size, val_fraction=0))
    assert torch.bincount(b.train.y, minlength=len(sizes)).tolist() == expected


def test_train_size_per_class_and_limits():
    raw = make_raw((12, 3, 12, 12))
    b = build_bundle(raw, DataSpec("syn", train_size=5, per_class=True, val_fraction=0.2))
    pool = torch.bincount(torch.cat([b.train.y, b.val.y]), minlength=4).tolist()
    assert pool == [5, 3, 5, 5]
    assert torch.bincount(b.val.y, minlength=4).tolist() == [1, 1, 1, 1]
    with pytest.raises(SafeReuseError, match="smaller than the 4 classes"):
        build_bundle(raw, DataSpec("syn", train_size=3))
    for bad in (0, -2, 2.5):
        with pytest.raises(SafeReuseError, match="train_size"):
            build_bundle(raw, DataSpec("syn", train_size=bad))
    with pytest.raises(SafeReuseError, match="val_fraction"):
        build_bundle(raw, DataSpec("syn", val_fraction=1.0))


def test_val_split_disjoint_and_seeded():
    raw = make_raw()
    a = build_bundle(raw, DataSpec("syn", val_fraction=0.25, seed=1))
    a2 = build_bundle(raw, DataSpec("syn", val_fraction=0.25, seed=1))
    c = build_bundle(raw, DataSpec("syn", val_fraction=0.25, seed=2))
    assert not ids(a.train.x) & ids(a.val.x) and len(a.train) + len(a.val) == 48
    assert torch.bincount(a.val.y).tolist() == [3, 3, 3, 3]
    assert torch.equal(a.train.x, a2.train.x) and torch.equal(a.val.x, a2.val.x)
    assert ids(a.val.x) != ids(c.val.x)
    assert ids(a.train.x) < set(range(1000)) and ids(a.val.x) < set(range(1000))  # from train only


def test_smaller_train_size_is_a_subset_and_class_samples_independent():
    raw = make_raw((20, 20, 20, 20))
    small = build_bundle(raw, DataSpec("syn", train_size=2, per_class=True, val_fraction=0, seed=3))
    big = build_bundle(raw, DataSpec("syn", train_size=6, per_class=True, val_fraction=0, seed=3))
    assert ids(small.train.x) < ids(big.train.x)
    spec = DataSpec("syn", classes=[2], train_size=2, per_class=True, val_fraction=0, seed=3)
    sub = build_bundle(raw, spec)
    assert ids(sub.train.x) == ids(small.train.x[small.train.y == 2])


def test_test_split_never_depends_on_seed_or_size():
    raw = make_raw((20, 15, 10, 5))
    ref = build_bundle(raw, DataSpec("syn", classes=[0, 2]))
    for kw in ({"seed": 5}, {"train_size": 6}, {"train_size": 2, "per_class": True}, {"val_fraction": 0.5}):
        b = build_bundle(raw, DataSpec("syn", classes=[0, 2], **kw))
        assert torch.equal(b.test.x, ref.test.x) and torch.equal(b.test.y, ref.test.y)
    assert ids(ref.test.x) == {1000, 1001, 1002, 1006, 1007, 1008}


def test_normalisation_statistics_come_from_train():
    raw = make_raw()
    raw.test_x += 5.0  # would shift the statistics if the test split leaked in
    b = build_bundle(raw, DataSpec("syn", val_fraction=0.5))
    assert b.mean == pytest.approx((float(b.train.x.mean()),), rel=1e-5)
    assert b.std == pytest.approx((float(b.train.x.std(correction=0)),), rel=1e-5)
    assert b.mean[0] < 1


def test_val_fraction_zero_and_single_example():
    raw = make_raw((1, 1))
    b = build_bundle(raw, DataSpec("syn", val_fraction=0.5))
    assert len(b.train) == 2 and len(b.val) == 0 and b.val.x.shape == (0, 1, 2, 2)
    assert all(s > 0 for s in b.std)


@pytest.mark.parametrize("where", ["train", "test"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_is_an_error(where, value):
    raw = make_raw()
    getattr(raw, f"{where}_x")[4, 0, 1, 1] = value
    with pytest.raises(SafeReuseError, match=f"syn {where}.* NaN or Inf in 1 images \\(first: index 4\\)"):
        build_bundle(raw, DataSpec("syn"))


@pytest.mark.parametrize(
    "classes, match",
    [([4], "out of range"), ([0, 9], "out of range"), ([], "empty"), ("", "empty"), ([1, 1], "repeats"),
     ("2-0", "not a class list"), ([-1], "negative")],
)  # fmt: skip
def test_bad_classes(classes, match):
    with pytest.raises(SafeReuseError, match=match):
        build_bundle(make_raw(), DataSpec("syn", classes=classes))


def test_bad_raw_data_and_options():
    raw = make_raw()
    raw.train_y[0] = 7
    with pytest.raises(SafeReuseError, match="labels span"):
        build_bundle(raw, DataSpec("syn"))
    raw = make_raw((5, 0, 5, 5))
    with pytest.raises(SafeReuseError, match="classes \\[1\\] have no training images"):
        build_bundle(raw, DataSpec("syn"))
    with pytest.raises(SafeReuseError, match="no parameter 'train_sise'"):
        load_data("digits", train_sise=3)
    with pytest.raises(SafeReuseError, match="unknown dataset"):
        load_data("fashion-mnst")
    with pytest.raises(SafeReuseError, match="imagefolder needs a path"):
        load_data("imagefolder")


# --------------------------------------------------------------------------- the real files (if present)
@pytest.mark.skipif(
    not all((sources.DEBIAN_FASHION_DIR / f).is_file() for f in FILES),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_real_debian_fashion_mnist():
    folder = sources.DEBIAN_FASHION_DIR
    raw = sources.load_fashion_mnist(str(folder))
    assert raw.train_x.shape == (60000, 1, 28, 28) and raw.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(raw.train_y).tolist() == [6000] * 10
    assert torch.bincount(raw.test_y).tolist() == [1000] * 10
    for f in FILES:
        assert len(dl.FASHION_SHA256[f]) == 64 and len(dl.FASHION_CONTENT_SHA256[f]) == 64
        assert dl.sha256_file(folder / f, decompress=True) == dl.FASHION_CONTENT_SHA256[f]
        assert dl.verify_file(folder / f)

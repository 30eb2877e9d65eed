"""Download Fashion-MNIST when no local copy is found, verified by SHA-256 and written atomically.

Two pins are accepted for each file, either one is enough:

* :data:`FASHION_SHA256`: the SHA-256 of the ``.gz`` file exactly as the official server serves it.
  Upstream publishes MD5 sums only (``8d4fb7e6…``, ``25c81989…``, ``bef4ecab…``, ``bb300cfd…``);
  these SHA-256 values are the ones other loaders pin for the same URLs.
* :data:`FASHION_CONTENT_SHA256`: the SHA-256 of the *decompressed* idx bytes, computed from Debian's
  ``dataset-fashion-mnist`` copy. Debian re-gzipped the files without the embedded file name (each of
  its files is exactly ``len(name) + 1`` bytes shorter than upstream's), so the ``.gz`` bytes differ
  while the data is the same; a mirror of either copy therefore verifies.

Tests point the download at a local server with ``$SAFEREUSE_FASHION_MNIST_URL`` (or ``base_url``)
and replace the two dicts (or pass ``checksums``).

The other datasets (CIFAR-10/100, SVHN, GTSRB) download through :func:`download_dataset`, from the
official URLs in :data:`OFFICIAL_FILES`, each file pinned by the SHA-256 of the file as served:

* CIFAR-10/100 binary archives: the CIFAR page publishes MD5s only (``c32a1d4a…``, ``03b5dce0…``);
  the SHA-256 values are the ones other public loaders pin for the same URLs.
* SVHN ``train_32x32.mat`` / ``test_32x32.mat``: torchvision's prototype datasets' pins (the SVHN
  page publishes no checksum; torchvision's MD5s ``e26dedcc…``/``eb5a983b…`` are for the same files).
* GTSRB: the test archives' pins are torchvision's prototype datasets' (which also pin the MD5s
  ``c7e4e632…``/``fe31e9c9…``); the pin of ``GTSRB_Final_Training_Images.zip`` (276,294,756 bytes)
  comes from a public record of that file (torchvision fetches a different training archive).

``$SAFEREUSE_MIRROR_URL`` (or ``base_url``) fetches every file by its official name from one mirror
instead (tests point it at a local server); ``checksums`` replaces the pins.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import SafeReuseError

FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
URL_ENV = "SAFEREUSE_FASHION_MNIST_URL"
TIMEOUT_S = 10.0
_CHUNK = 1 << 20

# Same order as ``sources.FASHION_FILES``; kept here so this module imports nothing from sources.
FASHION_FILE_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
FASHION_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
    "train-labels-idx1-ubyte.gz": "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
    "t10k-images-idx3-ubyte.gz": "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
    "t10k-labels-idx1-ubyte.gz": "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
}
FASHION_CONTENT_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


def sha256_file(path: Path, decompress: bool = False) -> str:
    """SHA-256 of a file, or of its gzip-decompressed content.

    Args:
        path: the file.
        decompress: hash the decompressed bytes of a gzip file instead of the file itself.

    Returns:
        The hex digest; ``""`` when ``decompress`` is set and the file is not valid gzip.
    """
    h = hashlib.sha256()
    try:
        with (gzip.open if decompress else open)(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                h.update(chunk)
    except (OSError, EOFError, zlib.error):
        if not decompress:
            raise
        return ""
    return h.hexdigest()


def accepted_digests(name: str) -> tuple[str | None, str | None]:
    """The pinned ``(file SHA-256, content SHA-256)`` for a Fashion-MNIST file name."""
    return FASHION_SHA256.get(name), FASHION_CONTENT_SHA256.get(name)


def verify_file(
    path: Path, name: str | None = None, checksums: Mapping[str, Collection[str]] | None = None
) -> bool:
    """Whether ``path`` holds the genuine Fashion-MNIST file ``name``.

    Args:
        path: the ``.gz`` file to check.
        name: the official file name (default: ``path.name``).
        checksums: accepted SHA-256 digests of the file bytes, by name; when given, replaces both
            pinned tables (no content check).

    Returns:
        True when the file's SHA-256 or (without ``checksums``) the SHA-256 of its decompressed
        content matches a pinned value.
    """
    name = name or path.name
    if checksums is not None:
        return sha256_file(path) in set(checksums.get(name, ()))
    file_sha, content_sha = accepted_digests(name)
    if file_sha is None and content_sha is None:
        raise KeyError(f"no checksum is known for {name!r}")
    if file_sha is not None and sha256_file(path) == file_sha:
        return True
    return content_sha is not None and sha256_file(path, decompress=True) == content_sha


def _base_url(base_url: str | None) -> str:
    url = base_url or os.environ.get(URL_ENV) or FASHION_URL
    return url if url.endswith("/") else url + "/"


def _how_to_get(base: str, dest: Path) -> str:
    return (
        "install Debian's package (apt-get install dataset-fashion-mnist), or pass --data-dir / set "
        f"$SAFEREUSE_DATA to a folder holding the 4 files, or download {', '.join(FASHION_FILE_NAMES)} "
        f"from {base} by hand into {dest}"
    )


def _fetch(url: str, target: Path, timeout: float) -> None:
    """Stream ``url`` into the open-for-writing path ``target`` (progress bar on a TTY)."""
    from tqdm import tqdm

    with urllib.request.urlopen(url, timeout=timeout) as resp, open(target, "wb") as out:
        total = resp.headers.get("Content-Length")
        with tqdm(
            total=int(total) if total and total.isdigit() else None,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=url.rsplit("/", 1)[-1],
            disable=not sys.stderr.isatty(),
            file=sys.stderr,
            leave=False,
        ) as bar:
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                out.write(chunk)
                bar.update(len(chunk))


def fetch_verified(
    url: str,
    final: Path,
    accept: Callable[[Path], bool],
    *,
    what: str,
    where: str,
    fix: str,
    timeout: float = TIMEOUT_S,
) -> None:
    """Download ``url`` to ``final`` through a temporary file that is renamed only once verified.

    The file is streamed into a temporary file next to ``final``, checked with ``accept`` and only
    then renamed (``os.replace``), so an interrupted or corrupt download never leaves a file under the
    final name; the temporary file is removed in every case.

    Args:
        url: what to fetch.
        final: where the verified file goes (its folder must exist).
        accept: whether a downloaded file is genuine (e.g. its SHA-256 is pinned).
        what: the dataset, as the error names it (``"CIFAR-10"``).
        where: the folders already searched, quoted in the error.
        fix: the hint of the error (how to get the files by hand).
        timeout: seconds to wait for the server to connect or send data.

    Raises:
        SafeReuseError: the server is unreachable or answers with an error, or the file fails
            ``accept``.
    """
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            _fetch(url, tmp, timeout)
        except urllib.error.HTTPError as exc:
            raise SafeReuseError(
                f"{what} was not found (searched: {where}) and {url} answered HTTP {exc.code}", fix=fix
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise SafeReuseError(
                f"{what} was not found (searched: {where}) and fetching {url} failed ({reason})", fix=fix
            ) from None
        if not accept(tmp):
            raise SafeReuseError(
                f"{url} failed its SHA-256 check (got {sha256_file(tmp)}); the file was discarded",
                fix="try again later, or " + fix,
            )
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@dataclass(frozen=True)
class OfficialFile:
    """One file of a dataset as its authors serve it.

    Args:
        name: the official file name (also its name on a mirror and in the cache).
        url: the official download URL.
        sha256: SHA-256 of the file exactly as served.
    """

    name: str
    url: str
    sha256: str


_KRIZ = "https://www.cs.toronto.edu/~kriz/"
_SVHN = "http://ufldl.stanford.edu/housenumbers/"
_GTSRB = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"
MIRROR_ENV = "SAFEREUSE_MIRROR_URL"

DATASET_TITLES: dict[str, str] = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN",
                                  "gtsrb": "GTSRB"}  # fmt: skip
OFFICIAL_FILES: dict[str, tuple[OfficialFile, ...]] = {
    "cifar10": (
        OfficialFile("cifar-10-binary.tar.gz", _KRIZ + "cifar-10-binary.tar.gz",
                     "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),
    ),
    "cifar100": (
        OfficialFile("cifar-100-binary.tar.gz", _KRIZ + "cifar-100-binary.tar.gz",
                     "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec"),
    ),
    "svhn": (
        OfficialFile("train_32x32.mat", _SVHN + "train_32x32.mat",
                     "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8"),
        OfficialFile("test_32x32.mat", _SVHN + "test_32x32.mat",
                     "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b"),
    ),
    "gtsrb": (
        OfficialFile("GTSRB_Final_Training_Images.zip", _GTSRB + "GTSRB_Final_Training_Images.zip",
                     "d32ac4b5fa9a1cbd1994768413902e8193599d9434cf0a8eb9cfd00a6d3a290c"),
        OfficialFile("GTSRB_Final_Test_Images.zip", _GTSRB + "GTSRB_Final_Test_Images.zip",
                     "48ba6fab7e877eb64eaf8de99035b0aaecfbc279bee23e35deca4ac1d0a837fa"),
        OfficialFile("GTSRB_Final_Test_GT.zip", _GTSRB + "GTSRB_Final_Test_GT.zip",
                     "f94e5a7614d75845c74c04ddb26b8796b9e483f43541dd95dd5b726504e16d6d"),
    ),
}  # fmt: skip


def how_to_get(dataset: str, dest: Path, layout: str) -> str:
    """The fix of a "dataset not found" error: where to put the files, or what to fetch by hand.

    Args:
        dataset: a key of :data:`OFFICIAL_FILES`.
        dest: the cache folder the download would go to.
        layout: what a folder must hold, e.g. ``"cifar-10-batches-bin/ or cifar-10-binary.tar.gz"``.

    Example:
        >>> how_to_get("svhn", Path("/c/svhn"), "train_32x32.mat and test_32x32.mat")[:28]
        'pass --data-dir or set $SAFE'
    """
    urls = ", ".join(f.url for f in OFFICIAL_FILES[dataset])
    return (
        f"pass --data-dir or set $SAFEREUSE_DATA to a folder holding {layout}, or download {urls} "
        f"by hand into {dest}"
    )


def download_dataset(
    dataset: str,
    dest: Path,
    searched: list[Path],
    layout: str,
    base_url: str | None = None,
    *,
    checksums: Mapping[str, Collection[str]] | None = None,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Download the official files of ``dataset`` into ``dest``, verified by SHA-256; return ``dest``.

    Files already in ``dest`` whose SHA-256 is accepted are kept; each other one is fetched with
    :func:`fetch_verified` (temporary file, checked, then renamed), so nothing half-written is left.

    Args:
        dataset: a key of :data:`OFFICIAL_FILES` (``cifar10``, ``cifar100``, ``svhn``, ``gtsrb``).
        dest: folder for the files (usually ``$XDG_CACHE_HOME/safereuse/<dataset>``).
        searched: the folders already searched, quoted in the error when the download fails.
        layout: what a folder must hold, quoted in the error's fix (see :func:`how_to_get`).
        base_url: a mirror serving the files under their official names (default:
            ``$SAFEREUSE_MIRROR_URL``, else each file's official URL).
        checksums: accepted SHA-256 digests by file name, replacing the pins (tests, mirrors).
        timeout: seconds to wait for the server to connect or send data.

    Returns:
        ``dest``, now holding the verified files.

    Raises:
        SafeReuseError: the server is unreachable (offline) or answers with an error, a file fails its
            checksum, or ``dest`` cannot be written; one line, naming the fix.
    """
    files = OFFICIAL_FILES[dataset]
    dest = Path(dest)
    fix = how_to_get(dataset, dest, layout)
    where = ", ".join(str(p) for p in searched) or "(no folder)"
    mirror = base_url or os.environ.get(MIRROR_ENV)
    if mirror and not mirror.endswith("/"):
        mirror += "/"
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SafeReuseError(
            f"cannot create the download folder {dest} ({exc.strerror or exc})",
            fix="set $XDG_CACHE_HOME to a writable folder, or " + fix,
        ) from None

    def accept(name: str, path: Path) -> bool:
        pins = set(checksums.get(name, ())) if checksums is not None else {files_by_name[name].sha256}
        return sha256_file(path) in pins

    files_by_name = {f.name: f for f in files}
    for f in files:
        final = dest / f.name
        if final.is_file() and accept(f.name, final):
            continue
        url = mirror + f.name if mirror else f.url
        fetch_verified(
            url,
            final,
            functools.partial(accept, f.name),
            what=DATASET_TITLES[dataset],
            where=where,
            fix=fix,
            timeout=timeout,
        )
    return dest


def download_fashion_mnist(
    dest: Path,
    searched: list[Path],
    base_url: str | None = None,
    *,
    checksums: Mapping[str, Collection[str]] | None = None,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Download the 4 Fashion-MNIST files into ``dest``, verify them and return ``dest``.

    Files already in ``dest`` that verify are kept; each missing one is streamed into a temporary file
    in ``dest``, checked, and only then renamed (``os.replace``) to its final name, so an interrupted
    or corrupt download never leaves a file under the final name.

    Args:
        dest: folder for the files (usually ``$XDG_CACHE_HOME/safereuse/fashion-mnist``).
        searched: the folders already searched, quoted in the error when the download fails.
        base_url: where the files are (default: ``$SAFEREUSE_FASHION_MNIST_URL``, else the official
            server :data:`FASHION_URL`).
        checksums: accepted SHA-256 digests by file name, replacing the pinned ones (tests, mirrors).
        timeout: seconds to wait for the server to connect or send data.

    Returns:
        ``dest``, now holding the 4 verified files.

    Raises:
        SafeReuseError: the server is unreachable or answers with an error, a file fails its checksum,
            or ``dest`` cannot be written.
    """
    dest = Path(dest)
    base = _base_url(base_url)
    where = ", ".join(str(p) for p in searched) or "(no folder)"
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SafeReuseError(
            f"cannot create the download folder {dest} ({exc.strerror or exc})",
            fix="set $XDG_CACHE_HOME to a writable folder, or " + _how_to_get(base, dest),
        ) from None
    for name in FASHION_FILE_NAMES:
        final = dest / name
        if final.is_file() and verify_file(final, name, checksums):
            continue
        fetch_verified(
            base + name,
            final,
            functools.partial(verify_file, name=name, checksums=checksums),
            what="Fashion-MNIST",
            where=where,
            fix=_how_to_get(base, dest),
            timeout=timeout,
        )
    return dest

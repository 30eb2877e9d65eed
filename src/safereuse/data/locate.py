"""Where a dataset's official files are found, and reading them from a folder or an archive.

Search order for a dataset ``name`` (:func:`search_dirs`; the first folder that holds the files wins):
``--data-dir`` (as is, then ``DIR/name``), ``$SAFEREUSE_DATA`` (as is, then ``$SAFEREUSE_DATA/name``),
then the download cache ``$XDG_CACHE_HOME/safereuse/name`` (default ``~/.cache/safereuse/name``).

Archives (``.tar.gz``, ``.zip``) are read in place, never extracted: only regular-file members whose
names are asked for are read, into memory. Nothing is written, so a member named ``../../x`` or
``/etc/x`` cannot land anywhere (such names are dropped anyway), and links are ignored.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath

from ..errors import SafeReuseError
from .sources import cache_dir

MAX_MEMBER_BYTES = 1 << 30  # no official member comes near 1 GiB; larger ones are refused (bombs)


def search_dirs(name: str, data_dir: str | None) -> list[Path]:
    """Folders searched for dataset ``name``, in order.

    Args:
        name: the dataset's folder name (``cifar10``, ``svhn``, …).
        data_dir: the user's ``--data-dir`` (searched first).

    Returns:
        ``data_dir`` and ``data_dir/name``, ``$SAFEREUSE_DATA`` and ``$SAFEREUSE_DATA/name``, and the
        download cache folder ``cache_dir()/name``.

    Example:
        >>> [p.name for p in search_dirs("svhn", "/data")][:2]
        ['data', 'svhn']
    """
    dirs: list[Path] = []
    if data_dir:
        dirs += [Path(data_dir).expanduser(), Path(data_dir).expanduser() / name]
    if os.environ.get("SAFEREUSE_DATA"):
        env = Path(os.environ["SAFEREUSE_DATA"]).expanduser()
        dirs += [env, env / name]
    dirs.append(cache_dir() / name)
    return dirs


def safe_member_name(name: str) -> str | None:
    """An archive member's name as a relative POSIX path, or None when it is absolute or climbs out.

    Example:
        >>> safe_member_name("./cifar-10-batches-bin/test_batch.bin"), safe_member_name("../x")
        ('cifar-10-batches-bin/test_batch.bin', None)
    """
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        return None
    parts = [p for p in path.parts if p not in ("", ".")]
    return "/".join(parts) or None


class FileTree:
    """Read-only files by relative POSIX path: a folder, an archive, or several merged.

    Args:
        where: how error messages name the source (a folder or an archive path).
        files: relative path → a function returning the file's bytes.

    Example:
        >>> t = FileTree("memory", {"a/b.txt": lambda: b"hi"})
        >>> "a/b.txt" in t, t.read("a/b.txt", fix="-"), t.names("a/")
        (True, b'hi', ['a/b.txt'])
    """

    def __init__(self, where: str, files: Mapping[str, Callable[[], bytes]]) -> None:
        self.where = where
        self._files = dict(files)

    def __contains__(self, rel: object) -> bool:
        return rel in self._files

    def __len__(self) -> int:
        return len(self._files)

    def names(self, prefix: str = "") -> list[str]:
        """The sorted paths that start with ``prefix``."""
        return sorted(n for n in self._files if n.startswith(prefix))

    def read(self, rel: str, fix: str) -> bytes:
        """The bytes of ``rel``.

        Args:
            rel: the relative path.
            fix: the hint of the error raised when the file is missing or unreadable.

        Raises:
            SafeReuseError: ``rel`` is missing, or reading it failed (names the file).
        """
        if rel not in self._files:
            raise SafeReuseError(f"{self.where} has no {rel}", fix=fix)
        try:
            return self._files[rel]()
        except (OSError, EOFError, zlib.error, zipfile.BadZipFile, tarfile.TarError) as exc:
            raise SafeReuseError(f"{rel} in {self.where} is corrupt or unreadable ({exc})", fix=fix) from None

    def subtree(self, prefix: str) -> FileTree:
        """The files under ``prefix`` (a folder, ending in ``/``), keyed relative to it.

        Example:
            >>> FileTree("m", {"d/x": bytes, "y": bytes}).subtree("d/").names()
            ['x']
        """
        files = {k[len(prefix) :]: v for k, v in self._files.items() if k.startswith(prefix)}
        return FileTree(f"{self.where}:{prefix.rstrip('/')}", files)

    @staticmethod
    def merge(where: str, trees: Iterable[FileTree]) -> FileTree:
        """One tree holding the files of ``trees`` (an earlier tree wins a shared path)."""
        files: dict[str, Callable[[], bytes]] = {}
        for t in trees:
            for k, v in t._files.items():
                files.setdefault(k, v)
        return FileTree(where, files)


def folder_tree(root: Path, prefix: str = "") -> FileTree:
    """Every regular file under ``root`` (recursively), keyed ``prefix + relative path``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = (Path(d) / "x.bin").write_bytes(b"1")
        ...     folder_tree(Path(d), "top/").names()
        ['top/x.bin']
    """
    root = Path(root)
    files: dict[str, Callable[[], bytes]] = {}
    for dirpath, _, filenames in os.walk(root):
        for fn in filenames:
            path = Path(dirpath) / fn
            if path.is_file():
                files[prefix + path.relative_to(root).as_posix()] = path.read_bytes
    return FileTree(str(root), files)


def _archive_error(path: Path, exc: BaseException, fix: str) -> SafeReuseError:
    return SafeReuseError(f"archive {path} is corrupt or unreadable ({type(exc).__name__}: {exc})", fix=fix)


def tar_tree(path: Path, wanted: Callable[[str], bool], fix: str) -> FileTree:
    """The wanted regular-file members of a (compressed) tar archive, read into memory.

    Args:
        path: the ``.tar``/``.tar.gz`` file.
        wanted: which (normalised, see :func:`safe_member_name`) member names to keep.
        fix: the hint of the error raised when the archive is corrupt.

    Returns:
        A :class:`FileTree` of the kept members; nothing is written to disk.

    Raises:
        SafeReuseError: the archive is not a tar file, truncated, or a wanted member is over
            :data:`MAX_MEMBER_BYTES`.
    """
    files: dict[str, Callable[[], bytes]] = {}
    try:
        with tarfile.open(path, "r:*") as tf:
            for member in tf:
                name = safe_member_name(member.name)
                if name is None or not member.isfile() or not wanted(name):
                    continue
                if member.size > MAX_MEMBER_BYTES:
                    raise SafeReuseError(f"member {name} of {path} is {member.size} bytes", fix=fix)
                fh = tf.extractfile(member)
                data = fh.read() if fh is not None else b""
                if len(data) != member.size:
                    raise EOFError(f"member {name} is truncated")
                files[name] = lambda b=data: b
    except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
        raise _archive_error(path, exc, fix) from None
    return FileTree(str(path), files)


def zip_tree(path: Path, fix: str) -> FileTree:
    """The regular-file members of a zip archive, read lazily (the archive stays open while the tree
    lives).

    Args:
        path: the ``.zip`` file.
        fix: the hint of the error raised when the archive or a member is corrupt.

    Returns:
        A :class:`FileTree` of the members; nothing is written to disk.

    Raises:
        SafeReuseError: the file is not a zip archive, or a member is over :data:`MAX_MEMBER_BYTES`.
    """
    try:
        zf = zipfile.ZipFile(path)
        infos = zf.infolist()
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
        raise _archive_error(path, exc, fix) from None
    files: dict[str, Callable[[], bytes]] = {}
    for info in infos:
        name = safe_member_name(info.filename)
        if name is None or info.is_dir():
            continue
        if info.file_size > MAX_MEMBER_BYTES:
            raise SafeReuseError(f"member {name} of {path} is {info.file_size} bytes", fix=fix)
        files[name] = lambda i=info: zf.read(i)
    return FileTree(str(path), files)


__all__ = [
    "MAX_MEMBER_BYTES",
    "FileTree",
    "folder_tree",
    "safe_member_name",
    "search_dirs",
    "tar_tree",
    "zip_tree",
]

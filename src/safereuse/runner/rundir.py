"""The run directory's format: what lies where, the recorded spec, and its locks.

Run directory layout::

    RUNDIR/spec.json          spec hash + normalised spec; a different spec is refused unless force
    RUNDIR/spec.yaml          the spec text as given (shown in reports)
    RUNDIR/ledger.sqlite      the results ledger (:mod:`safereuse.runner.ledger`)
    RUNDIR/selection.{json,md} specs with ``select:``: validation table and choices (:mod:`.select`)
    RUNDIR/teachers/<key>/    cached teacher artifacts (key = hash of the recipe)
    RUNDIR/students/<key>/    cached student artifacts
    RUNDIR/defects/           cached crafted defect sets
    RUNDIR/locks/, .run.lock  file locks (one run per directory at a time)

The driver (:mod:`.core`) writes it, the workers (:mod:`.worker`) fill the caches, and the report
(:mod:`safereuse.report`) reads it; this module is what they share, so the report needs no driver.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..errors import SafeReuseError
from ..utils import atomic_path, write_json_atomic

SPEC_JSON, SPEC_YAML, RUN_LOCK = "spec.json", "spec.yaml", ".run.lock"
TEACHERS, STUDENTS, DEFECT_CACHE, LOCKS = "teachers", "students", "defects", "locks"


def read_run_spec(rundir: str | Path) -> dict[str, Any] | None:
    """The ``spec.json`` of a run directory, or None when it has none.

    Raises:
        SafeReuseError: the file is there but unreadable.

    Example:
        >>> import tempfile
        >>> read_run_spec(tempfile.mkdtemp()) is None
        True
    """
    p = Path(rundir) / SPEC_JSON
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        raise SafeReuseError(f"{p} is unreadable or corrupt", fix="pass --force to replace it") from None


def write_run_spec(
    rundir: Path, *, spec_hash: str, source: str, name: str, spec: dict[str, Any], text: str
) -> None:
    """Record a run's spec: ``spec.json`` (hash, source, name, normalised spec) and ``spec.yaml``
    (the text as given).

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> write_run_spec(d, spec_hash="ab", source="s.yaml", name="x", spec={}, text="name: x\\n")
        >>> read_run_spec(d)["spec_hash"], (d / SPEC_YAML).read_text()
        ('ab', 'name: x\\n')
    """
    write_json_atomic(
        rundir / SPEC_JSON,
        {"spec_hash": spec_hash, "source": source, "name": name, "spec": spec, "written_at": time.time()},
    )
    with atomic_path(rundir / SPEC_YAML) as tmp:
        tmp.write_text(text)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing), waiting for it; released on exit or
    when the process dies.

    Example:
        >>> import tempfile
        >>> with file_lock(Path(tempfile.mkdtemp()) / "locks" / "a.lock"):
        ...     pass
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path):
        yield


@contextmanager
def run_lock(rundir: Path) -> Iterator[None]:
    """One run per directory: ``RUNDIR/.run.lock``, taken without waiting.

    Raises:
        SafeReuseError: another run holds it.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> with run_lock(d):
        ...     with run_lock(d):  # doctest: +ELLIPSIS
        ...         pass
        Traceback (most recent call last):
        safereuse.errors.SafeReuseError: another `safereuse run` is using ...
    """
    lock = FileLock(rundir / RUN_LOCK, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise SafeReuseError(
            f"another `safereuse run` is using {rundir}", fix="wait for it to finish or pass another --out"
        ) from None
    try:
        yield
    finally:
        lock.release()


__all__ = [
    "DEFECT_CACHE",
    "LOCKS",
    "RUN_LOCK",
    "SPEC_JSON",
    "SPEC_YAML",
    "STUDENTS",
    "TEACHERS",
    "file_lock",
    "read_run_spec",
    "run_lock",
    "write_run_spec",
]

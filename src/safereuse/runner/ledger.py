"""The results ledger: one SQLite row per cell, written in transactions (WAL mode).

A cell's row goes ``pending`` → ``running`` → ``done`` | ``failed``. Every change is one transaction,
so a process killed at any moment (Ctrl-C, SIGKILL, power aside) leaves each row either as it was or
as it became, never half-written. Only the driver process writes; workers return results to it.

Schema (table ``cells``)::

    id TEXT PRIMARY KEY     stable cell id (hash of the resolved config)
    spec_hash TEXT          the spec that last scheduled the cell (reports show the current spec's)
    ord INTEGER             position in the grid
    scenario, method, label TEXT; seed INTEGER
    config TEXT             resolved cell config (JSON)
    status TEXT             pending | running | done | failed
    metrics TEXT            JSON: teacher / student / audit results (done cells)
    error TEXT              one-line error (failed cells); traceback TEXT: the full one. A cell whose
                            teacher failed holds TEACHER_FAILED + the teacher's own error
                            (:func:`failure_cause` splits it again)
    artifacts TEXT          JSON: teacher / student directories relative to RUNDIR
    timings TEXT            JSON: seconds spent on teacher, student, audit
    attempts INTEGER        how many times the cell was started
    created_at, started_at, finished_at, seconds REAL

Table ``meta`` holds ``key → value`` pairs (``spec_hash``, ``schema``).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import SafeReuseError
from ..utils import json_default

LEDGER_FILE = "ledger.sqlite"
#: Prefix of the ``error`` of a cell that did not run because its teacher's training failed.
TEACHER_FAILED = "teacher training failed: "
SCHEMA_VERSION = "1"
STATUSES = ("pending", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    id TEXT PRIMARY KEY,
    spec_hash TEXT NOT NULL,
    ord INTEGER NOT NULL,
    scenario TEXT NOT NULL,
    method TEXT NOT NULL,
    label TEXT NOT NULL,
    seed INTEGER NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    metrics TEXT,
    error TEXT,
    traceback TEXT,
    artifacts TEXT,
    timings TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    seconds REAL
);
CREATE INDEX IF NOT EXISTS cells_status ON cells (status);
"""

_JSON_COLS = ("config", "metrics", "artifacts", "timings")


class Ledger:
    """The SQLite ledger of a run directory.

    Args:
        path: the database file (``RUNDIR/ledger.sqlite``).
        create: create it when missing (otherwise a missing file is an error).

    Example:
        >>> import tempfile, pathlib
        >>> led = Ledger(pathlib.Path(tempfile.mkdtemp()) / "ledger.sqlite")
        >>> led.status_counts()
        {'pending': 0, 'running': 0, 'done': 0, 'failed': 0}
    """

    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise SafeReuseError(
                f"{self.path.parent} has no results ledger", fix="run `safereuse run SPEC --out DIR` first"
            )
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            if create:
                with self.transaction() as c:
                    for stmt in filter(str.strip, _SCHEMA.split(";")):
                        c.execute(stmt)
                    c.execute(
                        "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,)
                    )
        except sqlite3.DatabaseError as exc:
            raise SafeReuseError(
                f"cannot open the ledger {self.path}: {exc}",
                fix="delete the run directory or pass another --out",
            ) from None

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- meta -------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- scheduling -------------------------------------------------------------------------------
    def add_cells(self, cells: Iterable[Any], spec_hash: str) -> None:
        """Insert new cells as ``pending``; existing rows keep their status and results.

        ``cells`` is the whole grid of ``spec_hash``: rows that spec scheduled before but no longer
        does (the same YAML after a method's defaults changed gives new cell ids) are re-tagged
        ``<spec_hash>~superseded`` — kept, but out of the spec's counts and report.

        Args:
            cells: :class:`~safereuse.runner.spec.Cell` objects.
            spec_hash: the spec scheduling them (recorded on new and existing rows).
        """
        now = time.time()
        cells = list(cells)
        current = {cell.id for cell in cells}
        with self.transaction() as c:
            stale = [r[0] for r in c.execute("SELECT id FROM cells WHERE spec_hash = ?", (spec_hash,))]
            c.executemany(
                "UPDATE cells SET spec_hash = ? WHERE id = ?",
                [(f"{spec_hash}~superseded", i) for i in stale if i not in current],
            )
            for cell in cells:
                c.execute(
                    "INSERT INTO cells"
                    " (id, spec_hash, ord, scenario, method, label, seed, config, status, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)"
                    " ON CONFLICT(id) DO UPDATE SET spec_hash = excluded.spec_hash, ord = excluded.ord,"
                    " label = excluded.label",
                    (
                        cell.id,
                        spec_hash,
                        cell.order,
                        cell.scenario,
                        cell.method,
                        cell.label,
                        cell.seed,
                        json.dumps(cell.config, sort_keys=True),
                        now,
                    ),
                )

    def to_run(self, ids: Iterable[str], retry_failed: bool = False) -> list[str]:
        """The ids among ``ids`` that need running: pending, left running by a killed run, and failed
        ones when ``retry_failed``; in grid order."""
        wanted = ("pending", "running", "failed") if retry_failed else ("pending", "running")
        status = self.statuses()
        return [i for i in ids if status.get(i) in wanted]

    def mark_running(self, cell_id: str) -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE cells SET status = 'running', attempts = attempts + 1, started_at = ?, error = NULL,"
                " traceback = NULL, finished_at = NULL, seconds = NULL WHERE id = ?",
                (time.time(), cell_id),
            )

    def finish(self, cell_id: str, result: dict[str, Any]) -> None:
        """Record a worker's result: ``{"status": "done"|"failed", "metrics", "artifacts", "timings",
        "error", "traceback"}``."""
        status = result.get("status")
        if status not in ("done", "failed"):
            raise ValueError(f"bad result status {status!r}")
        now = time.time()
        with self.transaction() as c:
            row = c.execute("SELECT started_at FROM cells WHERE id = ?", (cell_id,)).fetchone()
            started = row["started_at"] if row is not None else None
            c.execute(
                "UPDATE cells SET status = ?, metrics = ?, artifacts = ?, timings = ?, error = ?,"
                " traceback = ?, finished_at = ?, seconds = ? WHERE id = ?",
                (
                    status,
                    _dump(result.get("metrics")),
                    _dump(result.get("artifacts")),
                    _dump(result.get("timings")),
                    result.get("error"),
                    result.get("traceback"),
                    now,
                    None if started is None else now - started,
                    cell_id,
                ),
            )

    # -- reading ----------------------------------------------------------------------------------
    def statuses(self) -> dict[str, str]:
        return {r["id"]: r["status"] for r in self.conn.execute("SELECT id, status FROM cells")}

    def status_counts(self, spec_hash: str | None = None) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        q = (
            "SELECT status, COUNT(*) AS n FROM cells"
            + (" WHERE spec_hash = ?" if spec_hash else "")
            + " GROUP BY status"
        )
        for r in self.conn.execute(q, (spec_hash,) if spec_hash else ()):
            counts[r["status"]] = int(r["n"])
        return counts

    def rows(self, spec_hash: str | None = None) -> list[dict[str, Any]]:
        """All rows (of one spec when given) in grid order, JSON columns decoded."""
        q = "SELECT * FROM cells" + (" WHERE spec_hash = ?" if spec_hash else "") + " ORDER BY ord, id"
        out = []
        for r in self.conn.execute(q, (spec_hash,) if spec_hash else ()):
            d = dict(r)
            for col in _JSON_COLS:
                d[col] = json.loads(d[col]) if d[col] else None
            out.append(d)
        return out


def failure_cause(error: str | None) -> tuple[bool, str]:
    """Split a failed cell's ``error`` into (did its teacher fail, the error that caused it).

    Args:
        error: the ledger's ``error`` column.

    Returns:
        ``(True, the teacher's own error)`` for a cell whose teacher failed, else ``(False, error)``.

    Example:
        >>> failure_cause("teacher training failed: dataset 'x' is unknown (fix: see the list)")
        (True, "dataset 'x' is unknown (fix: see the list)")
        >>> failure_cause("RuntimeError: boom")
        (False, 'RuntimeError: boom')
    """
    error = error or "unknown error (no message recorded)"
    if error.startswith(TEACHER_FAILED):
        return True, error[len(TEACHER_FAILED) :]
    return False, error


def _dump(obj: Any) -> str | None:
    if obj is None:
        return None
    return json.dumps(obj, sort_keys=True, default=json_default, allow_nan=True)


__all__ = ["LEDGER_FILE", "STATUSES", "TEACHER_FAILED", "Ledger", "failure_cause"]

"""The driver: expand a spec, check the run directory, schedule teachers and cells, fill the ledger.

``run(spec, out)`` is what ``safereuse run`` calls. Everything that can be wrong with the input (the
spec, the run directory, the Ray address) is checked before the ledger is opened, so bad input
leaves an existing run untouched.

The run directory's layout, its recorded spec and its locks: :mod:`.rundir`.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..data.text import TEXT_DATASETS
from ..defects import DEFECTS
from ..errors import SafeReuseError
from ..registry import EXPERIMENTS
from ..utils import atomic_path
from .executors import Executor, make_executor
from .ledger import LEDGER_FILE, TEACHER_FAILED, Ledger, failure_cause
from .rundir import TEACHERS, read_run_spec, run_lock, write_run_spec
from .select import SelectionPhase
from .spec import Cell, LoadedSpec, expand, teacher_key
from .worker import craft_key


@dataclass(frozen=True)
class FailureCause:
    """One reason cells failed, and the cells it failed.

    Attributes:
        error: the one-line error that caused it (a :class:`SafeReuseError`'s ``problem (fix: ...)``);
            for cells whose teacher failed, the teacher's own error.
        teacher: the cells did not run because training their teacher failed.
        cells: ``(cell id, where)`` of each cell it failed, in grid order.
    """

    error: str
    teacher: bool
    cells: tuple[tuple[str, str], ...]


def failure_causes(failures: list[tuple[str, str, str]]) -> list[FailureCause]:
    """Group failed cells by cause, in the order each cause first failed a cell.

    Args:
        failures: ``(cell id, where, ledger error)`` as in :attr:`RunSummary.failures`.

    Returns:
        One :class:`FailureCause` per distinct (teacher?, error).

    Example:
        >>> fs = [("a1", "s/ft/seed 0", "teacher training failed: no data (fix: get it)"),
        ...       ("b2", "s/lp/seed 0", "teacher training failed: no data (fix: get it)")]
        >>> [(c.error, c.teacher, len(c.cells)) for c in failure_causes(fs)]
        [('no data (fix: get it)', True, 2)]
    """
    groups: dict[tuple[bool, str], list[tuple[str, str]]] = {}
    for cell_id, where, error in failures:
        groups.setdefault(failure_cause(error), []).append((cell_id, where))
    return [FailureCause(err, teacher, tuple(cells)) for (teacher, err), cells in groups.items()]


@dataclass
class RunSummary:
    """What a run did.

    Attributes:
        rundir: the run directory.
        spec_hash: the spec's hash.
        total: cells in the spec.
        ran: cells run this time.
        skipped: cells already done (or failed, without ``retry_failed``) and not run.
        counts: ledger status counts for the spec's cells after the run.
        failures: ``(cell id, label, error)`` of the spec's failed cells.
        seconds: wall time.
    """

    rundir: Path
    spec_hash: str
    total: int
    ran: int
    skipped: int
    counts: dict[str, int]
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        c = self.counts
        return (
            f"{self.total} cells: {c['done']} done, {c['failed']} failed"
            + (f", {c['pending'] + c['running']} not run" if c["pending"] + c["running"] else "")
            + f" ({self.ran} run now, {self.skipped} reused) in {self.seconds:.0f} s — {self.rundir}"
        )

    @property
    def causes(self) -> list[FailureCause]:
        """The failed cells grouped by cause (:func:`failure_causes`), first cause first."""
        return failure_causes(self.failures)

    def failure_text(self, others: int = 3, width: int = 300) -> str:
        """Why cells failed, for the terminal: the first failure's cause in full (with its fix), then
        up to ``others`` other causes cut to ``width`` characters; ``""`` when nothing failed.

        Example:
            >>> s = RunSummary(Path("run"), "h", 2, 2, 0, {}, [("a1", "s/ft/seed 0", "RuntimeError: boom")])
            >>> print(s.failure_text())
            1 cell failed; the first, s/ft/seed 0 (cell a1), with:
              RuntimeError: boom
            fix the cause, then rerun with --retry-failed
        """
        causes = self.causes
        if not causes:
            return ""
        n = len(self.failures)
        first = causes[0]
        cell_id, where = first.cells[0]
        how = "because training its teacher failed:" if first.teacher else "with:"
        lines = [
            f"{n} cell{'s' * (n != 1)} failed; the first, {where} (cell {cell_id}), {how}",
            f"  {first.error}",
        ]
        if len(first.cells) > 1:
            k = f"all {n}" if len(causes) == 1 else f"{len(first.cells)} of the {n}"
            lines.append(f"  ({k} failed cells have this cause)")
        if len(causes) > 1:
            rest = sum(len(c.cells) for c in causes[1:])
            lines.append(f"  {rest} more for {len(causes) - 1} other cause{'s' * (len(causes) > 2)}:")
            for c in causes[1 : others + 1]:
                err = c.error if len(c.error) <= width else c.error[: width - 1] + "…"
                teacher = "its teacher failed: " if c.teacher else ""
                lines.append(f"  - {len(c.cells)} × first {c.cells[0][1]}: {teacher}{err}")
            if len(causes) > others + 1:
                lines.append(
                    f"  - … and {len(causes) - others - 1} more (see `safereuse report {self.rundir}`)"
                )
        lines.append("fix the cause, then rerun with --retry-failed")
        return "\n".join(lines)


# -- run directory checks --------------------------------------------------------------------------
def check_rundir(rundir: Path, spec_hash: str, force: bool) -> None:
    """Refuse a run directory that cannot be written or holds another spec's run (unless ``force``).

    Raises:
        SafeReuseError: RUNDIR is a file, not writable, not a run directory, or made by a different spec.
    """
    rundir = Path(rundir)
    if rundir.exists():
        if not rundir.is_dir():
            raise SafeReuseError(f"run directory {rundir} is a file", fix="pass another --out")
        if not os.access(rundir, os.W_OK | os.X_OK):
            raise SafeReuseError(
                f"run directory {rundir} is not writable", fix="fix its permissions or pass another --out"
            )
        recorded = read_run_spec(rundir)
        if recorded is None:
            if (rundir / LEDGER_FILE).exists() or (any(rundir.iterdir()) and not force):
                raise SafeReuseError(
                    f"{rundir} is not empty and is not a safereuse run directory",
                    fix="pass a new or empty --out (or --force to use it anyway)",
                )
        elif recorded.get("spec_hash") != spec_hash and not force:
            raise SafeReuseError(
                f"{rundir} holds a run of a different spec ({recorded.get('source', '?')}, "
                f"hash {recorded.get('spec_hash')}; this one is {spec_hash})",
                fix="pass another --out, or --force to add this spec's cells to that run",
            )
        return
    anc = rundir.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise SafeReuseError(f"cannot create {rundir}: {anc} is not a directory", fix="pass another --out")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise SafeReuseError(f"cannot create {rundir}: {anc} is not writable", fix="pass another --out")


def _make_rundir(rundir: Path) -> None:
    try:
        rundir.mkdir(parents=True, exist_ok=True)
        with atomic_path(rundir / ".write-test") as tmp:
            tmp.write_text("ok")
        (rundir / ".write-test").unlink()
    except OSError as exc:
        raise SafeReuseError(
            f"cannot write to {rundir}: {exc.strerror or exc}", fix="pass another --out"
        ) from None


def _record_spec(rundir: Path, spec: LoadedSpec, spec_hash: str) -> None:
    write_run_spec(
        rundir, spec_hash=spec_hash, source=spec.path, name=spec.spec.name,
        spec=spec.spec.model_dump(mode="json"), text=spec.text,
    )  # fmt: skip


# -- the run ---------------------------------------------------------------------------------------
def run(
    spec: LoadedSpec,
    out: str | Path,
    *,
    jobs: int | None = 1,
    executor: str | Executor = "local",
    address: str | None = None,
    retry_failed: bool = False,
    force: bool = False,
    device: str = "auto",
    data_dir: str | None = None,
    progress: bool = True,
) -> RunSummary:
    """Run (or resume) every cell of ``spec`` in the run directory ``out``.

    Done cells are skipped; cells a killed run left ``running`` are run again; failed cells are run
    again only with ``retry_failed``. Teachers are built first (each once, cached), then cells run as
    their teacher becomes available.

    Args:
        spec: a loaded spec (:func:`~safereuse.runner.spec.load_spec`).
        out: the run directory.
        jobs: tasks at a time (local: 1 = in this process, N = N worker processes; ray: default all CPUs).
        executor: ``local``, ``ray`` or an :class:`Executor`.
        address: Ray cluster address.
        retry_failed: run failed cells again.
        force: accept a run directory made by a different spec (its cells stay in the ledger).
        device: ``auto``, ``cpu``, ``cuda``...
        data_dir: extra folder with dataset files.
        progress: show a progress bar over cells (stderr).

    Returns:
        The :class:`RunSummary`.

    Raises:
        SafeReuseError: bad spec/run directory/executor (nothing is written then), or another run
            holds the directory.
    """
    t_start = time.perf_counter()
    out = Path(out)
    cells = expand(spec)
    selection = SelectionPhase(spec, cells) if spec.spec.select is not None else None
    spec_hash = spec.spec.spec_hash()
    check_rundir(out, spec_hash, force)
    ex = executor if isinstance(executor, Executor) else make_executor(executor, jobs, address)
    try:
        _make_rundir(out)
        with run_lock(out):
            _record_spec(out, spec, spec_hash)
            with Ledger(out / LEDGER_FILE) as ledger:
                ledger.set_meta("spec_hash", spec_hash)
                if selection is not None:  # phase 1 on the holdout; `cells` becomes the chosen points
                    cells = selection.run(
                        ledger,
                        spec_hash,
                        out,
                        lambda sel: _schedule(sel, ex, ledger, out, device, data_dir, progress),
                        retry_failed,
                    )
                ledger.add_cells(cells, spec_hash)
                ids = ledger.to_run([c.id for c in cells], retry_failed=retry_failed)
                todo = [c for c in cells if c.id in set(ids)]
                _schedule(todo, ex, ledger, out, device, data_dir, progress)
                counts = ledger.status_counts(spec_hash)
                failures = [
                    (r["id"], f"{r['scenario']}/{r['label']}/seed {r['seed']}", r["error"] or "")
                    for r in ledger.rows(spec_hash)
                    if r["status"] == "failed"
                ]
                total, ran, skipped = len(cells), len(todo), len(cells) - len(todo)
                if selection is not None:
                    n_now = len(cells)
                    total, counts, failures = selection.totals(ledger, spec_hash, counts, failures, n_now)
                    ran += selection.ran
                    skipped += len(selection.sel_cells) - selection.ran
    except BaseException:
        ex.close(cancel=True)
        raise
    ex.close()
    return RunSummary(
        out,
        spec_hash,
        total,
        ran,
        skipped,
        counts,
        failures,
        time.perf_counter() - t_start,
    )


def _craft_groups(todo: list[Cell]) -> dict[str, list[Cell]]:
    """The cells whose audits craft sets on their teacher, by :func:`~.worker.craft_key` (grid order)."""
    groups: dict[str, list[Cell]] = {}
    for c in todo:
        if c.config.get("task", "cell") != "cell":
            continue
        names = [d["name"] for d in c.config["defects"]]
        if any(n in DEFECTS and DEFECTS.get(n).crafted_on_teacher for n in names):
            groups.setdefault(craft_key(c.config), []).append(c)
    return groups


def _schedule(
    todo: list[Cell],
    ex: Executor,
    ledger: Ledger,
    rundir: Path,
    device: str,
    data_dir: str | None,
    progress: bool,
) -> None:
    """Keep ``ex.capacity`` tasks in flight: missing teachers first, then the sets crafted on each
    teacher (one ``craft`` task per :func:`~.worker.craft_key`, as soon as the teacher exists), then
    cells whose teacher exists — a cell whose crafted sets are still being made waits while other
    cells can run, so no worker sits on the crafting lock."""
    base = {
        "rundir": str(rundir.resolve()), "device": device, "data_dir": data_dir, "threads": ex.threads,
        # a spawned worker imports the modules that registered the experiment kinds (it names none)
        "plugins": sorted({e.obj.__module__ for e in EXPERIMENTS}),
    }  # fmt: skip
    by_teacher: dict[str, list[Cell]] = {}
    recipes: dict[str, dict[str, Any]] = {}
    for c in todo:
        key = teacher_key(c.config["teacher"])
        by_teacher.setdefault(key, []).append(c)
        recipes[key] = c.config["teacher"]
    groups = _craft_groups(todo)
    group_of = {c.id: g for g, cs in groups.items() for c in cs}
    missing = [k for k in by_teacher if not (rundir / TEACHERS / k / "manifest.json").is_file()]
    # text teachers first: they fine-tune a transformer, the longest task of a grid (--quick: 115 s
    # against 7 s for an image teacher), and the text cells wait for them at the end of the run
    teacher_queue = sorted(missing, key=lambda k: recipes[k]["data"]["name"] not in TEXT_DATASETS)
    craft_queue: list[str] = []  # craft keys whose teacher exists, not yet submitted
    crafting: set[str] = set()  # craft keys queued or in flight: their cells wait if others can run

    def teacher_ready(key: str) -> None:
        new = [g for g, cs in groups.items() if teacher_key(cs[0].config["teacher"]) == key]
        craft_queue.extend(new)
        crafting.update(new)
        ready.extend(by_teacher[key])
        ready.sort(key=lambda c: c.order)

    ready: list[Cell] = []
    for k in by_teacher:
        if k not in missing:
            teacher_ready(k)
    in_flight: dict[Any, tuple[str, Any]] = {}
    bar = tqdm(
        total=len(todo), desc="cells", unit="cell", disable=not progress, file=sys.stderr, dynamic_ncols=True
    )
    n_failed = 0

    def finish(cell: Cell, result: dict[str, Any]) -> None:
        nonlocal n_failed
        ledger.finish(cell.id, result)
        n_failed += result.get("status") == "failed"
        bar.update(1)
        bar.set_postfix_str(f"{n_failed} failed" if n_failed else "", refresh=False)

    def next_cell() -> Cell:
        for i, cell in enumerate(ready):
            if group_of.get(cell.id) not in crafting:
                return ready.pop(i)
        return ready.pop(0)  # only cells whose sets are being crafted: they wait on the lock

    def can_wait() -> bool:
        """Hold back the cells waiting for crafted sets while other tasks keep the workers busy."""
        return bool(in_flight) and all(group_of.get(c.id) in crafting for c in ready)

    try:
        while teacher_queue or craft_queue or ready or in_flight:
            while len(in_flight) < ex.capacity and (teacher_queue or craft_queue or ready):
                if teacher_queue:
                    key = teacher_queue.pop(0)
                    h = ex.submit("teacher", {**base, "recipe": recipes[key]})
                    in_flight[h] = ("teacher", key)
                    bar.set_description_str(
                        f"cells (training {len(missing)} teacher{'s' * (len(missing) > 1)})"
                    )
                elif craft_queue:
                    g = craft_queue.pop(0)
                    h = ex.submit("craft", {**base, "config": groups[g][0].config})
                    in_flight[h] = ("craft", g)
                elif can_wait():
                    break
                else:
                    cell = next_cell()
                    ledger.mark_running(cell.id)
                    task = cell.config.get("task", "cell")  # "experiment" for an experiment spec's cells
                    h = ex.submit(task, {**base, "id": cell.id, "config": cell.config})
                    in_flight[h] = ("cell", cell)
            for h, result in ex.wait():
                what, obj = in_flight.pop(h)
                if what == "teacher":
                    if result.get("status") == "done":
                        teacher_ready(obj)
                    else:
                        for cell in by_teacher[obj]:
                            ledger.mark_running(cell.id)
                            finish(cell, {**result, "error": f"{TEACHER_FAILED}{result.get('error')}"})
                    if not teacher_queue and not any(w == "teacher" for w, _ in in_flight.values()):
                        bar.set_description_str("cells")
                elif what == "craft":
                    crafting.discard(obj)  # done or failed: its cells craft what is missing themselves
                else:
                    finish(obj, result)
    finally:
        bar.close()


__all__ = ["FailureCause", "RunSummary", "check_rundir", "failure_causes", "run"]

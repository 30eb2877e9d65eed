"""What one task does, in whichever process runs it: build a teacher, or run a cell.

Both are module-level functions of one JSON-able ``payload`` dict, so the local process pool (spawn)
and Ray can ship them. They never touch the ledger: they return a result dict that the driver
records. Errors are caught and returned (``status: failed``) with a one-line message and the
traceback; only ``KeyboardInterrupt``/``SystemExit`` propagate.

Artifacts are cached in the run directory by content:

- ``teachers/<teacher key>/`` — the teacher artifact; the key hashes its whole recipe.
- ``students/<student key>/`` — the key hashes the teacher key, the student data, the method's
  resolved configuration and the seed.
- ``defects/`` — crafted defect sets (:mod:`safereuse.defects.cache`, keyed by model + data + defect);
  sets crafted on a teacher are made under a lock per teacher × student data, so each is made once —
  by a ``craft`` task (:func:`run_craft`) the driver runs as soon as the teacher exists, while the
  students train.

Each artifact is written by the API under a file lock (``locks/``) and atomically, and reused when
present, so concurrent cells, a re-run, or a worker orphaned by a killed run never build one twice
or see a half-written one.
"""

from __future__ import annotations

import importlib
import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .. import api
from ..artifacts import load_model
from ..data import DataSpec, load_data
from ..defects import audit, precraft
from ..errors import SafeReuseError
from ..registry import EXPERIMENTS
from ..utils import config_hash
from .rundir import DEFECT_CACHE, LOCKS, STUDENTS, TEACHERS, file_lock
from .spec import CELL_VERSION, teacher_key


def student_key(cell_config: dict[str, Any]) -> str:
    """Content key of a cell's student (its cache directory name)."""
    return config_hash(
        {
            "v": CELL_VERSION,
            "teacher": teacher_key(cell_config["teacher"]),
            "data": cell_config["student"]["data"],
            "method": cell_config["method"]["name"],
            "config": cell_config["method"]["config"],
            "seed": cell_config["seed"],
        },
        16,
    )


def teacher_dir(rundir: str | Path, recipe: dict[str, Any]) -> Path:
    return Path(rundir) / TEACHERS / teacher_key(recipe)


def _ready(path: Path) -> bool:
    return (path / "manifest.json").is_file()


def _data_spec(data: dict[str, Any], data_dir: str | None) -> DataSpec:
    return DataSpec(**data, data_dir=data_dir)


_MEMO: dict[tuple[str, ...], Any] = {}
_MEMO_SIZE = 4


def _memo(key: tuple[str, ...], make: Callable[[], Any]) -> Any:
    """A worker process's last few loaded teachers and datasets (a pool worker runs many cells of
    one teacher and student task: loading them again costs up to a second per cell, a MiniLM most).

    Only what no step changes is kept: a method transfers from a deep copy of the teacher, and the
    audit restores every flag and device it touches; datasets are read, never written.
    """
    if key in _MEMO:
        _MEMO[key] = _MEMO.pop(key)  # most recently used last
        return _MEMO[key]
    value = make()
    _MEMO[key] = value
    while len(_MEMO) > _MEMO_SIZE:
        del _MEMO[next(iter(_MEMO))]
    return value


def _load_teacher(t_dir: Path) -> Any:
    """The teacher artifact in ``t_dir`` on the CPU, loaded once per worker process (and again when
    its manifest is rewritten)."""
    stamp = str((t_dir / "manifest.json").stat().st_mtime_ns)
    return _memo(("teacher", str(t_dir.resolve()), stamp), lambda: load_model(t_dir, device="cpu"))


def _load_bundle(data: dict[str, Any], data_dir: str | None) -> Any:
    """A cell's dataset (its DataSpec dict), loaded once per worker process."""
    key = ("data", json.dumps(data, sort_keys=True, default=str), str(data_dir))
    return _memo(key, lambda: load_data(_data_spec(data, data_dir)))


def _set_threads(payload: dict[str, Any]) -> None:
    threads = payload.get("threads")
    if threads:
        torch.set_num_threads(int(threads))


def ensure_teacher(payload: dict[str, Any]) -> tuple[Path, bool]:
    """Train the teacher of ``payload["recipe"]`` into the run directory unless it is there.

    Returns:
        ``(directory, cached)``.
    """
    recipe = payload["recipe"]
    out = teacher_dir(payload["rundir"], recipe)
    with file_lock(Path(payload["rundir"]) / LOCKS / f"teacher-{out.name}.lock"):
        if _ready(out):
            return out, True
        api.train_teacher(
            recipe["arch"],
            _data_spec(recipe["data"], payload.get("data_dir")),
            out=out,
            arch_kwargs=recipe["arch_kwargs"],
            fit_params=recipe["fit"],
            backdoor=recipe["backdoor"],
            backdoor_params=recipe["backdoor_params"],
            adversarial=recipe.get("adversarial", False),
            adversarial_params=recipe.get("adversarial_params"),
            seed=recipe["seed"],
            device=payload.get("device", "auto"),
            progress=False,
            overwrite=out.exists(),
        )
        return out, False


def ensure_student(payload: dict[str, Any], t_dir: Path) -> tuple[Path, bool]:
    """Transfer the cell's student into the run directory unless it is there."""
    cfg = payload["config"]
    out = Path(payload["rundir"]) / STUDENTS / student_key(cfg)
    with file_lock(Path(payload["rundir"]) / LOCKS / f"student-{out.name}.lock"):
        if _ready(out):
            return out, True
        api.transfer(
            _load_teacher(t_dir),
            _data_spec(cfg["student"]["data"], payload.get("data_dir")),
            cfg["method"]["name"],
            cfg["method"]["params"],
            out=out,
            seed=cfg["seed"],
            device=payload.get("device", "auto"),
            progress=False,
            overwrite=out.exists(),
        )
        return out, False


def craft_key(cell_config: dict[str, Any]) -> str:
    """Key of the sets a cell's audit crafts on its teacher: teacher × student data × audit options.

    Cells with the same key share those sets; the runner crafts them once (:func:`run_craft`) under
    the lock ``locks/craft-<key>.lock``.
    """
    return config_hash(
        [teacher_key(cell_config["teacher"]), cell_config["student"]["data"], cell_config["audit"]], 16
    )


def _craft_lock(payload: dict[str, Any]) -> Callable[[], Any]:
    path = Path(payload["rundir"]) / LOCKS / f"craft-{craft_key(payload['config'])}.lock"
    return lambda: file_lock(path)


def _audit_bundle(payload: dict[str, Any]) -> Any:
    """The cell's audited data: the student's dataset (its holdout view for a selection cell)."""
    cfg = payload["config"]
    bundle = _load_bundle(cfg["student"]["data"], payload.get("data_dir"))
    if cfg["audit"].get("split") == "holdout":  # a selection cell (runner.select): never the test split
        bundle = bundle.holdout_view()
    return bundle


def _audit(payload: dict[str, Any], teacher: Any, student: Any, bundle: Any) -> dict[str, Any]:
    """The cell's audit as a dict (:meth:`AuditReport.to_dict`), rows in the spec's defect order.

    Sets crafted on the teacher are the same for every cell of a scenario (same teacher, same test
    images): they are crafted (or read from the cache) under a lock per teacher × student data, so
    one cell crafts them while the others wait for the cache instead of crafting them twice side by
    side. Only the crafting holds the lock (:attr:`~safereuse.defects.probe.ProbeContext.craft_lock`);
    probing the student, and defects crafted on the student or planted, run outside it — in one
    audit, so the student's clean predictions are made once.
    """
    return audit(teacher, student, bundle, **_audit_args(payload)).to_dict()


def _audit_args(payload: dict[str, Any]) -> dict[str, Any]:
    """The defects and audit settings of a cell's (or craft task's) config, as ``audit`` and
    ``precraft`` take them: both must craft under the same keys, so one place builds them."""
    cfg = payload["config"]
    return {
        "defects": [(d["name"], d["params"]) for d in cfg["defects"]],
        "cache_dir": Path(payload["rundir"]) / DEFECT_CACHE,
        "max_samples": cfg["audit"]["max_samples"],
        "batch_size": cfg["audit"]["batch_size"],
        "device": payload.get("device", "auto"),
        "seed": cfg["seed"],
        "craft_lock": _craft_lock(payload),
    }


def _failure(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, SafeReuseError):
        msg = exc.one_line()
    else:
        msg = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:1000]
    return {"status": "failed", "error": msg, "traceback": traceback.format_exc()}


def run_teacher(payload: dict[str, Any]) -> dict[str, Any]:
    """Task: make sure the teacher of ``payload["recipe"]`` exists.

    Args:
        payload: ``{"rundir", "recipe", "device", "data_dir", "threads"}``.

    Returns:
        ``{"status": "done", "path", "cached", "seconds"}`` or ``{"status": "failed", "error", "traceback"}``.
    """
    t0 = time.perf_counter()
    try:
        _set_threads(payload)
        path, cached = ensure_teacher(payload)
    except Exception as exc:  # noqa: BLE001 - recorded in the ledger, the run goes on
        return _failure(exc)
    return {"status": "done", "path": str(path), "cached": cached, "seconds": time.perf_counter() - t0}


def run_craft(payload: dict[str, Any]) -> dict[str, Any]:
    """Task: craft on a cell's teacher the sets every audit of its group will read (:func:`craft_key`),
    before the group's students are trained (:func:`safereuse.defects.precraft`).

    Args:
        payload: ``{"rundir", "config" (any cell of the group), "device", "data_dir", "threads"}``.

    Returns:
        ``{"status": "done", "crafted": [defect names], "seconds"}`` or a failure (the cells then craft
        the sets themselves).
    """
    t0 = time.perf_counter()
    cfg = payload["config"]
    try:
        _set_threads(payload)
        t_dir, _ = ensure_teacher({**payload, "recipe": cfg["teacher"]})
        crafted = precraft(_load_teacher(t_dir), _audit_bundle(payload), **_audit_args(payload))
    except Exception as exc:  # noqa: BLE001 - the cells craft what is missing themselves
        return _failure(exc)
    return {"status": "done", "crafted": crafted, "seconds": time.perf_counter() - t0}


def _on_teacher(
    payload: dict[str, Any], body: Callable[[Path, dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]]
) -> dict[str, Any]:
    """The frame of a task on a cell's (cached) teacher: threads, timings, failures recorded.

    ``body(teacher_dir, timings)`` returns ``(metrics, artifacts)``; artifact paths are made relative to
    the run directory, the teacher's first.
    """
    rundir = Path(payload["rundir"])
    timings: dict[str, Any] = {}
    t_start = time.perf_counter()
    try:
        _set_threads(payload)
        t_dir, t_cached = ensure_teacher({**payload, "recipe": payload["config"]["teacher"]})
        timings.update(teacher=time.perf_counter() - t_start, teacher_cached=t_cached)
        metrics, paths = body(t_dir, timings)
    except Exception as exc:  # noqa: BLE001 - recorded in the ledger, the run goes on
        timings["total"] = time.perf_counter() - t_start
        return {**_failure(exc), "timings": timings}
    timings["total"] = time.perf_counter() - t_start
    artifacts = {k: str(v.relative_to(rundir)) for k, v in {"teacher": t_dir, **paths}.items()}
    return {"status": "done", "metrics": metrics, "artifacts": artifacts, "timings": timings}


def run_cell(payload: dict[str, Any]) -> dict[str, Any]:
    """Task: one cell — teacher (cached), student (cached), evaluation and audit.

    Args:
        payload: ``{"id", "config", "rundir", "device", "data_dir", "threads"}``.

    Returns:
        The ledger result: ``{"status": "done", "metrics", "artifacts", "timings"}`` or
        ``{"status": "failed", "error", "traceback", "timings"}``.
    """

    def body(t_dir: Path, timings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        t0 = time.perf_counter()
        s_dir, s_cached = ensure_student(payload, t_dir)
        timings.update(student=time.perf_counter() - t0, student_cached=s_cached)
        t0 = time.perf_counter()
        teacher = _load_teacher(t_dir)
        student = load_model(s_dir, device="cpu")
        report = _audit(payload, teacher, student, _audit_bundle(payload))
        timings["audit"] = time.perf_counter() - t0
        tm, sm = teacher.manifest, student.manifest
        backdoor = tm.get("backdoor") or {}
        metrics = {
            "teacher": {
                "hash": teacher.hash,
                "test_acc": (tm.get("metrics") or {}).get("test_acc"),
                "n_test": (tm.get("metrics") or {}).get("n_test"),
                "backdoor": backdoor.get("name") if backdoor else None,
                "teacher_asr": backdoor.get("teacher_asr") if backdoor else None,
            },
            "student": {"hash": student.hash, **(sm.get("metrics") or {})},
            "audit": {k: report[k] for k in ("acc", "rows", "n_samples", "max_samples", "seed")},
        }
        return metrics, {"student": s_dir}

    return _on_teacher(payload, body)


def run_kind(teacher_dir: str | Path, config: dict[str, Any], data_dir: str | None = None) -> dict[str, Any]:
    """The registered experiment kind of a cell ``config`` (:data:`safereuse.registry.EXPERIMENTS`)
    on the teacher in ``teacher_dir`` and its data slice.

    Returns:
        The ledger metrics: ``{"teacher": {...}, "experiment": {"kind", "rows", "seconds"}}``.
    """
    art = load_model(teacher_dir, device="cpu")
    bundle = load_data(DataSpec(**config["teacher"]["data"], data_dir=data_dir))
    exp = EXPERIMENTS.create(config["method"]["name"], **config["method"]["params"])
    t0 = time.perf_counter()
    rows = exp.run(art.model, bundle, int(config["seed"]))
    tm = art.manifest.get("metrics") or {}
    return {
        "teacher": {"hash": art.hash, "test_acc": tm.get("test_acc"), "n_test": tm.get("n_test")},
        "experiment": {"kind": config["method"]["name"], "rows": rows, "seconds": time.perf_counter() - t0},
    }


def run_experiment(payload: dict[str, Any]) -> dict[str, Any]:
    """Task: one cell of an experiment spec (``experiment:``) — the teacher (cached), then the
    experiment kind on it (:func:`run_kind`).

    Returns:
        The ledger result, as :func:`run_cell`'s (metrics ``teacher`` and ``experiment``).
    """

    def body(t_dir: Path, timings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        t0 = time.perf_counter()
        metrics = run_kind(t_dir, payload["config"], payload.get("data_dir"))
        timings["experiment"] = time.perf_counter() - t0
        return metrics, {}

    return _on_teacher(payload, body)


TASKS = {"teacher": run_teacher, "craft": run_craft, "cell": run_cell, "experiment": run_experiment}
"""The task functions executors dispatch to, by task name."""


def run_task(task: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Dispatch for executors: ``task`` is a name of :data:`TASKS`.

    Raises:
        SafeReuseError: an unknown task name.
    """
    try:
        fn = TASKS[task]
    except KeyError:
        raise SafeReuseError(f"unknown task {task!r}", fix=f"use one of: {', '.join(TASKS)}") from None
    for module in payload.get("plugins", ()):  # registers the experiment kinds in a fresh worker process
        importlib.import_module(module)
    return fn(payload)


__all__ = [
    "TASKS",
    "craft_key",
    "ensure_student",
    "ensure_teacher",
    "file_lock",
    "run_cell",
    "run_craft",
    "run_experiment",
    "run_kind",
    "run_task",
    "run_teacher",
    "student_key",
]

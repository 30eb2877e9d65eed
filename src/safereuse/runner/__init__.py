"""The experiment runner: YAML spec → grid of cells → results ledger, on local processes or Ray.

>>> from safereuse.runner import load_spec, expand, run     # doctest: +SKIP
>>> cells = expand(load_spec("examples/default.yaml"))       # doctest: +SKIP
>>> run(load_spec("examples/default.yaml"), "runs/x", jobs=2)  # doctest: +SKIP
"""

from __future__ import annotations

from .core import RunSummary, check_rundir, run
from .executors import Executor, PoolExecutor, RayExecutor, SequentialExecutor, make_executor
from .ledger import LEDGER_FILE, Ledger
from .rundir import read_run_spec
from .spec import Cell, LoadedSpec, Spec, bundled_spec, expand, load_spec

__all__ = [
    "LEDGER_FILE",
    "Cell",
    "Executor",
    "Ledger",
    "LoadedSpec",
    "PoolExecutor",
    "RayExecutor",
    "RunSummary",
    "SequentialExecutor",
    "Spec",
    "bundled_spec",
    "check_rundir",
    "expand",
    "load_spec",
    "make_executor",
    "read_run_spec",
    "run",
]

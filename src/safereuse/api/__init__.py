"""The Python API behind every CLI command: load, call the library, save.

Each function takes plain values (names, dicts, paths), writes an artifact atomically (its manifest a
:class:`~safereuse.artifacts.Manifest`) and returns the manifest or the result, so the CLI, the
experiment runner and user scripts all do the same thing. The work itself lives in the library:

- :mod:`.teacher` — :func:`train_teacher` (a teacher, optionally backdoored or adversarially trained);
- :mod:`.transfer` — :func:`transfer` (a student by a registered transfer method);
- :mod:`.evaluate` — :func:`evaluate` (clean test accuracy);
- :mod:`.audit` — :func:`audit`, :func:`audit_defects` (what a student inherited; also for models
  built in Python);
- :mod:`.importing` — :func:`import_model` (a checkpoint made elsewhere; :mod:`safereuse.importing`);
- :mod:`.reengineer` — :func:`reengineer` (SeaM; :mod:`safereuse.slicing.shrink`,
  :func:`safereuse.metrics.compare_cost`);
- :mod:`.slice` — :func:`slice_model`, :func:`detect`, :func:`prune_model`, :func:`protect_model`
  (NNSlicer and its applications).

Example:
    >>> import tempfile, pathlib
    >>> from safereuse.data import DataSpec
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> t = train_teacher("smallcnn", DataSpec("digits", classes=[0, 1, 2]), out=tmp / "t",
    ...                   fit_params={"epochs": 1}, progress=False)
    >>> s = transfer(tmp / "t", DataSpec("digits", classes=[3, 4], train_size=20), "finetune",
    ...              {"epochs": 1}, out=tmp / "s", progress=False)
    >>> sorted(evaluate(tmp / "s"))[:2]
    ['acc', 'ci']
    >>> rep = audit(tmp / "t", tmp / "s", defects=["fgsm"], max_samples=8, device="cpu")
    >>> [(r.defect, r.crafted_on) for r in rep.rows]
    [('fgsm', 'student')]
"""

from __future__ import annotations

from ..config import DEFAULT_DEFECTS, DEFAULT_TEACHER_ARCH, DEFAULT_TEACHER_DATA, TEACHER_FIT
from ._common import load_task, model_data_spec
from .audit import audit, audit_defects
from .evaluate import evaluate
from .importing import import_model
from .reengineer import reengineer
from .slice import detect, protect_model, prune_model, slice_model
from .teacher import split_teacher_params, train_teacher
from .transfer import transfer

__all__ = [
    "DEFAULT_DEFECTS",
    "DEFAULT_TEACHER_ARCH",
    "DEFAULT_TEACHER_DATA",
    "TEACHER_FIT",
    "audit",
    "audit_defects",
    "detect",
    "evaluate",
    "import_model",
    "load_task",
    "model_data_spec",
    "protect_model",
    "prune_model",
    "reengineer",
    "slice_model",
    "split_teacher_params",
    "train_teacher",
    "transfer",
]

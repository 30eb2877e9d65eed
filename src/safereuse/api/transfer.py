"""Produce a student from a teacher artifact with a registered transfer method, and save it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..artifacts import Artifact, Manifest, save_model
from ..config import student_params
from ..data import DataSpec, load_data
from ..methods import METHODS
from ._common import as_artifact, check_out, partial_dir, test_split_metrics


def transfer(
    teacher: str | Path | Artifact,
    data: DataSpec,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    out: str | Path,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Produce a student from a teacher artifact with a registered transfer method.

    Args:
        teacher: the teacher's artifact directory (or a loaded :class:`Artifact`).
        data: the student's dataset slice.
        method: transfer method name (``safereuse list methods``).
        params: the method's hyper-parameters; those not given come from the teacher architecture's
            student defaults (text encoders: :data:`~safereuse.models.hf_encoder.TEXT_STUDENT_FIT`),
            then the method's own (:func:`safereuse.config.student_params`, the same on the CLI and
            in a spec).
        out: artifact directory to create.
        seed: seed of the new head, re-initialisation and data order.
        device: ``auto``, ``cpu``, ``cuda``...
        progress: show progress bars.
        overwrite: replace an existing ``out``.

    Returns:
        The student's manifest (its ``parent`` names the teacher; ``method.config`` the resolved
        parameters, ``method.params`` those given).

    Example:
        >>> import tempfile, pathlib
        >>> from safereuse.api import train_teacher
        >>> tmp = pathlib.Path(tempfile.mkdtemp())
        >>> t = train_teacher("smallcnn", DataSpec("digits", classes=[0, 1]), out=tmp / "t",
        ...                   fit_params={"epochs": 1}, progress=False)
        >>> s = transfer(tmp / "t", DataSpec("digits", classes=[3, 4], train_size=20), "finetune",
        ...              {"epochs": 1}, out=tmp / "s", progress=False)
        >>> s["role"], s["parent"]["hash"] == t["hash"]
        ('student', True)
    """
    out = check_out(out, overwrite)
    art = as_artifact(teacher)
    arch = art.manifest.get("arch") or (art.model.info.arch if art.model.info else None)
    # the one resolution of every path (CLI, runner worker, Python): method < architecture < user
    method_obj = METHODS.create(method, **student_params(arch, method, params, METHODS.get(method)))
    bundle = load_data(data)
    recipe = {"teacher": art.hash, "data": data.to_dict(), "method": method_obj.config(), "seed": seed}
    partial = partial_dir(out, recipe)
    student = method_obj.transfer(
        art.model, bundle, seed=seed, device=device, progress=progress, checkpoint_dir=partial
    )
    manifest = Manifest(
        "student",
        data=bundle.spec.to_dict(),
        class_names=bundle.class_names,
        seed=seed,
        parent=art,
        method={"name": method, "config": student.config, "params": dict(params or {})},
        fit_result=student.fit.to_dict() if student.fit is not None else None,
        metrics={
            "val_acc": student.fit.best_val_acc if student.fit else None,
            **test_split_metrics(student.model, bundle),
        },
        extra={"info": student.info},
    )
    written = save_model(student.model, out, manifest, student.extras or None, overwrite=overwrite)
    shutil.rmtree(partial, ignore_errors=True)
    return written

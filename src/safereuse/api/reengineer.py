"""Re-engineer a model for a target problem with SeaM and save it (direct reuse)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..artifacts import Artifact, Manifest, save_model
from ..data import DataSpec, parse_classes
from ..data.targets import target_problem
from ..errors import SafeReuseError
from ..methods import SeaM
from ..methods.seam import measure_reengineered
from ..params import validate_params
from ._common import as_artifact, check_out, class_ids, label_ids, load_task, partial_dir, recorded_data


def reengineer(
    model: str | Path | Artifact,
    target_classes: str | int | Sequence[int],
    *,
    out: str | Path,
    binary: bool = False,
    params: dict[str, Any] | None = None,
    data: DataSpec | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    overwrite: bool = False,
    threads: int = 2,
) -> dict[str, Any]:
    """Re-engineer a model for a target problem with SeaM and save it (direct reuse).

    SeaM (Qi et al., ICSE 2023) searches the weights the target problem needs
    (:class:`safereuse.methods.SeaM`), selecting on the problem's validation split. With
    ``granularity=channel`` the artifact is the materialised model (channels whose masks are all
    zero removed for real, :func:`safereuse.slicing.shrink.shrink_target_model`). The artifact holds the
    (masked or materialised) model, the masks (``seam.keep.<param>``) and the stacked head
    (``manifest["target_head"]``, :class:`safereuse.models.stacked.TargetHeadModel`). The search and
    every number reported are :func:`safereuse.methods.seam.measure_reengineered`'s (the runner's
    ``seam-reengineer`` experiment kind calls it too); this function loads, calls it and saves.

    Args:
        model: the trained model's artifact directory (or a loaded :class:`Artifact`).
        target_classes: dataset class ids of the target problem (``"5-9"``, ``3``, ``[1, 4]``),
            among the classes the model was trained on.
        out: artifact directory to create.
        binary: one class against an equal-sized sample of the others.
        params: :class:`~safereuse.methods.SeaM` parameters (``lr_mask``, ``alpha``, ``epochs``,
            ``granularity``...).
        data: the data slice (default: the one the model was trained on, from its manifest).
        seed: seed of the head and the data order.
        device: ``auto``, ``cpu``, ``cuda``...
        progress: show progress bars.
        overwrite: replace an existing ``out``.
        threads: CPU threads of the latency measurement (both models, same run).

    Returns:
        The metrics (``acc_original``, ``acc_reengineered``, ``n``, ``weights_kept``,
        ``channels_removed`` (fraction of the Conv / Linear output channels removed for real, the
        model's own head left out; ``channels_removed_per_layer``: ``{layer: {"removed", "of"}}``),
        ``flops_original``, ``flops_reengineered`` (multiplications of non-zero weights, batch 1),
        ``flop_counter_original``, ``flop_counter_reengineered`` (``torch.utils.flop_counter``, a
        multiply-add = 2, batch 1), ``latency_original_ms``, ``latency_reengineered_ms`` per batch
        size 1 and 64, ``val_acc_reengineered`` (channel: of the materialised model), ``flops_weight``
        (the one kept; ``flops_weight_trials`` when several were tried) ...) and ``out``; the manifest's
        ``metrics`` hold the same numbers. The multi-class score of the original model is argmax over
        all its classes, exact class only: it favours SeaM (``original_rule`` says which rule).
    """
    out = check_out(out, overwrite)
    method = SeaM(**validate_params(SeaM, dict(params or {}), "reengineer"))
    art = as_artifact(model)
    if data is None:
        data = recorded_data(art)
    wanted = parse_classes(target_classes)
    if not wanted:
        raise SafeReuseError("the target problem names no class", fix="pass e.g. --target-classes 3")
    labels = label_ids(class_ids(data.classes, art.model.num_classes), wanted)
    art, bundle = load_task(art, data)
    problem = target_problem(bundle, labels, binary, art.model.num_classes)
    recipe = {"model": art.hash, "data": data.to_dict(), "classes": wanted, "binary": binary,
              "seam": method.config(), "seed": seed}  # fmt: skip
    partial = partial_dir(out, recipe)
    measured = measure_reengineered(
        method, art.model, problem, seed=seed, device=device, progress=progress, checkpoint_dir=partial,
        threads=threads,
    )  # fmt: skip
    r, result, metrics = measured.found, measured.model, measured.metrics
    extras = {f"seam.keep.{k}": v for k, v in r.masks.items()}
    extras.update(result.head_tensors())
    manifest = Manifest(
        "reengineered",
        # a multi-class problem is the data slice of its classes (so `safereuse evaluate` scores it)
        data=data.to_dict() if binary else {**data.to_dict(), "classes": wanted},
        class_names=problem.class_names,
        seed=seed,
        parent=art,
        method={"name": "seam-reengineer", "config": method.config()},
        metrics=metrics,
        extra={
            "target_head": {
                "num_classes": problem.num_classes,
                "kind": problem.problem_type,
                "binary": binary,
                "target_classes": wanted,
                "head": "relu-linear",
            },
            "search": {"history": r.search.history, "seconds": r.search.seconds},
        },  # fmt: skip
    )
    save_model(result.inner, out, manifest, extras, overwrite=overwrite)
    shutil.rmtree(partial, ignore_errors=True)
    return {**metrics, "out": str(out), "target_classes": wanted, "binary": binary}

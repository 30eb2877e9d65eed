"""Import a checkpoint made elsewhere as an artifact (the work is :mod:`safereuse.importing`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..artifacts import Artifact, save_model
from ..data import DataSpec, load_data
from ..importing import check_task, import_checkpoint, import_manifest
from ..methods import check_input_fits
from ._common import as_artifact, check_out, test_split_metrics


def import_model(
    weights: str | Path,
    arch: str | None = None,
    *,
    out: str | Path,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    in_channels: int | None = None,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    parent: str | Path | Artifact | None = None,
    data: DataSpec | None = None,
    evaluate: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Turn a checkpoint made elsewhere into an artifact: a teacher, or with ``parent`` a student.

    The weights are read without running code and mapped from torchvision's, RobustBench's, the
    robustness library's or safereuse's key layout (:mod:`safereuse.importing`). The manifest records
    the file's SHA-256, format and layout (``source``) and the input normalisation chosen. A student
    fine-tuned with the user's own code imports with ``parent`` (the teacher's artifact): its manifest
    then names the teacher as a transferred student's does, so :func:`audit` works on the pair.

    Args:
        weights: ``.safetensors`` or ``.pth`` / ``.pt`` / ``.bin`` (``torch.save`` of a state dict,
            possibly inside ``{"state_dict": ...}`` / ``{"model": ...}`` / ``{"net": ...}``), or a local
            Hugging Face encoder folder (BERT, RoBERTa, MPNet, MiniLM, DistilBERT: a text model whose
            vocabulary is aligned with the folder's own tokenizer; see
            :func:`safereuse.importing.import_hf_folder`).
        arch: zoo architecture (``safereuse list models``); default: the parent's (a Hugging Face
            folder's: ``minilm`` for BERT, ``mpnet`` for MPNet, ``hf-encoder`` for the others).
        out: artifact directory to create.
        num_classes: outputs of the head (default: read from the head's weights).
        class_names: the class names, in label order (their count must fit the head).
        in_channels: input channels (default: read from the stem's weights).
        image_size: side of the square input (default: the parent's, else the architecture's).
        mean: per-channel input mean in ``[0, 1]`` pixels; with ``std``, overrides the checkpoint's
            and the defaults (the parent's, else the layout's: ImageNet statistics for torchvision's
            layouts, raw pixels for RobustBench's).
        std: per-channel input standard deviation.
        arch_kwargs: other architecture options (default: the parent's when the architecture is its).
        parent: the teacher's artifact directory (or loaded :class:`Artifact`): import a student.
        data: the model's task (dataset and classes); needed to audit or evaluate it.
        evaluate: with ``data``, measure the test accuracy (a wrong normalisation shows here).
        overwrite: replace an existing ``out``.

    Returns:
        The written manifest (``role`` teacher or student, ``source``, ``metrics``).

    Raises:
        SafeReuseError: an existing ``out``, an unreadable or unsafe file, keys or a class count that
            do not fit the architecture, data whose images or classes do not fit the model.

    Example:
        >>> import tempfile, pathlib, torch
        >>> from safereuse.models import create_model
        >>> tmp = pathlib.Path(tempfile.mkdtemp())
        >>> torch.save(create_model("smallcnn", num_classes=4).state_dict(), tmp / "w.pth")
        >>> m = import_model(tmp / "w.pth", "smallcnn", out=tmp / "t",
        ...                  data=DataSpec("digits", classes=[0, 1, 2, 3]))
        >>> m["role"], m["num_classes"], m["source"]["layout"], m["metrics"]["n_test"]
        ('teacher', 4, 'safereuse', 176)
    """
    out = check_out(out, overwrite)
    p_art = as_artifact(parent) if parent is not None else None
    imported = import_checkpoint(
        weights,
        arch,
        num_classes=num_classes,
        class_names=class_names,
        in_channels=in_channels,
        image_size=image_size,
        mean=mean,
        std=std,
        arch_kwargs=arch_kwargs,
        parent=p_art,
        data=data,
    )
    names = imported.class_names
    metrics: dict[str, Any] = {}
    if data is not None and evaluate:
        bundle = load_data(data)
        check_input_fits(imported.model, bundle)
        check_task(imported.model, bundle)
        names = names or bundle.class_names
        metrics = test_split_metrics(imported.model, bundle)
    manifest = import_manifest(imported, p_art, data, names, metrics)
    return save_model(imported.model, out, manifest, overwrite=overwrite)

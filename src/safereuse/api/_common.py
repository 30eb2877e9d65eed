"""What every API function shares: the output check, the resume folder, the task a saved model records."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..artifacts import Artifact, load_model
from ..data import DataBundle, DataSpec, load_data, parse_classes
from ..errors import SafeReuseError
from ..methods import check_input_fits
from ..metrics import wilson_interval
from ..train import accuracy_on
from ..utils import config_hash


def partial_dir(out: Path, recipe: dict[str, Any]) -> Path:
    """Where interrupted training keeps its state; keyed by the whole recipe so reruns resume."""
    return out.parent / f".{out.name}.{config_hash(recipe, 10)}.partial"


def check_out(out: str | Path, overwrite: bool) -> Path:
    """``out`` as a Path; an existing one is refused unless ``overwrite`` (checked before any work)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise SafeReuseError(f"output directory {out} already exists", fix="choose a new --out or delete it")
    return out


def as_artifact(model: str | Path | Artifact, device: str = "cpu") -> Artifact:
    """A loaded artifact (``model`` itself when it is one)."""
    return model if isinstance(model, Artifact) else load_model(model, device=device)


def test_split_metrics(model: Any, data: DataBundle) -> dict[str, Any]:
    """``{"test_acc", "n_test", "test_acc_ci"}`` of a model on its data's test split (95 % Wilson)."""
    acc = accuracy_on(model, data.test)
    n = len(data.test)
    return {"test_acc": acc, "n_test": n, "test_acc_ci": list(wilson_interval(round(acc * n), n))}


test_split_metrics.__test__ = False  # type: ignore[attr-defined]  # pytest: not a test


def recorded_data(art: Artifact) -> DataSpec:
    """The data slice an artifact's manifest records (its task)."""
    d = dict(art.manifest.get("data") or {})
    if not d:
        raise SafeReuseError(f"{art.path} records no dataset", fix="pass --data")
    return DataSpec(**d)


def model_data_spec(
    art: Artifact,
    data: str | None = None,
    classes: str | Sequence[int] | None = None,
    data_dir: str | None = None,
) -> DataSpec:
    """The data slice a saved model was made for, or another dataset / class set when given.

    Args:
        art: the loaded model.
        data: another dataset name (all its classes unless ``classes``); None: the model's own slice.
        classes: a class subset (``"0-4"``, ``[1, 3]``) replacing the slice's classes.
        data_dir: folder holding dataset files.

    Returns:
        The :class:`~safereuse.data.DataSpec`.

    Raises:
        SafeReuseError: the model records no dataset and none is given.
    """
    base = dict(art.manifest.get("data") or {})
    name = data or base.get("name")
    if not name:
        raise SafeReuseError(f"{art.path} records no dataset", fix="pass --data")
    spec = DataSpec(**base) if name == base.get("name") else DataSpec(name)
    if classes is not None:
        spec.classes = parse_classes(classes)
    spec.data_dir = data_dir
    return spec


def class_ids(classes: Sequence[int] | None, n: int) -> list[int]:
    """The original class ids of a data slice's labels ``0..n-1``."""
    return list(classes) if classes is not None else list(range(n))


def label_ids(ids: Sequence[int], wanted: Sequence[int]) -> list[int]:
    """Dataset class ids → the model's label ids (a slice relabels its classes ``0..k-1``).

    Args:
        ids: the slice's original class ids in label order (:func:`class_ids`).
        wanted: dataset class ids.

    Raises:
        SafeReuseError: a class the model was not trained on.

    Example:
        >>> label_ids([5, 6, 7], [7, 5])
        [2, 0]
    """
    outside = [c for c in wanted if c not in ids]
    if outside:
        raise SafeReuseError(
            f"target class {outside[0]} is outside the model's classes ({', '.join(map(str, ids))})",
            fix="choose target classes the model was trained on",
        )
    return [list(ids).index(c) for c in wanted]


def load_task(
    model: str | Path | Artifact, data: DataSpec | None = None, device: str = "cpu"
) -> tuple[Artifact, DataBundle]:
    """A saved model and its data (default: the slice its manifest records), checked to match:
    the input kind and shape, and the class count."""
    art = as_artifact(model, device)
    bundle = load_data(data if data is not None else recorded_data(art))
    check_input_fits(art.model, bundle)
    if bundle.num_classes != art.model.num_classes:
        raise SafeReuseError(
            f"the model has {art.model.num_classes} classes but the data slice has {bundle.num_classes}",
            fix="pass the data the model was trained on",
        )
    return art, bundle

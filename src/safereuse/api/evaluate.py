"""Clean test accuracy of a saved model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..artifacts import Artifact, load_model
from ..data import DataSpec, load_data
from ..data.targets import target_problem
from ..errors import SafeReuseError
from ..methods import check_input_fits
from ..metrics import wilson_interval
from ..train import predict
from ._common import class_ids, recorded_data


def evaluate(
    model: str | Path | Artifact, data: DataSpec | None = None, batch_size: int = 512
) -> dict[str, Any]:
    """Clean test accuracy of a saved model.

    Args:
        model: artifact directory or loaded :class:`Artifact`.
        data: dataset slice (default: the one in the model's manifest).
        batch_size: evaluation batch size.

    Returns:
        ``{"acc", "n", "correct", "ci", "data", "model_hash"}`` with a 95 % Wilson interval.

    Example:
        >>> import tempfile, pathlib
        >>> from safereuse.api import train_teacher
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "t"
        >>> _ = train_teacher("smallcnn", DataSpec("digits", classes=[0, 1]), out=out,
        ...                   fit_params={"epochs": 1}, progress=False)
        >>> sorted(evaluate(out))[:3]
        ['acc', 'ci', 'correct']
    """
    art = model if isinstance(model, Artifact) else load_model(model)
    if data is None:
        data = recorded_data(art)
    bundle = load_data(data)
    check_input_fits(art.model, bundle)
    x, y = bundle.test.x, bundle.test.y
    head = art.manifest.get("target_head") or {}
    if head.get("binary") and bundle.num_classes != art.model.num_classes:
        # A binary re-engineered model answers "target vs the others": rebuild that problem (its
        # "others" sample is drawn with a fixed seed, so it is the one the model was scored on).
        ids = class_ids(bundle.spec.classes, bundle.num_classes)
        missing = [c for c in head.get("target_classes", []) if c not in ids]
        if missing or not head.get("target_classes"):
            raise SafeReuseError(
                f"the data slice lacks the model's target class {missing[0] if missing else '?'}",
                fix="evaluate on the data the model was re-engineered from (the default)",
            )
        problem = target_problem(bundle, [ids.index(c) for c in head["target_classes"]], True)
        x, y = problem.test.x, problem.test.y
    elif bundle.num_classes != art.model.num_classes:
        raise SafeReuseError(
            f"the model has {art.model.num_classes} classes but the data slice has {bundle.num_classes}",
            fix="pass --classes matching the model's task",
        )
    pred = predict(art.model, x, batch_size).argmax(1)
    correct = int((pred == y).sum())
    n = len(y)
    return {
        "acc": correct / n if n else float("nan"),
        "n": n,
        "correct": correct,
        "ci": list(wilson_interval(correct, n)),
        "data": data.to_dict(),
        "model_hash": art.hash,
    }

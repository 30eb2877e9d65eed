"""NNSlicer as commands: slice a saved model; detection, class pruning and protection on it.

- :func:`slice_model` — the dynamic slice of a saved model on a data split;
- :func:`detect` — adversarial-input detection from slices vs FeatureMap and EffectivePath
  (:func:`safereuse.applications.evaluation.evaluate_detection`);
- :func:`prune_model` — class-specific pruning of a saved model into a loadable artifact;
- :func:`protect_model` — hide synapses of a saved model, save the shipped model, run the attacker.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..applications.evaluation import DEFAULT_DETECTORS, attack_points, check_detection, evaluate_detection
from ..applications.protect import Protection
from ..applications.prune import ClassPruning, check_ratio, check_target_classes
from ..artifacts import Artifact, Manifest, save_model
from ..data import DataSpec, load_data
from ..device import resolve_device
from ..errors import SafeReuseError
from ..methods import check_input_fits
from ..slicing import Slicer
from ._common import as_artifact, check_out, class_ids, label_ids, load_task, recorded_data


def slice_model(
    model: str | Path | Artifact,
    *,
    out: str | Path,
    data: DataSpec | None = None,
    split: str = "test",
    criterion: str | int | Sequence[int] = "predicted",
    theta: float = 0.3,
    reference: str = "mean",
    limit: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """NNSlicer's dynamic slice of a saved model on a data split (Zhang et al., FSE 2020).

    The neuron means are profiled on the data slice's training split; then every input of
    ``split`` is sliced and the contributions summed (:class:`safereuse.slicing.Slicer`).

    Args:
        model: the model's artifact directory (or a loaded :class:`Artifact`).
        out: the ``.safetensors`` file to write (its summary goes beside it as ``.json``).
        data: the data slice (default: the one the model was trained on).
        split: ``train``, ``val`` or ``test``: the inputs to slice.
        criterion: ``predicted``, ``penultimate``, an output neuron (label index) or a list of them.
        theta: θ ∈ [0, 1).
        reference: ``mean`` (Δ from the profiled mean) or ``zero``.
        limit: slice only the first ``limit`` inputs of the split.
        batch_size: inputs per batch.
        device: ``auto``, ``cpu``, ``cuda``...
        progress: show progress bars.

    Returns:
        The slice's :meth:`~safereuse.slicing.SliceResult.summary` plus ``out``, ``model`` and
        ``split``.
    """
    slicer = Slicer(theta=theta, reference=reference)  # type: ignore[arg-type]
    if split not in ("train", "val", "test"):
        raise SafeReuseError(f"unknown split {split!r}", fix="use train, val or test")
    art = as_artifact(model)
    bundle = load_data(data if data is not None else recorded_data(art))
    check_input_fits(art.model, bundle)
    x = getattr(bundle, split).x
    if limit is not None:
        x = x[:limit]
    net = art.model.to(resolve_device(device))
    slicer.profile(net, bundle.train.x, batch_size=batch_size, progress=progress)
    result = slicer.slice(net, x, criterion=criterion, batch_size=batch_size, progress=progress)
    path = result.save(out)
    return {**result.summary(), "out": str(path), "model": str(art.path), "split": split}


def detect(
    model: str | Path | Artifact,
    attacks: Sequence[str],
    *,
    params: dict[str, Any] | None = None,
    detectors: Sequence[str] | None = None,
    detector_params: dict[str, Any] | None = None,
    data: DataSpec | None = None,
    n_train: int = 10000,
    n_test: int = 500,
    save: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Adversarial-input detection on a saved model: the slice-space k-NN detector, NNSlicer's
    published detector, FeatureMap, EffectivePath and Mahalanobis.

    The attack names (for the model's input kind), their parameters and the detectors are checked
    before the data is loaded or any input is sliced.

    Args:
        model: the model's artifact directory (or a loaded :class:`Artifact`).
        attacks: attack names (``paper``: the paper's list,
            :data:`~safereuse.applications.detect.PAPER_ATTACKS`).
        params: parameters for every named attack (over the paper list's own).
        detectors: detector names (default: :data:`~safereuse.applications.evaluation.DEFAULT_DETECTORS`).
        detector_params: detector parameters (each detector takes the ones it has).
        data: the data slice (default: the model's own).
        n_train: benign training inputs the detectors learn from.
        n_test: benign test inputs (and the sources of the adversarial ones).
        save: a directory to save the fitted detectors in.
        seed: attack and bootstrap seed.
        progress: progress bars.

    Returns:
        What :func:`~safereuse.applications.evaluation.evaluate_detection` returns.
    """
    art = as_artifact(model)
    points = attack_points(attacks, params)
    names = list(detectors or DEFAULT_DETECTORS)
    check_detection(art.model, points, names, detector_params, seed)
    art, bundle = load_task(art, data)
    return evaluate_detection(
        art.model, bundle, attacks=points, detectors=names, detector_params=detector_params,
        n_train=n_train, n_test=n_test, seed=seed, out=save, progress=progress,
    )  # fmt: skip


def prune_model(
    model: str | Path | Artifact,
    target_classes: Sequence[int],
    *,
    out: str | Path,
    ratio: float,
    criterion: str = "nnslicer",
    params: dict[str, Any] | None = None,
    data: DataSpec | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Class-specific pruning of a saved model; the materialised model is saved to ``out``.

    Args:
        model: the model's artifact directory.
        target_classes: dataset class ids to keep serving.
        out: artifact directory to create (``safereuse evaluate`` / ``load_model`` read it).
        ratio: share of each layer's synapses pruned, in (0, 1).
        criterion: ``nnslicer``, ``weight``, ``channel`` or ``effectivepath``.
        params: other :class:`~safereuse.applications.prune.ClassPruning` parameters
            (``finetune_epochs``, ``theta``...).
        data: the data slice (default: the model's own).
        overwrite: replace ``out``.
        progress: progress bars.

    Returns:
        The pruning metrics and ``out``.
    """
    check_ratio(ratio)
    out = check_out(out, overwrite)
    art = as_artifact(model)
    spec = data if data is not None else recorded_data(art)
    labels = check_target_classes(
        label_ids(class_ids(spec.classes, art.model.num_classes), target_classes), art.model.num_classes
    )
    pr = ClassPruning.from_params(criterion, ratio=ratio, **(params or {}))
    art, bundle = load_task(art, spec)
    res = pr.prune(art.model, bundle, labels, progress=progress)
    manifest = Manifest(
        "pruned",
        data=bundle.spec.to_dict(),
        class_names=bundle.class_names,
        parent=art,
        method={"name": "slice-prune", "config": pr.config()},
        metrics=res.metrics,
        extra={"pruning": {"target_classes": list(target_classes), "target_labels": labels}},
    )
    save_model(res.model, out, manifest, overwrite=overwrite)
    return {**res.metrics, "target_classes": list(target_classes), "out": str(out)}


def protect_model(
    model: str | Path | Artifact,
    target_classes: Sequence[int] | None,
    *,
    out: str | Path,
    hide: float,
    criterion: str = "nnslicer",
    params: dict[str, Any] | None = None,
    data: DataSpec | None = None,
    attack: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Hide synapses of a saved model; save the shipped model (hidden mask as extras
    ``protect.hidden.<param>``) to ``out``, then let the attacker retrain the hidden weights.

    Args:
        model: the model's artifact directory.
        target_classes: dataset class ids whose accuracy is protected (None or empty: all).
        out: artifact directory for the shipped model.
        hide: share of each layer's synapses hidden, in (0, 1).
        criterion: ``nnslicer``, ``weight``, ``random`` or ``effectivepath``.
        params: other :class:`~safereuse.applications.protect.Protection` parameters.
        data: the data slice (default: the model's own).
        attack: run the attacker's retraining after saving.
        overwrite: replace ``out``.
        progress: progress bars.

    Returns:
        The protection metrics (original, shipped and recovered accuracy) and ``out``.
    """
    check_ratio(hide, "hide")
    out = check_out(out, overwrite)
    art = as_artifact(model)
    spec = data if data is not None else recorded_data(art)
    labels = None
    if target_classes:
        labels = label_ids(class_ids(spec.classes, art.model.num_classes), target_classes)
    pr = Protection.from_params(criterion, hide=hide, **(params or {}))
    art, bundle = load_task(art, spec)
    res = pr.protect(art.model, bundle, labels)
    manifest = Manifest(
        "protected",
        data=bundle.spec.to_dict(),
        class_names=bundle.class_names,
        parent=art,
        method={"name": "slice-protect", "config": pr.config()},
        metrics=dict(res.metrics),
        extra={
            "protection": {
                "target_classes": list(target_classes or []),
                "target_labels": res.metrics["target_classes"],
            }
        },
    )
    extras = {f"protect.hidden.{k}": v for k, v in res.hidden.items()}
    save_model(res.model, out, manifest, extras, overwrite=overwrite)
    if attack:
        pr.attack(res, bundle, progress=progress)
    return {**res.metrics, "out": str(out)}

"""What the CLI (``safereuse slice detect|prune|protect``) and the runner call: plain values in,
artifacts and JSON-able dicts out.

- :func:`evaluate_detection` — fit every detector on benign training inputs, craft every attack on the
  model from test images it classifies correctly, keep the *successful* adversarial examples only (the
  model's class differs from the label; the others are dropped and counted), and score each detector
  on the benign test images mixed with them (:func:`~safereuse.applications.detect.detection_metrics`);
- :func:`prune_model` — class-specific pruning of a saved model into a loadable artifact;
- :func:`protect_model` — hide synapses of a saved model, save the shipped model, run the attacker.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..artifacts import Artifact, load_model, save_model
from ..data import DataBundle, DataSpec, load_data
from ..errors import SafeReuseError
from .attacks import PAPER_ATTACKS, SLOW_ATTACKS, make_attack
from .detect import SliceDetector, detection_metrics, predicted
from .protect import Protection
from .prune import ClassPruning, check_ratio, check_target_classes

DETECTORS = ("nnslicer", "featuremap", "effectivepath")


def load_task(model: str | Path | Artifact, data: DataSpec | None = None) -> tuple[Artifact, DataBundle]:
    """A saved model and its data (default: the slice its manifest records), checked to match."""
    art = model if isinstance(model, Artifact) else load_model(model)
    if data is None:
        d = dict(art.manifest.get("data") or {})
        if not d:
            raise SafeReuseError(f"{art.path} records no dataset", fix="pass --data")
        data = DataSpec(**d)
    bundle = load_data(data)
    if bundle.num_classes != art.model.num_classes:
        raise SafeReuseError(
            f"the model has {art.model.num_classes} classes but the data slice has {bundle.num_classes}",
            fix="pass the data the model was trained on",
        )
    return art, bundle


def label_ids(bundle: DataBundle, classes: Sequence[int]) -> list[int]:
    """Dataset class ids → the model's label ids (``bundle.spec.classes`` relabels them 0..k-1).

    Raises:
        SafeReuseError: a class the model was not trained on.
    """
    ids = list(bundle.spec.classes) if bundle.spec.classes is not None else list(range(bundle.num_classes))
    out = []
    for c in classes:
        if c not in ids:
            raise SafeReuseError(
                f"target class {c} is not a class of the model (its classes: {', '.join(map(str, ids))})",
                fix="choose target classes the model was trained on",
            )
        out.append(ids.index(c))
    return out


def evaluate_detection(
    model: torch.nn.Module,
    bundle: DataBundle,
    *,
    attacks: Sequence[tuple[str, str, dict[str, Any]]] | None = None,
    detectors: Sequence[str] = DETECTORS,
    detector_params: dict[str, Any] | None = None,
    n_train: int = 10000,
    n_test: int = 500,
    craft_batch: int = 128,
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
    slow_sources: int | None = None,
) -> dict[str, Any]:
    """Fit the detectors, craft the attacks, score every detector on every attack.

    Args:
        model: the model under attack (eval mode; not changed).
        bundle: its data (``train`` fits the detectors, ``test`` is attacked).
        attacks: ``(label, attack name, params)`` (default: :data:`PAPER_ATTACKS`).
        detectors: feature names of :data:`~safereuse.applications.detect.FEATURES`.
        detector_params: :class:`SliceDetector` parameters for every detector.
        n_train: benign training inputs the detectors learn from.
        n_test: test images: the benign set, and the sources of the adversarial ones.
        craft_batch: images per attack call.
        seed: attack and bootstrap seed.
        out: a directory to save the fitted detectors in (``<out>/<detector>/``).
        progress: progress bars.
        slow_sources: craft the slow attacks (:data:`~safereuse.applications.attacks.SLOW_ATTACKS`)
            from only the first ``slow_sources`` correctly classified test images (None: all).

    Returns:
        ``{"detectors": {name: fit info}, "benign": {name: flag rate}, "attacks": [{"attack", "name",
        "params", "n_sources", "n_success", "seconds", "detectors": {name: metrics}}], "rule"}``.
    """
    if slow_sources is not None and slow_sources < 1:
        raise SafeReuseError(f"slow_sources must be >= 1, got {slow_sources}", fix="pass a positive count")
    model = model.cpu().eval()
    attacks = list(PAPER_ATTACKS if attacks is None else attacks)
    x_train = bundle.train.x[:n_train]
    x_test, y_test = bundle.test.x[:n_test], bundle.test.y[:n_test]
    dets: dict[str, SliceDetector] = {}
    result: dict[str, Any] = {"detectors": {}, "benign": {}, "attacks": [],
                              "rule": "adversarial = crafted from a correctly classified test image and "
                                      "misclassified by the model; failed crafts are dropped"}  # fmt: skip
    benign = {}
    for name in detectors:
        det = SliceDetector(name, seed=seed, **(detector_params or {}))
        det.fit(model, x_train, progress=progress)
        t0 = time.perf_counter()
        benign[name] = det.detect(model, x_test)
        per_input = (time.perf_counter() - t0) / max(len(x_test), 1)
        dets[name] = det
        result["detectors"][name] = {**det.info, "config": det.config(), "seconds_per_test_input": per_input}
        result["benign"][name] = float(benign[name].flags.float().mean()) if len(x_test) else None
        if out is not None:
            det.save(Path(out) / name)
    pred = predicted(model, x_test)
    ok = pred == y_test
    src_x, src_y = x_test[ok], y_test[ok]
    from ..defects.attacks import craft_batched

    for label, name, params in attacks:
        atk = make_attack(name, params)
        t0 = time.perf_counter()
        cap = slow_sources if slow_sources is not None and name in SLOW_ATTACKS else len(src_x)
        sx, sy = src_x[:cap], src_y[:cap]
        xa = craft_batched(atk, model, sx, sy, craft_batch, seed=seed)
        success = predicted(model, xa) != sy
        xa = xa[success]
        row: dict[str, Any] = {"attack": label, "name": name, "params": dict(params),
                               "n_sources": len(sx), "n_success": int(success.sum()),
                               "seconds": time.perf_counter() - t0, "detectors": {}}  # fmt: skip
        for dn, det in dets.items():
            row["detectors"][dn] = detection_metrics(benign[dn], det.detect(model, xa), seed=seed)
        result["attacks"].append(row)
    return result


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
        params: other :class:`ClassPruning` parameters (``finetune_epochs``, ``theta``...).
        data: the data slice (default: the model's own).
        overwrite: replace ``out``.
        progress: progress bars.

    Returns:
        The pruning metrics and ``out``.
    """
    check_ratio(ratio)
    if Path(out).exists() and not overwrite:
        raise SafeReuseError(f"output directory {out} already exists", fix="choose a new --out or delete it")
    art, bundle = load_task(model, data)
    labels = check_target_classes(label_ids(bundle, target_classes), bundle.num_classes)
    pr = ClassPruning(criterion, ratio=ratio, **(params or {}))
    res = pr.prune(art.model, bundle, labels, progress=progress)
    manifest = {
        "role": "pruned",
        "data": bundle.spec.to_dict(),
        "class_names": bundle.class_names,
        "parent": {"hash": art.hash, "path": str(art.path), "arch": art.manifest.get("arch")},
        "method": {"name": "slice-prune", "config": pr.config()},
        "pruning": {"target_classes": list(target_classes), "target_labels": labels},
        "metrics": res.metrics,
    }
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

    Returns:
        The protection metrics (original, shipped and recovered accuracy) and ``out``.
    """
    check_ratio(hide, "hide")
    if Path(out).exists() and not overwrite:
        raise SafeReuseError(f"output directory {out} already exists", fix="choose a new --out or delete it")
    art, bundle = load_task(model, data)
    labels = None if not target_classes else label_ids(bundle, target_classes)
    pr = Protection(criterion, hide=hide, **(params or {}))
    res = pr.protect(art.model, bundle, labels)
    manifest = {
        "role": "protected",
        "data": bundle.spec.to_dict(),
        "class_names": bundle.class_names,
        "parent": {"hash": art.hash, "path": str(art.path), "arch": art.manifest.get("arch")},
        "method": {"name": "slice-protect", "config": pr.config()},
        "protection": {
            "target_classes": list(target_classes or []),
            "target_labels": res.metrics["target_classes"],
        },
        "metrics": dict(res.metrics),
    }
    extras = {f"protect.hidden.{k}": v for k, v in res.hidden.items()}
    save_model(res.model, out, manifest, extras, overwrite=overwrite)
    if attack:
        pr.attack(res, bundle, progress=progress)
    return {**res.metrics, "out": str(out)}


__all__ = ["DETECTORS", "evaluate_detection", "label_ids", "load_task", "protect_model", "prune_model"]

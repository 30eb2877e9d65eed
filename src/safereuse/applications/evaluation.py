"""NNSlicer's adversarial-input detection study: fit detectors, craft attacks, score each on each.

:func:`evaluate_detection` fits every detector (:class:`~safereuse.applications.detect.SliceDetector`)
on benign training inputs, crafts every attack on the model from test images it classifies correctly,
keeps the *successful* adversarial examples only (the model's class differs from the label; the others
are dropped and counted), and scores each detector on the benign test images mixed with them
(:func:`~safereuse.applications.detect.detection_metrics`). ``safereuse slice detect``
(:func:`safereuse.api.detect`) and the ``slice-detect`` experiment kind call it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..data import DataBundle
from ..defects.attacks import craft_batched
from ..defects.modality import make_attack
from ..errors import SafeReuseError
from .detect import PAPER_ATTACKS, SLOW_ATTACKS, SliceDetector, detection_metrics, predicted

#: The detectors ``safereuse slice detect`` compares by default (names of
#: :data:`~safereuse.applications.criteria.CRITERIA`).
DETECTORS = ("nnslicer", "featuremap", "effectivepath")


def attack_points(
    names: Sequence[str], params: dict[str, Any] | None = None
) -> list[tuple[str, str, dict[str, Any]]]:
    """``(label, attack name, params)`` for attack names; ``paper`` expands to :data:`PAPER_ATTACKS`.

    Args:
        names: attack names, or ``paper``.
        params: parameters for every attack (over the paper list's own).

    Example:
        >>> attack_points(["fgsm"], {"eps": 0.1})
        [('fgsm', 'fgsm', {'eps': 0.1})]
        >>> len(attack_points(["paper"])) == len(PAPER_ATTACKS)
        True
    """
    out: list[tuple[str, str, dict[str, Any]]] = []
    for a in names:
        if a == "paper":
            out += [(lbl, n, {**p, **(params or {})}) for lbl, n, p in PAPER_ATTACKS]
        else:
            out.append((a, a, dict(params or {})))
    return out


def check_detection(
    model: torch.nn.Module,
    attacks: Sequence[tuple[str, str, dict[str, Any]]],
    detectors: Sequence[str],
    detector_params: dict[str, Any] | None = None,
    seed: int = 0,
) -> tuple[list[Any], dict[str, SliceDetector]]:
    """Build every attack (name, parameters, the model's input kind) and detector, before any work.

    Returns:
        The attacks (in order) and the unfitted detectors by name.

    Raises:
        SafeReuseError: an unknown attack or detector (the list offers the attacks that fit the
            model's input kind), a bad parameter.

    Example:
        >>> from safereuse.models import create_model
        >>> check_detection(create_model("smallcnn", 3), [("x", "nosuch", {})], ["featuremap"])
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        safereuse.errors.SafeReuseError: unknown attack 'nosuch' (fix: use one of: ...
    """
    crafters = [make_attack(name, params, model) for _, name, params in attacks]
    dets = {name: SliceDetector.from_params(name, seed=seed, **(detector_params or {})) for name in detectors}
    return crafters, dets


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
        detectors: criterion names of :data:`~safereuse.applications.criteria.CRITERIA`.
        detector_params: :class:`SliceDetector` parameters for every detector.
        n_train: benign training inputs the detectors learn from.
        n_test: test images: the benign set, and the sources of the adversarial ones.
        craft_batch: images per attack call.
        seed: attack and bootstrap seed.
        out: a directory to save the fitted detectors in (``<out>/<detector>/``).
        progress: progress bars.
        slow_sources: craft the slow attacks (:data:`~safereuse.applications.detect.SLOW_ATTACKS`)
            from only the first ``slow_sources`` correctly classified test images (None: all).

    Returns:
        ``{"detectors": {name: fit info}, "benign": {name: flag rate}, "attacks": [{"attack", "name",
        "params", "n_sources", "n_success", "seconds", "detectors": {name: metrics}}], "rule"}``.
    """
    if slow_sources is not None and slow_sources < 1:
        raise SafeReuseError(f"slow_sources must be >= 1, got {slow_sources}", fix="pass a positive count")
    model = model.cpu().eval()
    # every attack and detector is built (names, parameters, input kind checked) before any work
    attacks = list(PAPER_ATTACKS if attacks is None else attacks)
    crafters, dets = check_detection(model, attacks, detectors, detector_params, seed)
    x_train = bundle.train.x[:n_train]
    x_test, y_test = bundle.test.x[:n_test], bundle.test.y[:n_test]
    result: dict[str, Any] = {"detectors": {}, "benign": {}, "attacks": [],
                              "rule": "adversarial = crafted from a correctly classified test image and "
                                      "misclassified by the model; failed crafts are dropped"}  # fmt: skip
    benign = {}
    for name, det in dets.items():
        det.fit(model, x_train, progress=progress)
        t0 = time.perf_counter()
        benign[name] = det.detect(model, x_test)
        per_input = (time.perf_counter() - t0) / max(len(x_test), 1)
        result["detectors"][name] = {**det.info, "config": det.config(), "seconds_per_test_input": per_input}
        result["benign"][name] = float(benign[name].flags.float().mean()) if len(x_test) else None
        if out is not None:
            det.save(Path(out) / name)
    pred = predicted(model, x_test)
    ok = pred == y_test
    src_x, src_y = x_test[ok], y_test[ok]
    for (label, name, params), atk in zip(attacks, crafters, strict=True):
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


__all__ = ["DETECTORS", "attack_points", "check_detection", "evaluate_detection"]

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
from ..defects.modality import make_attack
from ..errors import SafeReuseError
from .detect import (
    PAPER_ATTACKS,
    SLOW_ATTACKS,
    Detection,
    detection_metrics,
    make_detectors,
    successful_adversarial,
)
from .pathsim import QiuPath
from .scored import SliceKNN

#: The detectors ``safereuse slice detect`` and the ``slice-detect`` experiment compare by default
#: (names of :data:`~safereuse.applications.detect.DETECTORS`): the default detector first, chosen on
#: validation data (``docs/results/nnslicer-applications.md``), then the paper's detector and its
#: baselines as published (EffectivePath's detector is trained on FGSM examples too), then Lee et
#: al.'s Mahalanobis detector.
DEFAULT_DETECTORS: tuple[str, ...] = (SliceKNN.name, "nnslicer", "featuremap", QiuPath.name, "mahalanobis")


def balanced(benign: Detection, adversarial: Detection, seed: int = 0) -> tuple[Detection, Detection]:
    """The two detections cut to the same size: the larger one subsampled without replacement
    (seeded), so precision is that of a 1 : 1 mix, as detection papers report it.

    Example:
        >>> from safereuse.applications.detect import Detection
        >>> b = Detection.decide(torch.tensor([[0.9, 0.1]] * 6), torch.zeros(6, dtype=torch.long))
        >>> a = Detection.decide(torch.tensor([[0.2, 0.8]] * 2), torch.zeros(2, dtype=torch.long))
        >>> [len(d.flags) for d in balanced(b, a)]
        [2, 2]
    """
    n = min(len(benign.flags), len(adversarial.flags))
    if n == 0:  # nothing to compare (e.g. no attack succeeded): the counts say so as they are
        return benign, adversarial
    g = torch.Generator().manual_seed(seed)

    def cut(d: Detection) -> Detection:
        if len(d.flags) == n:
            return d
        idx = torch.randperm(len(d.flags), generator=g)[:n]
        return Detection(d.flags[idx], d.scores[idx], d.tree_class[idx], d.model_class[idx])

    return cut(benign), cut(adversarial)


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
) -> tuple[list[Any], dict[str, Any]]:
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
    dets = make_detectors(detectors, detector_params, seed)
    return crafters, dets


def evaluate_detection(
    model: torch.nn.Module,
    bundle: DataBundle,
    *,
    attacks: Sequence[tuple[str, str, dict[str, Any]]] | None = None,
    detectors: Sequence[str] = DEFAULT_DETECTORS,
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
        detectors: names of :data:`~safereuse.applications.detect.DETECTORS`.
        detector_params: detector parameters (each detector takes the ones it has).
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
                                      "misclassified by the model; failed crafts are dropped; each attack "
                                      "is scored on balanced sets (the larger of the benign and adversarial "
                                      "sets subsampled, seeded, to the smaller's size)"}  # fmt: skip
    benign = {}
    for name, det in dets.items():
        det.fit(model, x_train, labels=bundle.train.y[:n_train], progress=progress)
        t0 = time.perf_counter()
        benign[name] = det.detect(model, x_test)
        per_input = (time.perf_counter() - t0) / max(len(x_test), 1)
        result["detectors"][name] = {"trained_on": det.trained_on, **det.info, "config": det.config(),
                                     "seconds_per_test_input": per_input}  # fmt: skip
        result["benign"][name] = float(benign[name].flags.float().mean()) if len(x_test) else None
        if out is not None:
            det.save(Path(out) / name)
    for (label, name, params), atk in zip(attacks, crafters, strict=True):
        t0 = time.perf_counter()
        cap = slow_sources if name in SLOW_ATTACKS else None
        xa, _, n_sources = successful_adversarial(
            atk, model, x_test, y_test, limit=cap, batch_size=craft_batch, seed=seed
        )
        row: dict[str, Any] = {"attack": label, "name": name, "params": dict(params),
                               "n_sources": n_sources, "n_success": len(xa),
                               "seconds": time.perf_counter() - t0, "detectors": {}}  # fmt: skip
        for dn, det in dets.items():
            row["detectors"][dn] = detection_metrics(
                *balanced(benign[dn], det.detect(model, xa), seed), seed=seed
            )
        result["attacks"].append(row)
    return result


__all__ = ["DEFAULT_DETECTORS", "attack_points", "balanced", "check_detection", "evaluate_detection"]

"""NNSlicer's three applications (Zhang et al., ESEC/FSE 2020; spec ``nnslicer.md``, "Applications").

- :mod:`.criteria` — the registered criteria (:data:`CRITERIA`: nnslicer, effectivepath, featuremap,
  weight, channel, random), objects with their own parameters, that the three applications take;
- :mod:`.detect` — adversarial-input detection: the registry :data:`DETECTORS`, the paper's
  :class:`SliceDetector` (a criterion's vectors, via :mod:`.features`, → a decision tree stored as
  arrays, :mod:`.tree`), :func:`detection_metrics`; :mod:`.scored` — the detectors that score inputs
  against benign statistics (:class:`SliceKNN`, the default; :class:`Mahalanobis`);
- :mod:`.pathsim` — EffectivePath's path-similarity detector as Qiu et al. describe it (:class:`QiuPath`);
- :mod:`.prune` — class-specific pruning: :class:`ClassPruning` (materialised with Torch-Pruning);
- :mod:`.protect` — model protection: :class:`Protection` (hide, then the attacker's retraining);
- :mod:`.synapses` — the synapse scores the criteria compute and per-layer selection;
- :mod:`.evaluation` — the detection study (:func:`evaluate_detection`; ``safereuse slice detect`` calls
  it through :func:`safereuse.api.detect`, ``prune`` / ``protect`` go through :mod:`safereuse.api.slice`);
- :mod:`.experiments` — the runner's ``experiment:`` kinds (``slice-detect``, ``slice-prune``,
  ``slice-protect``) and their report sections.
"""

from __future__ import annotations

from . import experiments  # noqa: F401  (registers the runner's slice-* experiment kinds)
from .criteria import CRITERIA, Criterion, make_criterion
from .detect import DETECTORS, Detection, SliceDetector, detection_metrics, load_detector, make_detector
from .pathsim import QiuPath  # (importing it registers the effectivepath detector)
from .protect import Protection, ProtectResult
from .prune import ClassPruning, PruneResult
from .scored import Mahalanobis, ScoreDetector, SliceKNN
from .synapses import select_synapses

__all__ = [
    "CRITERIA",
    "DETECTORS",
    "Mahalanobis",
    "ScoreDetector",
    "SliceKNN",
    "load_detector",
    "make_detector",
    "ClassPruning",
    "Criterion",
    "Detection",
    "ProtectResult",
    "Protection",
    "PruneResult",
    "QiuPath",
    "SliceDetector",
    "detection_metrics",
    "make_criterion",
    "select_synapses",
]

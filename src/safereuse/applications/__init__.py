"""NNSlicer's three applications (Zhang et al., ESEC/FSE 2020; spec ``nnslicer.md``, "Applications").

- :mod:`.criteria` — the registered criteria (:data:`CRITERIA`: nnslicer, effectivepath, featuremap,
  weight, channel, random), objects with their own parameters, that the three applications take;
- :mod:`.detect` — adversarial-input detection: :class:`SliceDetector` (a criterion's vectors, via
  :mod:`.features`, → a decision tree stored as arrays, :mod:`.tree`), :func:`detection_metrics`;
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
from .detect import Detection, SliceDetector, detection_metrics
from .protect import Protection, ProtectResult
from .prune import ClassPruning, PruneResult
from .synapses import select_synapses

__all__ = [
    "CRITERIA",
    "ClassPruning",
    "Criterion",
    "Detection",
    "ProtectResult",
    "Protection",
    "PruneResult",
    "SliceDetector",
    "detection_metrics",
    "make_criterion",
    "select_synapses",
]

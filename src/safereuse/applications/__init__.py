"""NNSlicer's three applications (Zhang et al., ESEC/FSE 2020; spec ``nnslicer.md``, "Applications").

- :mod:`.detect` — adversarial-input detection: :class:`SliceDetector` (``nnslicer`` / ``featuremap`` /
  ``effectivepath`` vectors → a decision tree stored as arrays, :mod:`.tree`), :func:`detection_metrics`;
- :mod:`.prune` — class-specific pruning: :class:`ClassPruning` (materialised with Torch-Pruning);
- :mod:`.protect` — model protection: :class:`Protection` (hide, then the attacker's retraining);
- :mod:`.synapses` — the synapse scores they share (:data:`SCORES`: nnslicer, effectivepath, weight,
  channel, random) and per-layer selection;
- :mod:`.attacks` — the detection study's extra attacks (JSMA, boundary, spatial, pixel via ART;
  DeepFool-L∞, Gaussian noise / blur);
- :mod:`.tasks` — what ``safereuse slice detect|prune|protect`` calls;
- :mod:`.experiments` — the runner's ``experiment:`` kinds (``slice-detect``, ``slice-prune``,
  ``slice-protect``) and their report sections.
"""

from __future__ import annotations

from .detect import FEATURES, Detection, SliceDetector, detection_metrics
from .protect import Protection, ProtectResult
from .prune import ClassPruning, PruneResult
from .synapses import SCORES, select_synapses, synapse_scores

__all__ = [
    "FEATURES",
    "SCORES",
    "ClassPruning",
    "Detection",
    "ProtectResult",
    "Protection",
    "PruneResult",
    "SliceDetector",
    "detection_metrics",
    "select_synapses",
    "synapse_scores",
]

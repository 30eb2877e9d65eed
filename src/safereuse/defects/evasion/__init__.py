"""Evasion attacks and natural corruptions beyond the audit's core set, one small file each.

They began as the extra attacks of NNSlicer's detection study (spec ``nnslicer.md``, "Applications"
1, 17 attacks) and are ordinary defects of :data:`~safereuse.defects.DEFECTS`, so the audit runs them
as well (white-box: crafted on the model under evaluation; DIR and *Rob*):

- ``jsma`` (:mod:`.jsma`) — Jacobian saliency map (Papernot et al., EuroS&P 2016), ART;
- ``boundary`` (:mod:`.boundary`) — decision-based boundary attack (Brendel et al., ICLR 2018), ART;
- ``spatial`` (:mod:`.spatial`) — rotation + translation search (Engstrom et al., ICML 2019), ART;
- ``pixel`` (:mod:`.pixel`) — few-pixel differential evolution (Su et al., 2019), ART;
- ``deepfool-linf`` (:mod:`.deepfool_linf`) — DeepFool's L∞ form (Moosavi-Dezfooli et al., CVPR 2016,
  §3.3), ours, batched;
- ``gaussian-noise`` / ``gaussian-blur`` (:mod:`.noise`, :mod:`.blur`) — natural corruptions
  (:class:`~.corruption.Corruption`: they may also fix a wrong prediction, so they are not attacks).

All take images (``input_kind = "image"``). Importing this package registers them.
"""

from __future__ import annotations

from .blur import GaussianBlur
from .boundary import Boundary
from .corruption import Corruption
from .deepfool_linf import DeepFoolLinf
from .jsma import JSMA
from .noise import GaussianNoise
from .pixel import Pixel
from .spatial import Spatial

__all__ = [
    "JSMA",
    "Boundary",
    "Corruption",
    "DeepFoolLinf",
    "GaussianBlur",
    "GaussianNoise",
    "Pixel",
    "Spatial",
]

"""Backdoor defects: planted in the teacher while it is trained, probed on its students.

Four attacks, all :class:`Backdoor` subclasses (``planted_in_teacher``, report label
``kind = "backdoor"``) registered in :data:`~safereuse.defects.DEFECTS`, one file each:

========================  ==========================================================================
``badnets``               patch trigger, poisoned samples relabelled to the target (Gu et al. 2017)
``blend``                 full-image random pattern blended with weight α (Chen et al. 2017)
``latent``                trigger matched to the target's *representation*, target class removed from
                          the published head; fires once a student adds that class (Yao et al. 2019)
``weight-poison``         RIPPLe: poisoning loss + restricted inner product with a proxy fine-tuning
                          gradient, so the backdoor survives fine-tuning (Kurita et al. 2020)
========================  ==========================================================================

Every trigger is a pair of pixel-space tensors ``trigger`` and ``mask`` (both ``[C, H, W]``) applied as
``x' = clamp((1 − mask)·x + mask·trigger, 0, 1)``: a binary mask pastes a patch, a constant mask
``α`` blends a full image. The pair is saved in the teacher's ``extras.safetensors`` under
``backdoor.trigger`` / ``backdoor.mask`` and the JSON record under ``manifest["backdoor"]``;
:func:`backdoor_from_artifact` rebuilds the attack from them. The shared base and trigger helpers
are in :mod:`.base`.

The target is given as an **original dataset class id** (``target``), so it can be mapped into any
student's label space; ``None`` means the first class of the teacher's task.

Defaults are scaled to 28 px grey images in ``[0, 1]`` (Fashion-MNIST, digits).

Example:
    >>> import torch
    >>> bd = BadNets(size=3)
    >>> x = torch.zeros(2, 1, 28, 28)
    >>> y = bd.apply(x)
    >>> float(y[0, 0, -3:, -3:].sum()), float(y[0, 0, :-3].sum())   # 5 white squares of 9
    (5.0, 0.0)
"""

from __future__ import annotations

from .badnets import BadNets
from .base import (
    MASK_KEY,
    PATTERNS,
    POSITIONS,
    TRIGGER_KEY,
    Backdoor,
    backdoor_from_artifact,
    backdoor_from_record,
)
from .blend import Blend
from .latent import LatentBackdoor
from .weight_poison import WeightPoison

__all__ = [
    "MASK_KEY",
    "PATTERNS",
    "POSITIONS",
    "TRIGGER_KEY",
    "Backdoor",
    "BadNets",
    "Blend",
    "LatentBackdoor",
    "WeightPoison",
    "backdoor_from_artifact",
    "backdoor_from_record",
]

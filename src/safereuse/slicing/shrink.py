"""SeaM's smaller model: materialise a re-engineered model's channel masks and restack its head.

SeaM (Qi et al., "Reusing Deep Neural Network Models through Model Re-engineering", ICSE 2023; spec
``seam.md``) re-engineers a model for a target problem as ``Linear(ReLU(inner(x)))``
(:class:`~safereuse.models.stacked.TargetHeadModel`) with masks on the inner model's weights. With
channel masks the inner model can shrink for real: :func:`shrink_target_model` removes the channels the
masks switch off (:func:`~safereuse.slicing.materialize.materialize`, Torch-Pruning) and puts the same
trained head back on top, so the result is a smaller dense model with the masked model's outputs.
"""

from __future__ import annotations

import torch

from ..models.stacked import TargetHeadModel
from .masks import Masks
from .materialize import materialize


def shrink_target_model(model: TargetHeadModel, masks: Masks, example_input: torch.Tensor) -> TargetHeadModel:
    """The re-engineered model with its masked-off channels removed and its head restacked.

    Args:
        model: SeaM's re-engineered model (inner model under the masks, trained target head).
        masks: the inner model's channel masks (``param name → bool mask``), as SeaM returns them.
        example_input: one input batch on the CPU (traces the dependency graph).

    Returns:
        A new :class:`TargetHeadModel` in eval mode: the materialised inner model (it carries its
        pruning record for :func:`safereuse.artifacts.save_model`) under a copy of ``model``'s head.
        ``model`` is not changed.

    Example:
        >>> from safereuse.models import create_model
        >>> m = TargetHeadModel(create_model("smallcnn", num_classes=5), 2).eval()
        >>> x = torch.rand(1, 1, 28, 28)
        >>> masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in m.inner.named_parameters()
        ...          if p.dim() > 1}
        >>> small = shrink_target_model(m, masks, x)
        >>> torch.allclose(small(x), m(x), atol=1e-5), small.num_classes
        (True, 2)
    """
    inner = materialize(model.inner, masks, example_input)
    result = TargetHeadModel(inner, model.num_classes)
    result.target_head.load_state_dict(model.target_head.state_dict())
    return result.eval()


__all__ = ["shrink_target_model"]

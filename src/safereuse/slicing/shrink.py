"""SeaM's smaller model: materialise a re-engineered model's channel masks and restack its head.

SeaM (Qi et al., "Reusing Deep Neural Network Models through Model Re-engineering", ICSE 2023; spec
``seam.md``) re-engineers a model for a target problem as ``Linear(ReLU(inner(x)))``
(:class:`~safereuse.models.stacked.TargetHeadModel`) with masks on the inner model's weights. With
channel masks the inner model can shrink for real: :func:`shrink_target_model` removes the channels the
masks switch off (:func:`~safereuse.slicing.materialize.materialize`, Torch-Pruning) and puts the same
trained head back on top, so the result is a smaller dense model with the masked model's outputs.
:func:`channels_removed` reports what went, layer by layer.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.rebuild import PRUNABLE, head_of
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


def channels_removed(original: nn.Module, reduced: nn.Module) -> dict[str, dict[str, int]]:
    """Output channels each Conv / Linear layer lost between ``original`` and its materialised copy.

    The model's own ``head`` (its outputs are the classes, never removed) is left out.

    Args:
        original: the model before materialisation.
        reduced: the materialised model (same module names).

    Returns:
        ``{layer: {"removed": r, "of": n}}`` for every Conv / Linear layer, in model order.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> small = materialize(net, {"0.weight": torch.tensor([[True] * 3] * 3 + [[False] * 3])},
        ...                     torch.zeros(1, 3))
        >>> channels_removed(net, small)
        {'0': {'removed': 1, 'of': 4}, '2': {'removed': 0, 'of': 2}}
    """
    after = dict(reduced.named_modules())
    head = head_of(original)
    out: dict[str, dict[str, int]] = {}
    for name, m in original.named_modules():
        if not isinstance(m, PRUNABLE) or m is head or name not in after:
            continue
        n = int(m.weight.shape[0])
        out[name] = {"removed": n - int(after[name].weight.shape[0]), "of": n}
    return out


def removed_fraction(per_layer: dict[str, dict[str, int]]) -> float:
    """The fraction of all those output channels removed (0.0 when there is none).

    Example:
        >>> removed_fraction({"a": {"removed": 1, "of": 4}, "b": {"removed": 0, "of": 4}})
        0.125
    """
    total = sum(v["of"] for v in per_layer.values())
    return sum(v["removed"] for v in per_layer.values()) / total if total else 0.0


__all__ = ["channels_removed", "removed_fraction", "shrink_target_model"]

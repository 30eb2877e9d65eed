"""A model with a small head stacked on its logits (SeaM's re-engineered model for a target problem).

SeaM (Qi et al., ICSE 2023; spec ``shared/specs/seam.md``) reuses a model for a target problem by
putting ``ReLU → Linear(C_orig → C_target)`` on top of the original logits. :class:`TargetHeadModel`
is that model behind the model contract: ``features(x)`` is ``ReLU(inner(x))`` (the penultimate
representation the audit attacks), ``head`` the new Linear, so the audit, the runner and the
transfer methods treat it like any other model. Artifacts store the inner model as usual plus the
head in extras (:data:`HEAD_PREFIX`) and ``manifest["target_head"]``; :func:`stack_from_extras`
rebuilds it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..device import model_device
from .contract import ReusableModel

HEAD_PREFIX = "seam.target_head."
"""Extras key prefix of the stacked head's parameters (``seam.target_head.weight`` / ``.bias``)."""


class TargetHeadModel(ReusableModel):
    """``Linear(ReLU(inner(x)))``: a contract model over another one's logits.

    Args:
        inner: the (re-engineered) model; it normalises its own input.
        num_classes: classes of the target problem.

    Example:
        >>> from safereuse.models import create_model
        >>> m = TargetHeadModel(create_model("smallcnn", num_classes=5), 2)
        >>> x = torch.rand(3, 1, 28, 28)
        >>> m(x).shape, m.features(x).shape, m.num_classes, m.feature_dim
        (torch.Size([3, 2]), torch.Size([3, 5]), 2, 5)
    """

    head_name = "target_head"

    def __init__(self, inner: ReusableModel, num_classes: int) -> None:
        super().__init__(inner.input_spec)
        self.inner = inner
        self.target_head = nn.Linear(inner.num_classes, num_classes)
        # no architecture record of its own: save the inner model plus head_tensors() (what
        # ``safereuse reengineer`` does); save_model refuses the wrapper itself
        self.info = None

    def set_normalization(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.inner.set_normalization(mean, std)
        super().set_normalization(mean, std)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.inner(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - features is overridden
        raise NotImplementedError("TargetHeadModel.features runs the inner model on pixel-space input")

    def block_names(self) -> list[str]:
        return [f"inner.{b}" for b in self.inner.block_names()] + [self.head_name]

    def head_tensors(self) -> dict[str, torch.Tensor]:
        """The stacked head's parameters under :data:`HEAD_PREFIX` (for an artifact's extras)."""
        return {HEAD_PREFIX + k: v.detach().cpu() for k, v in self.target_head.state_dict().items()}


def stack_from_extras(
    inner: ReusableModel, extras: dict[str, torch.Tensor], record: dict[str, Any]
) -> TargetHeadModel:
    """Rebuild a :class:`TargetHeadModel` from an artifact's inner model, extras and
    ``manifest["target_head"]`` (``{"num_classes": k, ...}``).

    Example:
        >>> from safereuse.models import create_model
        >>> m = TargetHeadModel(create_model("smallcnn", num_classes=5), 2)
        >>> again = stack_from_extras(m.inner, m.head_tensors(), {"num_classes": 2})
        >>> torch.equal(again.target_head.weight, m.target_head.weight)
        True
    """
    model = TargetHeadModel(inner, int(record["num_classes"]))
    state = {k[len(HEAD_PREFIX) :]: v for k, v in extras.items() if k.startswith(HEAD_PREFIX)}
    model.target_head.load_state_dict(state)
    return model.to(model_device(inner))

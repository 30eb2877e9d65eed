"""How an input becomes a detector's vector: the feature extractors behind the detection criteria.

A :class:`Features` object is what :meth:`Criterion.features()
<safereuse.applications.criteria.Criterion.features>` returns: ``prepare`` once on the benign
training inputs, then ``__call__`` per batch; ``state``/``load_state`` carry what ``prepare`` learnt
(tensors only, saved with the detector).

- :class:`SliceFeatures` — every synapse contribution of the input's slice (NNSlicer), reference =
  the profiled mean of the benign inputs, output layer left out (:func:`body_vector`);
- :class:`PathFeatures` — the binary critical path of the input (EffectivePath, Qiu et al. 2019);
- :class:`FeatureMapFeatures` — the mean activation of every channel / unit of every weighted layer
  but the last (its outputs are the logits, which spell out the model's class).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..device import model_device
from ..slicing import Slicer, capture
from ..slicing.effective_path import effective_paths
from ..utils import analysis_mode
from .synapses import weighted_layers


class Features:
    """How an input becomes the tree's vector (see the module docstring)."""

    def prepare(self, model: nn.Module, x: torch.Tensor, batch_size: int) -> None:  # noqa: B027
        """Learn what the extractor needs from the benign training inputs (default: nothing)."""

    def __call__(self, model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - abstract

    def state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:  # noqa: B027
        """Restore :meth:`state`."""


def body_vector(r: Any) -> torch.Tensor:
    """The synapse contributions of every layer but the output layer, flattened ``[N, D]``.

    With the predicted class ``k`` as the criterion only row ``k`` of the output layer is non-zero, so
    its synapses spell out the criterion: a tree would read the model's class back from them and
    never disagree with the model. They are left out.
    """
    layers = r.layers[:-1] if len(r.layers) > 1 else r.layers
    return torch.cat([r.synapse[k].flatten(1).float() for k in layers], dim=1).cpu()


class SliceFeatures(Features):
    """All synapse contributions of each input's slice, criterion = its predicted class.

    Args:
        theta: the slicer's θ.
    """

    def __init__(self, theta: float = 0.3) -> None:
        self.theta = theta
        self.means: dict[str, torch.Tensor] = {}

    def _slicer(self) -> Slicer:
        return Slicer(theta=self.theta, reference="mean")

    def prepare(self, model: nn.Module, x: torch.Tensor, batch_size: int) -> None:
        s = self._slicer().profile(model, x, batch_size=batch_size)
        self.means = {k: v.detach().cpu() for k, v in s.means.items()}

    def __call__(self, model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        s = self._slicer()
        s.means = {k: v.to(model_device(model)) for k, v in self.means.items()}
        r = s.slice(model, x, criterion="predicted", per_input=True, batch_size=batch_size)
        return body_vector(r)

    def state(self) -> dict[str, torch.Tensor]:
        return {f"means.{k}": v for k, v in self.means.items()}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.means = {k[len("means.") :]: v for k, v in tensors.items() if k.startswith("means.")}


class PathFeatures(Features):
    """The binary critical path of each input (synapse on the path = 1).

    Args:
        path_share: EffectivePath's share of a neuron's value.
    """

    def __init__(self, path_share: float = 0.5) -> None:
        self.path_share = path_share

    def __call__(self, model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        r = effective_paths(model, x, share=self.path_share, per_input=True, batch_size=batch_size)
        return (body_vector(r) != 0).float()


class FeatureMapFeatures(Features):
    """Mean activation of every channel (conv) / unit (linear) of every weighted layer but the last.

    The last layer's outputs are the logits: with them the tree reads the model's class and never
    disagrees with the model (the reason the slices leave the output layer out too).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> FeatureMapFeatures()(net, torch.zeros(5, 4), 2).shape
        torch.Size([5, 3])
    """

    def __call__(self, model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        every = weighted_layers(model, include_head=True)
        layers = every[:-1] if len(every) > 1 else every
        dev = model_device(model)
        out = []

        def reduce(t: torch.Tensor) -> torch.Tensor:
            return t.flatten(2).mean(2) if t.dim() > 2 else t

        with analysis_mode(model), capture(model, layers, reduce=reduce) as cap:
            for i in range(0, len(x), batch_size):
                cap.clear()
                model(x[i : i + batch_size].to(dev))
                out.append(torch.cat([v.float().cpu() for v in cap.outputs()], 1))
        return torch.cat(out) if out else torch.empty(0, 0)


__all__ = ["FeatureMapFeatures", "Features", "PathFeatures", "SliceFeatures", "body_vector"]

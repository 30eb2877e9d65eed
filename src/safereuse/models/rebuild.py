"""Rebuilding a model: the pruned-channel record and a freshly initialised copy of an architecture.

A materialised model (:func:`safereuse.slicing.materialize`) carries its pruning record
(:data:`PRUNED_ATTR`): the root layer and the removed indices of each group, in order.
:func:`prune_channels` replays such a record on a freshly built model of the same architecture,
which is how :func:`safereuse.artifacts.load_model` rebuilds a pruned artifact (never a pickle) and
how :func:`fresh_state` re-initialises a pruned model. :class:`PruneGraph` wraps Torch-Pruning's
dependency graph (Fang et al., "DepGraph", CVPR 2023), shared with the materialisation itself.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..errors import SafeReuseError
from ..utils import config_hash, preserve_modes, seed_everything
from .factory import create_model, untrained_kwargs

PRUNED_ATTR = "pruned_channels"
"""Attribute of a materialised model: list of ``[root layer name, removed output indices]``."""

PruneRecord = list[tuple[str, list[int]]]
"""Ordered pruning steps: the root conv / linear of a group and the output channels it loses."""

PRUNABLE = (nn.modules.conv._ConvNd, nn.Linear)
"""The layer types whose output channels can be removed."""


def is_depthwise(m: nn.Module) -> bool:
    """A depthwise conv (one filter per input channel): its channels are produced, not consumed.

    Example:
        >>> is_depthwise(nn.Conv2d(4, 4, 3, groups=4)), is_depthwise(nn.Conv2d(4, 4, 3))
        (True, False)
    """
    return isinstance(m, nn.modules.conv._ConvNd) and m.groups == m.out_channels and m.groups > 1


def head_of(model: nn.Module) -> nn.Module | None:
    """The model's ``head`` module when it has one (its outputs, the classes, are never removed).

    Example:
        >>> head_of(create_model("smallcnn", num_classes=3)), head_of(nn.Linear(2, 2))
        (Linear(in_features=64, out_features=3, bias=True), None)
    """
    try:
        head = getattr(model, "head", None)
    except (AttributeError, KeyError):
        return None
    return head if isinstance(head, nn.Module) else None


class PruneGraph:
    """Torch-Pruning's dependency graph of ``model`` (traced in eval mode; training flags restored)."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor) -> None:
        import torch_pruning as tp  # third-party, heavy: only pruning needs it

        self.model = model
        self.names = {m: n for n, m in model.named_modules()}
        with preserve_modes(model), torch.enable_grad():  # the trace may switch modes: flags come back
            self.dg = tp.DependencyGraph().build_dependency(model, example_input[:1], verbose=False)
        self.head = head_of(model)

    def groups(self) -> list[Any]:
        ignored = [self.head] if self.head is not None else []
        return list(self.dg.get_all_groups(ignored_layers=ignored, root_module_types=PRUNABLE))

    def roles(self, group: Any) -> list[tuple[str, str, nn.Module, list[int], list[int]]]:
        """``(role, module name, module, idxs, root idxs)`` of the conv / linear / BN members:
        role ``out`` (producer rows, BN entries, depthwise convs) or ``in`` (consumer columns)."""
        out = []
        for item in group.items:
            m = item.dep.target.module
            if not isinstance(m, nn.Module) or m not in self.names:
                continue  # element-wise ops, reshapes: no parameters
            handler = item.dep.handler
            if self.dg.is_out_channel_pruning_fn(handler):
                role = "out"
            elif self.dg.is_in_channel_pruning_fn(handler):
                role = "in"
            else:  # pragma: no cover - every registered pruner is one or the other
                continue
            if role == "in" and is_depthwise(m):
                role = "out"
            out.append((role, self.names[m], m, list(item.idxs), list(item.root_idxs)))
        return out

    def prune(self, record: PruneRecord) -> None:
        for name, idxs in record:
            m = self.model.get_submodule(name)
            pruner = self.dg.get_pruner_of_module(m)
            self.dg.get_pruning_group(m, pruner.prune_out_channels, list(idxs)).prune(record_history=False)


def prune_channels(model: nn.Module, record: Any, example_input: torch.Tensor) -> None:
    """Replay a pruning record (:data:`PRUNED_ATTR` of a materialised model) on ``model``, in place.

    Used to rebuild a pruned artifact: build the architecture, replay its record, load the weights.

    Args:
        model: a freshly built model of the architecture the record was made on.
        record: ``[[layer name, [removed output indices]], ...]`` (lists or tuples, e.g. from JSON).
        example_input: an input batch for the trace.

    Raises:
        SafeReuseError: a record that does not fit the model (unknown or non-conv/linear layer,
            indices out of range or repeated, a layer left without channels).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> prune_channels(net, [["0", [1, 3]]], torch.zeros(1, 3))
        >>> net[0].out_features, net[2].in_features
        (2, 2)
    """
    steps = _parse_record(record)
    graph = PruneGraph(model, example_input)
    for name, idxs in steps:
        try:
            m = model.get_submodule(name)
        except AttributeError:
            m = None
        size = getattr(m, "out_channels", getattr(m, "out_features", None))
        if not isinstance(m, PRUNABLE) or m not in graph.dg.module2node or size is None:
            raise SafeReuseError(
                f"pruning record names {name!r}, which is no conv / linear layer of {type(model).__name__}",
                fix="re-create the artifact from the model it was materialised from",
            )
        if min(idxs) < 0 or max(idxs) >= size or len(idxs) >= size:
            raise SafeReuseError(
                f"pruning record removes channels {idxs[:4]}… of {name!r}, which has {size}",
                fix="re-create the artifact from the model it was materialised from",
            )
        graph.prune([(name, idxs)])
    setattr(model, PRUNED_ATTR, steps)


def _parse_record(record: Any) -> PruneRecord:
    bad = SafeReuseError(
        "the pruning record is corrupt (expected [[layer name, [channel indices]], ...])",
        fix="re-create the artifact from the model it was materialised from",
    )
    if not isinstance(record, (list, tuple)):
        raise bad
    steps: PruneRecord = []
    for step in record:
        if not isinstance(step, (list, tuple)) or len(step) != 2 or not isinstance(step[0], str):
            raise bad
        idxs = step[1]
        if (
            not isinstance(idxs, (list, tuple))
            or not idxs
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in idxs)
            or len(set(idxs)) != len(idxs)
        ):
            raise bad
        steps.append((step[0], [int(i) for i in idxs]))
    return steps


def fresh_state(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Parameters and buffers of a freshly initialised model of the same architecture (on the CPU).

    Built with :func:`~safereuse.models.create_model` when the model records its architecture
    (``model.info``), else by calling every submodule's ``reset_parameters`` on a copy. The seed is
    derived from ``seed`` so the run's seed does not reproduce the teacher's own initialisation.

    Example:
        >>> net = nn.Linear(2, 1)
        >>> torch.equal(fresh_state(net, 0)["weight"], fresh_state(net, 0)["weight"])  # seeded
        True
    """
    seed_everything(int(config_hash({"reinit": seed}, 8), 16))
    info = getattr(model, "info", None)
    if info is not None:
        fresh = create_model(info.arch, **untrained_kwargs(info))
        record = getattr(model, PRUNED_ATTR, None)  # a materialised model: the same channels removed
        if record:
            spec = fresh.input_spec
            prune_channels(fresh, record, torch.zeros(1, spec.channels, *spec.size))
    else:
        fresh = copy.deepcopy(model).cpu()
        for m in fresh.modules():
            for attr in ("reset_parameters", "_reset_parameters"):
                fn = getattr(m, attr, None)
                if callable(fn):
                    fn()
                    break
    return {k: v.detach().cpu() for k, v in fresh.state_dict().items()}


__all__ = [
    "PRUNABLE",
    "PRUNED_ATTR",
    "PruneGraph",
    "PruneRecord",
    "fresh_state",
    "head_of",
    "is_depthwise",
    "prune_channels",
]

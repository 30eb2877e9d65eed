"""Structural materialisation: remove the channels a mask set switches off, for a really smaller model.

A masked dense model is no faster than the dense one. :func:`materialize` turns a mask set
(:data:`~safereuse.slicing.masks.Masks`) into a smaller dense network: every channel that the masks
switch off is removed for real — the producing conv / linear rows, the BN entries, the consumers'
input columns, the residual-add partners and downsample paths — with the dependency graph of
Torch-Pruning (Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023); whatever the
masks leave of the remaining weights is applied as zeros. This is SeaM's "go beyond" (Qi et al.,
"Reusing Deep Neural Network Models through Model Re-engineering", ICSE 2023; spec ``seam.md``,
"Efficiency measurement"): real latency from removed channels, not from unstructured sparsity.

**When a channel goes.** Torch-Pruning groups the coupled channels (a channel of a residual stream
is produced by every conv that adds into it and read by every conv that reads the stream). An
index of a group is removed when *all* its producers (the conv / linear layers whose output rows
form it, depthwise convs included) have all-False masks there, or when *all* its consumers (the
layers reading it) have all-False input columns there: a channel is kept if any coupled member
keeps it. A layer without a mask entry keeps all its channels. Channels that no layer reads (the
head's outputs, a last conv's) are never removed; a group that would lose every channel is refused.

**What the result equals.** A channel whose producing weights are masked still outputs its BN
shift ``β − γμ/σ`` (a constant) in the masked model, and a constant passed through a zero-padded
conv is not a bias, so no removal can reproduce it. Removing the channel is exact for the masked
model in which its *consumers'* input columns are masked too: :func:`effective_masks` returns that
mask set, and ``apply_reset(copy, effective_masks(...))`` equals the materialised model up to float
summation order (tested ≤ 1e-5). When the masks already zero the consumers (or only consumers), the
two mask sets are equal.

**Rebuilding.** The materialised model carries its pruning record (:data:`PRUNED_ATTR`): the root
layer and the removed indices of each group, in order. :func:`~safereuse.models.rebuild.prune_channels`
replays such a record on a freshly built model of the same architecture — which is how
:func:`safereuse.artifacts.load_model` rebuilds a pruned artifact (never a pickle). Both live in
:mod:`safereuse.models.rebuild`, below this module, with the dependency graph they share.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import SafeReuseError
from ..models.rebuild import (
    PRUNABLE,
    PRUNED_ATTR,
    PruneGraph,
    PruneRecord,
    is_depthwise,
)
from .masks import Masks


def _check_masks(model: nn.Module, masks: Masks) -> None:
    from torch.nn.utils import parametrize

    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise SafeReuseError(
            f"{type(model).__name__} carries parametrizations (e.g. a mask search's scores)",
            fix="materialise the model after the search, with its masks as a mask set",
        )
    params = dict(model.named_parameters())
    for name, k in masks.items():
        if name not in params:
            raise SafeReuseError(
                f"the mask set names {name!r}, which is not a parameter of {type(model).__name__}",
                fix="build the masks on this model (keys are named_parameters() names)",
            )
        if tuple(k.shape) != tuple(params[name].shape) or k.dtype != torch.bool:
            raise SafeReuseError(
                f"mask {name!r} is {k.dtype} {tuple(k.shape)}, expected torch.bool "
                f"{tuple(params[name].shape)}",
                fix="give one bool tensor shaped like each parameter (True = kept)",
            )


def _pname(layer: str, attr: str) -> str:
    return f"{layer}.{attr}" if layer else attr


def _zero_at(mask: torch.Tensor, rows: Sequence[int]) -> bool:
    return not bool(mask[list(rows)].any())


def _plan(graph: PruneGraph, masks: Masks) -> tuple[PruneRecord, dict[tuple[str, str], set[int]]]:
    """The pruning steps and, per ``(layer, "out" | "in")``, the indices that layer loses."""
    record: PruneRecord = []
    removed: dict[tuple[str, str], set[int]] = {}
    for group in graph.groups():
        members = graph.roles(group)
        if not any(role == "in" and isinstance(m, PRUNABLE) for role, _, m, _, _ in members):
            continue  # no layer reads these channels: they are the model's output (a head, a last conv)
        root = graph.names[group[0].dep.target.module]
        n_root = len(group[0].idxs)
        # per root index: the rows (producers) / columns (consumers) of each conv / linear member
        votes: dict[str, list[list[bool]]] = {
            "out": [[] for _ in range(n_root)],
            "in": [[] for _ in range(n_root)],
        }
        for role, name, m, idxs, roots in members:
            if not isinstance(m, PRUNABLE):
                continue
            k = masks.get(_pname(name, "weight"))
            bias = masks.get(_pname(name, "bias")) if role == "out" else None
            by_root: dict[int, list[int]] = {}
            for i, r in zip(idxs, roots, strict=True):
                by_root.setdefault(r, []).append(i)
            for r, rows in by_root.items():
                if k is None:
                    zero = False
                elif role == "out":
                    zero = _zero_at(k, rows) and (bias is None or _zero_at(bias, rows))
                else:
                    zero = not bool(k[:, rows].any())
                votes[role][r].append(zero)
        drop = [
            r for r in range(n_root) if any(votes[role][r] and all(votes[role][r]) for role in ("out", "in"))
        ]
        if not drop:
            continue
        if len(drop) == n_root:
            raise SafeReuseError(
                f"the masks switch off every channel of {root} (and the layers coupled with it)",
                fix="keep at least one output channel per layer",
            )
        record.append((root, drop))
        dropped = set(drop)
        for role, name, _, idxs, roots in members:
            lost = {i for i, r in zip(idxs, roots, strict=True) if r in dropped}
            removed.setdefault((name, role), set()).update(lost)
    return record, removed


def _keep_index(size: int, lost: set[int] | None) -> torch.Tensor | None:
    if not lost:
        return None
    return torch.tensor([i for i in range(size) if i not in lost], dtype=torch.long)


def _slice_mask(
    name: str, mask: torch.Tensor, module: nn.Module, removed: dict[tuple[str, str], set[int]]
) -> torch.Tensor:
    """The part of ``mask`` (of parameter ``name`` of ``module``) that survives the removal."""
    layer = name.rpartition(".")[0]
    out = _keep_index(mask.shape[0], removed.get((layer, "out")))
    if out is not None:
        mask = mask.index_select(0, out)
    if mask.dim() > 1 and isinstance(module, PRUNABLE) and not is_depthwise(module):
        cols = _keep_index(mask.shape[1], removed.get((layer, "in")))
        if cols is not None:
            mask = mask.index_select(1, cols)
    return mask


def _closure(model: nn.Module, masks: Masks, removed: dict[tuple[str, str], set[int]]) -> Masks:
    full = {k: v.clone() for k, v in masks.items()}
    for (layer, role), lost in removed.items():
        m = model.get_submodule(layer)
        if not isinstance(m, PRUNABLE) or not lost:
            continue
        key = _pname(layer, "weight")
        k = full.setdefault(key, torch.ones_like(m.weight, dtype=torch.bool, device="cpu"))
        idx = sorted(lost)
        if role == "out":
            k[idx] = False
            if _pname(layer, "bias") in full:
                full[_pname(layer, "bias")][idx] = False
        else:
            k[:, idx] = False
    return full


def effective_masks(model: nn.Module, masks: Masks, example_input: torch.Tensor) -> Masks:
    """The mask set whose masked model :func:`materialize` reproduces exactly.

    ``masks`` plus, for every removed channel, its producers' rows and its consumers' input columns
    set to False (consumer weights without a mask entry get one). See the module docstring for why
    the plain masked model can differ (the BN shift of a channel whose producers are masked).

    Args:
        model: the network (left untouched).
        masks: parameter name → bool tensor shaped like it (True = kept).
        example_input: one input batch (its first sample is traced).

    Returns:
        A new mask set.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> k = torch.ones(4, 3, dtype=torch.bool)
        >>> k[1] = False
        >>> eff = effective_masks(net, {"0.weight": k}, torch.zeros(1, 3))
        >>> eff["2.weight"][:, 1].tolist()  # the consumer no longer reads hidden unit 1
        [False, False]
    """
    _check_masks(model, masks)
    work = copy.deepcopy(model)
    _, removed = _plan(PruneGraph(work, example_input), masks)
    return _closure(model, masks, removed)


def materialize(model: nn.Module, masks: Masks, example_input: torch.Tensor) -> nn.Module:
    """A smaller dense copy of ``model`` without the channels ``masks`` switch off.

    Channels are removed with Torch-Pruning's dependency graph (coupled residual channels, BN,
    downsample paths, flatten into a linear); the head's outputs are never removed. The remaining
    masks are applied to the kept weights as zeros. The copy keeps the model contract (``features``,
    ``head``, ``num_classes``, input spec and normalisation, ``info``) and carries its pruning
    record in the attribute :data:`PRUNED_ATTR`, which :func:`safereuse.artifacts.save_model` stores.

    Args:
        model: the network (left untouched; deep-copied).
        masks: parameter name → bool tensor shaped like it (True = kept).
        example_input: an input batch on the model's device (its first sample is traced).

    Returns:
        The materialised model, same device, same ``training`` flags. Its outputs equal those of
        ``model`` with :func:`effective_masks` applied (≤ 1e-5 in float32).

    Raises:
        SafeReuseError: a mask that does not fit the model, or masks that remove every channel of a
            layer.

    Example:
        >>> torch.manual_seed(0) and None
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3))
        >>> keep = torch.ones(4, 1, 3, 3, dtype=torch.bool)
        >>> keep[[0, 2]] = False
        >>> small = materialize(net, {"0.weight": keep}, torch.rand(1, 1, 8, 8))
        >>> small[0].out_channels, small[3].in_channels, net[0].out_channels
        (2, 2, 4)
        >>> getattr(small, PRUNED_ATTR)
        [('0', [0, 2])]
    """
    _check_masks(model, masks)
    out = copy.deepcopy(model)
    graph = PruneGraph(out, example_input)
    record, removed = _plan(graph, masks)
    graph.prune(record)
    params = dict(out.named_parameters())
    with torch.no_grad():
        for name, k in masks.items():
            p = params[name]
            sliced = _slice_mask(name, k, out.get_submodule(name.rpartition(".")[0]), removed)
            if sliced.shape != p.shape:  # pragma: no cover - Torch-Pruning and the bookkeeping disagree
                raise RuntimeError(
                    f"mask {name} sliced to {tuple(sliced.shape)}, parameter is {tuple(p.shape)}"
                )
            p.masked_fill_(~sliced.to(p.device), 0.0)
    setattr(out, PRUNED_ATTR, [*getattr(model, PRUNED_ATTR, []), *record])
    return out

"""Mask search on any model: real-valued scores behind ``torch.nn.utils.parametrize`` (SeaM).

Reference: Qi, Sun, Gao, Zhang, Li, Wang, "Reusing Deep Neural Network Models through Model
Re-engineering", ICSE 2023 (spec: ``shared/specs/seam.md``).

Every masked parameter ``W`` (a Conv / Linear weight or bias) gets a score tensor ``S`` initialised to
1.0; the layer computes with ``W ⊙ 1[S > 0]``. :func:`mask_scores` registers the parametrizations,
hands back a :class:`MaskScores` and removes them in ``finally`` — the model leaves as it came (same
Parameter objects, order, ``requires_grad``, hooks, class). The original artifact baked custom
``MaskConv`` / ``MaskLinear`` layers into its own model copies; here any ``nn.Module`` works.

**Gradient** (the artifact's, which changes results): each mask is binarised on its own with a
*clipped* straight-through estimator, ``∂L/∂S = hardtanh(∂L/∂M)``; the kept fraction ρ is computed
from a *second*, unclipped binarisation of all masks joined, so a score's gradient is
``hardtanh(∂CE/∂M) + α·n/N`` (``n``: weights under the score, 1 for ``weight`` granularity). With
Adam that small pull moves a score by ≈ lr per step wherever the CE gradient vanishes.

Granularities: ``weight`` (the paper's unstructured masks) and ``channel`` (one score per output
channel — whole channels fall, so the result can be materialised into a smaller dense model). With
an example input, ``channel`` searches exactly the model that
:func:`~safereuse.slicing.materialize.materialize` gives: channels coupled through a residual add
share one score (Torch-Pruning's dependency groups, Fang et al., "DepGraph", CVPR 2023), which also
gates their BatchNorm entries and their readers' input columns; ρ then counts the weights of the
materialised model (a channel's score is pulled by every weight its removal takes away), and an
optional FLOPs term weights each group by the multiplications it removes.

:func:`search_masks` is the search loop shared by direct reuse (:class:`safereuse.methods.seam.SeaM`
``.reengineer``) and indirect reuse (the ``seam`` transfer method): two Adam optimisers, head-only
epochs every ``head_every`` epochs, selection on validation data (:func:`select_epoch`), tqdm
progress and resumable state (safetensors + JSON, like :func:`safereuse.train.fit`).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from ..errors import SafeReuseError
from ..models.rebuild import PRUNABLE, PruneGraph, is_depthwise
from ..utils import atomic_path, config_hash, preserve_modes, write_json_atomic
from .coverage import coverage_layers
from .masks import Masks

Granularity = Literal["weight", "channel"]
GRANULARITIES = ("weight", "channel")
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

__all__ = [
    "GRANULARITIES",
    "Granularity",
    "MaskScores",
    "SearchResult",
    "binarize",
    "mask_scores",
    "search_masks",
    "SELECTION_RULES",
    "select_epoch",
    "selection_key",
    "selection_rule",
]


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, s: torch.Tensor, clip: bool, keep_one: bool) -> torch.Tensor:
        ctx.clip = clip
        kept = s > 0
        if keep_one and s.numel() and not bool(kept.any()):
            kept = kept.clone()
            kept.view(-1)[int(s.argmax())] = True  # a layer never loses every channel (materialise refuses)
        return kept.to(s.dtype)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return (g.clamp(-1.0, 1.0) if ctx.clip else g), None, None


def binarize(score: torch.Tensor, clip: bool = True, keep_one: bool = False) -> torch.Tensor:
    """``1[score > 0]`` with a straight-through gradient, clipped to [−1, 1] (``clip``) or passed as is.

    ``keep_one``: when no entry is positive the highest-scored one is kept anyway (channel scores: a
    layer that lost every channel could not be materialised).

    Example:
        >>> s = torch.tensor([0.5, -0.2], requires_grad=True)
        >>> (binarize(s) * torch.tensor([3.0, -0.5])).sum().backward()
        >>> s.grad.tolist()
        [1.0, -0.5]
        >>> binarize(torch.tensor([-0.5, -0.2]), keep_one=True).tolist()
        [0.0, 1.0]
    """
    return _StraightThrough.apply(score, clip, keep_one)


class _Gate:
    """One score tensor gating one parameter: element-wise (``dim`` None, the score shaped like the
    parameter) or along ``dim``, where position ``idxs[i]`` takes score entry ``roots[i]`` (``idxs``
    None: position ``i`` takes entry ``i``)."""

    __slots__ = ("dim", "idxs", "roots", "score", "size")

    def __init__(
        self,
        score: nn.Parameter,
        dim: int | None = None,
        size: int = 0,
        idxs: Sequence[int] | None = None,
        roots: Sequence[int] | None = None,
    ) -> None:
        self.score, self.dim, self.size = score, dim, size
        full = idxs is None or (list(idxs) == list(range(size)) and list(roots or []) == list(range(size)))
        dev = score.device
        self.idxs = None if full else torch.tensor(list(idxs or []), dtype=torch.long, device=dev)
        self.roots = None if full else torch.tensor(list(roots or []), dtype=torch.long, device=dev)

    def vector(self, clip: bool) -> torch.Tensor:
        m = binarize(self.score, clip, keep_one=self.dim is not None)
        if self.idxs is None:
            return m
        ones = torch.ones(self.size, dtype=m.dtype, device=m.device)
        return ones.index_copy(0, self.idxs, m[self.roots])


@dataclass
class _Entry:
    """One masked parameter: its gates (their product is the mask), whether it counts in ρ's ``N``
    (Conv / Linear weights and biases; a BatchNorm's gates do not) and, for a weight, the output
    positions per sample (its FLOPs per kept weight; 0 when unknown)."""

    name: str  # parameter name, e.g. "layer1.0.conv1.weight"
    shape: torch.Size
    gates: list[_Gate]
    counted: bool = True
    positions: int = 0

    def factors(self, clip: bool) -> list[tuple[int | None, torch.Tensor]]:
        by_dim: dict[int | None, torch.Tensor] = {}
        for g in self.gates:
            v = g.vector(clip)
            by_dim[g.dim] = v if g.dim not in by_dim else by_dim[g.dim] * v
        return list(by_dim.items())

    def mask(self, clip: bool = True) -> torch.Tensor:
        """The 0/1 mask, broadcastable to the parameter."""
        out = None
        for dim, v in self.factors(clip):
            if dim is not None:
                v = v.view([-1 if d == dim else 1 for d in range(len(self.shape))])
            out = v if out is None else out * v
        assert out is not None
        return out

    def kept(self) -> torch.Tensor:
        """Kept entries, differentiable (unclipped): element-wise a sum; gated along dimensions the
        product of the kept counts per dimension (a channel's weight rows × the kept input columns)."""
        factors = self.factors(False)
        if factors[0][0] is None:
            return factors[0][1].sum()
        rest, out = math.prod(self.shape), None
        for dim, v in factors:
            assert dim is not None
            rest //= self.shape[dim]
            out = v.sum() if out is None else out * v.sum()
        assert out is not None
        return out * rest


class _ScoreMask(nn.Module):
    """The parametrization: ``W ⊙ mask`` (the product of the entry's gates). The scores are plain
    attributes, not registered parameters, so they never enter the model's state."""

    def __init__(self, entry: _Entry) -> None:
        super().__init__()
        object.__setattr__(self, "entry", entry)  # not registered: the scores live outside the model

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.entry.mask()


@dataclass
class MaskScores:
    """The scores of a model under :func:`mask_scores` (one tensor per score; a channel score is
    shared by every parameter it gates).

    Attributes:
        entries: one per masked parameter.
        total: the number of masked Conv / Linear weights and biases ``N``.
        names: score name per score (``id``): the parameter of a weight score, the layer of a
            per-layer channel score, the root layer of a coupled channel group.
        coupled: per coupled channel group (by its score name), the layers it gates.
    """

    entries: list[_Entry]
    total: int
    names: dict[int, str] = field(default_factory=dict)
    coupled: dict[str, list[str]] = field(default_factory=dict)

    def parameters(self) -> list[nn.Parameter]:
        """The distinct score tensors (what the mask optimiser trains)."""
        seen: dict[int, nn.Parameter] = {}
        for e in self.entries:
            for g in e.gates:
                seen.setdefault(id(g.score), g.score)
        return list(seen.values())

    def rho(self) -> torch.Tensor:
        """Kept fraction ρ of the masked weights, differentiable (unclipped): a weight score gets
        ``1 / N``, a channel score ``(weights its channel removes) / N``."""
        terms = [e.kept() for e in self.entries if e.counted]
        return torch.stack(terms).sum() / self.total

    def kept_fraction(self) -> float:
        """ρ as a number (no graph)."""
        with torch.no_grad():
            return float(self.rho())

    def _flop_terms(self) -> list[_Entry]:
        terms = [e for e in self.entries if e.counted and e.positions > 0]
        if not terms:
            raise SafeReuseError(
                "the FLOPs of the masked layers are unknown",
                fix="enter mask_scores with an example_input",
            )
        return terms

    def flops(self) -> torch.Tensor:
        """Kept fraction of the masked layers' multiplications (batch 1), differentiable like
        :meth:`rho`: a channel score gets the multiplications its channel removes over the total."""
        terms = self._flop_terms()
        dense = sum(math.prod(e.shape) * e.positions for e in terms)
        return torch.stack([e.kept() * e.positions for e in terms]).sum() / dense

    def flops_fraction(self) -> float | None:
        """:meth:`flops` as a number, None when the positions are unknown."""
        if not any(e.counted and e.positions > 0 for e in self.entries):
            return None
        with torch.no_grad():
            return float(self.flops())

    def masks(self) -> Masks:
        """The current masks in slicing's format: parameter name → bool (True = kept), on the CPU.
        With coupled channels they include the BatchNorm entries and the readers' input columns, so
        ``apply_reset`` on a copy gives the searched model."""
        out = {}
        with torch.no_grad():
            for e in self.entries:
                out[e.name] = (e.mask() > 0).expand(e.shape).cpu().clone()
        return out

    def _named(self) -> dict[str, nn.Parameter]:
        return {self.names.get(id(s), str(i)): s for i, s in enumerate(self.parameters())}

    def state(self) -> dict[str, torch.Tensor]:
        """Score values by score name (copies), e.g. for a checkpoint."""
        return {k: s.detach().clone() for k, s in self._named().items()}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, s in self._named().items():
                s.copy_(state[k].to(s.device))

    def describe(self) -> list[list[Any]]:
        """Score names and shapes (a checkpoint's key: a changed mask layout restarts the search)."""
        return [[k, list(s.shape)] for k, s in self._named().items()]


def _chosen_layers(
    model: nn.Module, layers: Literal["all", "conv", "linear"] | Sequence[str]
) -> list[tuple[str, nn.Module]]:
    if isinstance(layers, str):
        chosen = coverage_layers(model, layers)
        if not chosen and coverage_layers(nn.Sequential(model), layers):
            chosen = [("", model)]  # the model is itself one layer
    else:
        mods = dict(model.named_modules())
        missing = [n for n in layers if n not in mods]
        if missing:
            raise SafeReuseError(f"{type(model).__name__} has no layer {missing[0]!r}", fix="name a module")
        chosen = [(n, mods[n]) for n in layers]
    return [(n, m) for n, m in chosen if isinstance(getattr(m, "weight", None), torch.Tensor)]


def _score(n: int, like: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(torch.ones(n, device=like.device, dtype=like.dtype))


def _exactly_gateable(module: nn.Module) -> bool:
    """A group member whose part of a removed channel the gates can switch off exactly: a Conv /
    Linear (not transposed, not grouped unless depthwise), a BatchNorm, or a module without
    parameters (activations, pooling). A LayerNorm / GroupNorm mixes channels: removing one changes
    the others, which no mask reproduces."""
    if isinstance(module, PRUNABLE):
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            return False
        return not isinstance(module, nn.modules.conv._ConvNd) or module.groups == 1 or is_depthwise(module)
    return isinstance(module, _BN) or not any(True for _ in module.parameters(recurse=False))


def _splits_heads(graph: PruneGraph, group: Any) -> bool:
    """A group whose channels a layer's output is reshaped into (attention heads: ``view(B, T, H, d)``
    right after the query / key / value projection): removing channels there breaks the reshape,
    so the group gets no score. A flatten into a Linear reshapes a pooled map, not a layer's output."""
    for it in group.items:
        node = graph.dg.module2node.get(it.dep.target.module)
        if node is None or type(it.dep.target.module).__name__ != "_ReshapeOp":
            continue
        if any(isinstance(i.module, PRUNABLE) for i in node.inputs):
            return True
    return False


def _coupled_gates(
    model: nn.Module, chosen: list[tuple[str, nn.Module]], bias: bool, example_input: torch.Tensor
) -> tuple[dict[str, list[_Gate]], dict[int, str], dict[str, list[str]]]:
    """Channel gates from Torch-Pruning's dependency groups: one score per group of coupled channels
    (a residual stream, a conv and its BN and readers), gating every producer's rows (and bias),
    every BatchNorm entry and every reader's input columns — the model that materialise gives."""
    graph = PruneGraph(copy.deepcopy(model), example_input)  # the trace runs on a copy
    mods = dict(model.named_modules())
    wanted = {n for n, _ in chosen}
    gates: dict[str, list[_Gate]] = {}
    seen: set[tuple[str, int, int]] = set()
    names: dict[int, str] = {}
    coupled: dict[str, list[str]] = {}
    skipped: set[str] = set()
    for group in graph.groups():
        members = graph.roles(group)
        producers = [n for role, n, m, _, _ in members if role == "out" and isinstance(m, PRUNABLE)]
        if not any(role == "in" and isinstance(m, PRUNABLE) for role, _, m, _, _ in members):
            continue  # nothing reads these channels (the model's outputs): no group to remove
        if not wanted.intersection(producers):
            continue
        items = [
            graph.names[it.dep.target.module] for it in group.items if it.dep.target.module in graph.names
        ]
        if not all(_exactly_gateable(mods[n]) for n in items) or _splits_heads(graph, group):
            skipped.update(producers)  # its channels stay: gating them could not be materialised exactly
            continue
        root = graph.names[group[0].dep.target.module]
        ref = mods[root].weight
        score = _score(len(group[0].idxs), ref)
        names[id(score)] = f"group:{root}"
        coupled[f"group:{root}"] = sorted({n for _, n, _, _, _ in members})
        for role, n, _, idxs, roots in members:
            m = mods[n]
            if isinstance(m, PRUNABLE):
                attrs = [("weight", 0 if role == "out" else 1)]
                if role == "out" and bias and getattr(m, "bias", None) is not None:
                    attrs.append(("bias", 0))
            elif isinstance(m, _BN) and m.affine:
                attrs = [("weight", 0), ("bias", 0)]
            else:
                continue
            for attr, dim in attrs:
                pname = f"{n}.{attr}" if n else attr
                key = (pname, dim, id(score))
                if key in seen:
                    continue  # a depthwise conv is listed as producer and reader of one group
                seen.add(key)
                size = getattr(m, attr).shape[dim]
                gates.setdefault(pname, []).append(_Gate(score, dim, size, idxs, roots))
    for n, m in chosen:  # layers whose channels no group covers (a head): one score per channel
        if n in skipped or not isinstance(m, PRUNABLE):
            continue
        w_name = f"{n}.weight" if n else "weight"
        if any(g.dim == 0 for g in gates.get(w_name, [])):
            continue
        score = _score(m.weight.shape[0], m.weight)
        names[id(score)] = n or "layer"
        for attr in ["weight"] + (["bias"] if bias and getattr(m, "bias", None) is not None else []):
            pname = f"{n}.{attr}" if n else attr
            gates.setdefault(pname, []).append(_Gate(score, 0, m.weight.shape[0]))
    return gates, names, coupled


def _layer_gates(
    chosen: list[tuple[str, nn.Module]], granularity: Granularity, bias: bool
) -> tuple[dict[str, list[_Gate]], dict[int, str]]:
    """One score per weight, or one per output channel of each layer on its own (no coupling)."""
    gates: dict[str, list[_Gate]] = {}
    names: dict[int, str] = {}
    for n, m in chosen:
        w = m.weight
        attrs = ["weight"] + (["bias"] if bias and getattr(m, "bias", None) is not None else [])
        shared = _score(w.shape[0], w) if granularity == "channel" else None
        if shared is not None:
            names[id(shared)] = n or "layer"
        for attr in attrs:
            p = getattr(m, attr)
            pname = f"{n}.{attr}" if n else attr
            if shared is not None:
                gates[pname] = [_Gate(shared, 0, w.shape[0])]
            else:
                score = nn.Parameter(torch.ones_like(p.detach()))
                names[id(score)] = pname
                gates[pname] = [_Gate(score)]
    return gates, names


def _positions(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """Output positions per sample of every Conv / Linear (one forward of one example, eval mode)."""
    found: dict[str, int] = {}
    handles = []
    for n, m in model.named_modules():
        if isinstance(m, PRUNABLE):

            def hook(mod: nn.Module, _inp: Any, out: torch.Tensor, n: str = n) -> None:
                channels = out.shape[1] if isinstance(mod, nn.modules.conv._ConvNd) else out.shape[-1]
                found[n] = out.numel() // max(1, out.shape[0] * channels) if out.dim() > 1 else 1

            handles.append(m.register_forward_hook(hook))
    try:
        with preserve_modes(model), torch.no_grad():
            model.eval()
            model(example_input[:1])
    finally:
        for h in handles:
            h.remove()
    return found


@contextmanager
def mask_scores(
    model: nn.Module,
    layers: Literal["all", "conv", "linear"] | Sequence[str] = "all",
    granularity: Granularity = "weight",
    bias: bool = True,
    example_input: torch.Tensor | None = None,
) -> Iterator[MaskScores]:
    """Put score masks on the weights (and biases) of ``model``'s Conv / Linear layers, for a ``with``.

    While inside, the layers compute with their weights times the masks and all the model's
    parameters are frozen (``requires_grad=False``); on exit (also on an exception) the
    parametrizations are removed and every parameter comes back as the same object, in the same
    order, with its ``requires_grad``.

    ``channel`` granularity with an ``example_input`` searches the model that
    :func:`~safereuse.slicing.materialize.materialize` gives: the channels Torch-Pruning's
    dependency graph couples (a residual stream: every conv adding into it, their BatchNorms, the
    downsample path, every reader) share ONE score, which gates the producers' rows and biases, the
    BatchNorm entries (a removed channel no longer emits its BN shift) and the readers' input
    columns. A group that holds a channel-mixing layer (LayerNorm, GroupNorm, a grouped conv) gets
    no score (its channels stay); layers whose channels no group covers (a head) keep one score per
    output channel; no layer loses its last channel. Without an ``example_input`` every layer gets
    its own per-channel scores (rows and bias only: not what materialise gives).

    Args:
        model: any ``nn.Module``.
        layers: ``all`` Conv + Linear layers (the model's own classifier included, as SeaM does),
            ``conv``, ``linear``, or a list of module names (with coupled channels: the groups
            these layers produce, with every member of each).
        granularity: ``weight`` (one score per weight) or ``channel`` (one per output channel).
        bias: mask biases too.
        example_input: an input batch on the model's device (traces the dependency graph; gives the
            FLOPs of each layer for :meth:`MaskScores.flops`).

    Yields:
        The :class:`MaskScores` (initialised to 1: everything kept).

    Raises:
        SafeReuseError: no Conv / Linear layer; an unknown granularity.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> x = torch.rand(4, 3)
        >>> with mask_scores(net) as sc:
        ...     same = torch.equal(net(x), net[2](net[1](net[0](x))))
        ...     with torch.no_grad():
        ...         sc.parameters()[0][0, 0] = -1.0  # drop one weight of the first layer
        ...     kept = sc.kept_fraction()
        >>> same, round(kept * 11, 3), sum(1 for _ in net.parameters())
        (True, 10.0, 4)
        >>> with mask_scores(net, granularity="channel", example_input=x) as sc:
        ...     [tuple(s.shape) for s in sc.parameters()]  # hidden units (coupled), the output unit
        [(2,), (1,)]
    """
    if granularity not in GRANULARITIES:
        raise SafeReuseError(
            f"granularity {granularity!r} does not exist", fix="choose granularity=weight or channel"
        )
    chosen = _chosen_layers(model, layers)
    if not chosen:
        what = f"no {layers!r} layer" if isinstance(layers, str) else "none of the named layers with a weight"
        raise SafeReuseError(
            f"{type(model).__name__} has {what} to mask",
            fix="re-engineer a model with such layers (SeaM masks Conv2d weights by default)",
        )
    coupled: dict[str, list[str]] = {}
    if granularity == "channel" and example_input is not None:
        gates, names, coupled = _coupled_gates(model, chosen, bias, example_input)
    else:
        gates, names = _layer_gates(chosen, granularity, bias)
    positions = _positions(model, example_input) if example_input is not None else {}
    entries: list[_Entry] = []
    for pname, p in model.named_parameters():  # the model's own order: deterministic
        if pname in gates:
            layer, _, attr = pname.rpartition(".")
            m = model.get_submodule(layer)
            counted = isinstance(m, PRUNABLE)
            pos = positions.get(layer, 0) if counted and attr == "weight" else 0
            entries.append(_Entry(pname, p.shape, gates[pname], counted, pos))
    if not any(e.counted for e in entries):
        raise SafeReuseError(
            f"{type(model).__name__} has no channel that can be removed exactly",
            fix="use granularity=weight",
        )
    # every parameter of the model is frozen while masked (SeaM trains only scores and the new head)
    touched = {name.rpartition(".")[0] for name in gates}
    mods = dict(model.named_modules())
    orders = {n: list(mods[n]._parameters) for n in touched}
    done: list[tuple[nn.Module, str]] = []
    with preserve_modes(model):  # flags restored last, after the parametrizations are gone
        try:
            for p in model.parameters():
                p.requires_grad_(False)
            for e in entries:
                layer, _, attr = e.name.rpartition(".")
                m = mods[layer]
                parametrize.register_parametrization(m, attr, _ScoreMask(e), unsafe=True)
                done.append((m, attr))
            total = sum(math.prod(e.shape) for e in entries if e.counted)
            yield MaskScores(entries, total, names, coupled)
        finally:
            for m, attr in reversed(done):
                parametrize.remove_parametrizations(m, attr, leave_parametrized=False)
            for n in touched:
                m = mods[n]
                params = dict(m._parameters)
                if list(params) != orders[n] and set(params) == set(orders[n]):
                    m._parameters.clear()
                    m._parameters.update((k, params[k]) for k in orders[n])


# -- the search ------------------------------------------------------------------------------------
def selection_key(record: dict[str, float], reference_acc: float, max_acc_drop: float | None = None) -> tuple:
    """Sort key of an epoch under SeaM's rule and its guard (smaller is better; see :func:`select_epoch`).

    Example:
        >>> selection_key({"val_acc": 0.95, "rho": 0.1004}, 0.9)
        (0, 100, -0.95)
        >>> selection_key({"val_acc": 0.5, "rho": 0.25}, 0.9)
        (1, -0.25)
        >>> selection_key({"val_acc": 0.5, "rho": 0.25}, 0.9, max_acc_drop=0.01)  # below the guard
        (2, -0.5)
    """
    acc, rho = record["val_acc"], record["rho"]
    if acc >= reference_acc:
        return (0, int(rho * 1000), -acc)
    if max_acc_drop is None or acc >= reference_acc - max_acc_drop:
        return (1, -(acc - rho))
    return (2, -acc)


#: What each first element of :func:`selection_key` means, as the manifests report it.
SELECTION_RULES = ("reference reached", "fallback", "guard")


def selection_rule(record: dict[str, float], reference_acc: float, max_acc_drop: float | None = None) -> str:
    """Which branch of :func:`select_epoch` an epoch was kept by (one of :data:`SELECTION_RULES`).

    Example:
        >>> selection_rule({"val_acc": 0.85, "rho": 0.1}, 0.9, 0.01)
        'guard'
    """
    return SELECTION_RULES[selection_key(record, reference_acc, max_acc_drop)[0]]


def select_epoch(
    history: Sequence[dict[str, float]], reference_acc: float, max_acc_drop: float | None = None
) -> int:
    """The index of the epoch SeaM keeps: among epochs with ``val_acc ≥ reference_acc`` the smallest
    ρ at 0.1 % resolution (``int(ρ·1000)``), ties to the higher accuracy (then the earlier epoch);
    when none reaches the reference, SeaM's fallback, the best ``val_acc − ρ`` — with a guard
    (``max_acc_drop``, ours): the fallback only considers epochs within ``max_acc_drop`` of the
    reference, and when none is, the most accurate epoch is kept (the fallback alone can trade any
    accuracy for a smaller ρ: ``0.60 − 0.01`` beats ``0.85 − 0.30``).

    Args:
        history: per-epoch records with ``val_acc`` and ``rho`` (fractions).
        reference_acc: the original model's validation accuracy on the target problem.
        max_acc_drop: the guard (fraction; None: SeaM's rule unguarded).

    Returns:
        An index into ``history``.

    Example:
        >>> h = [{"val_acc": 0.90, "rho": 1.0}, {"val_acc": 0.95, "rho": 0.1004},
        ...      {"val_acc": 0.97, "rho": 0.1009}, {"val_acc": 0.80, "rho": 0.01}]
        >>> select_epoch(h, 0.9), select_epoch(h, 0.96), select_epoch(h, 0.99)
        (2, 2, 2)
        >>> select_epoch(h[:2] + [{"val_acc": 0.95, "rho": 0.1001}], 0.9)  # same int(ρ·1000): earlier
        1
        >>> g = [{"val_acc": 0.85, "rho": 0.30}, {"val_acc": 0.60, "rho": 0.01}]
        >>> select_epoch(g, 0.9), select_epoch(g, 0.9, max_acc_drop=0.1), select_epoch(g, 0.9, 0.01)
        (1, 0, 0)
    """
    if not history:
        raise SafeReuseError("the mask search ran no epoch", fix="set epochs >= 1")
    return min(range(len(history)), key=lambda i: (selection_key(history[i], reference_acc, max_acc_drop), i))


@dataclass
class SearchResult:
    """What :func:`search_masks` kept.

    Attributes:
        masks: the selected epoch's masks (True = kept).
        head_state: the trainable head's parameters at that epoch.
        epoch: the selected epoch (1-based).
        val_acc: its validation accuracy; ``rho``: its kept fraction.
        history: per epoch ``{"epoch", "phase", "loss", "val_acc", "rho"}`` (and ``"flops"``, the
            kept FLOPs fraction of the masked layers, when the scores know them).
        seconds: wall time; ``resumed_from``: epochs restored from a checkpoint.
        rule: the branch of :func:`select_epoch` that kept the epoch (:data:`SELECTION_RULES`;
            ``"stop"`` when ``stop_removed`` ended the search).
    """

    masks: Masks
    head_state: dict[str, torch.Tensor]
    epoch: int
    val_acc: float
    rho: float
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0
    rule: str = "reference reached"


def _accuracy(forward: Callable[[torch.Tensor], torch.Tensor], x, y, batch: int, dev) -> float:
    if len(y) == 0:
        return float("nan")
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            correct += int((forward(x[i : i + batch].to(dev)).argmax(1) == y[i : i + batch].to(dev)).sum())
    return correct / len(y)


def search_masks(
    model: nn.Module,
    head: nn.Module | None,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    *,
    scores_of: Callable[[], Any],
    epochs: int,
    lr_mask: float,
    lr_head: float,
    alpha: float,
    flops_weight: float = 0.0,
    batch_size: int = 64,
    head_every: int | None = 5,
    reference_acc: float = 1.0,
    max_acc_drop: float | None = None,
    stop_removed: float | None = None,
    head_params: Sequence[nn.Parameter] | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    desc: str = "mask search",
) -> SearchResult:
    """Gradient search of masks (SeaM): ``L = CE(head(model(x)), y) + α·ρ (+ β·FLOPs kept)`` with Adam.

    Call it inside :func:`mask_scores` (``scores_of`` returns that :class:`MaskScores`). BatchNorm
    layers run in eval mode (frozen statistics), other layers in train mode; modes, ``requires_grad``
    and ``.grad`` of the model and head are restored on exit.

    Args:
        model: the masked model.
        head: the new head on top of ``model``'s output (None: ``model``'s output is the logits).
        train: ``(x, y)`` of the target problem's training split; ``val``: of its validation split.
        scores_of: returns the :class:`MaskScores` to train.
        epochs: search epochs.
        lr_mask: Adam learning rate of the scores; ``lr_head``: of the head.
        alpha: weight of ρ in the loss.
        flops_weight: weight of the kept FLOPs fraction (:meth:`MaskScores.flops`) in the loss: a
            channel's score is then pulled by the multiplications it removes, so the search prefers
            the channels that cost most (0: SeaM's loss; needs ``mask_scores(example_input=...)``).
        batch_size: examples per step.
        head_every: epochs ``0, k, 2k, …`` train only the head with their own Adam (the artifact's
            5-epoch cycle); the others train scores and head together with a second Adam. None: no
            head-only epochs (indirect reuse).
        reference_acc: the original model's validation accuracy (selection, :func:`select_epoch`).
        max_acc_drop: the selection's guard (:func:`select_epoch`; None: SeaM's rule unguarded).
        stop_removed: stop at the first epoch whose removed fraction ``1 − ρ`` reaches this and keep
            it (indirect reuse's prune threshold); otherwise the selection rule decides.
        head_params: the parameters the head phase trains (default: ``head``'s).
        seed: seed of the data order.
        device: where to run.
        progress: tqdm bar per epoch.
        checkpoint_dir: resumable state after every epoch (a later call with the same config resumes).
        desc: the progress bar's label.

    Returns:
        A :class:`SearchResult`.
    """
    scores: MaskScores = scores_of()
    dev = torch.device(device)
    hp = list(head_params) if head_params is not None else list(head.parameters() if head else [])
    roots = [model] + ([head] if head is not None else [])
    modules = [m for r in roots for m in r.modules()]

    def forward(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        return head(out) if head is not None else out

    x_tr, y_tr = train[0].to(dev), train[1].to(dev)
    n = len(y_tr)
    if n == 0:
        raise SafeReuseError("the target problem's training split is empty", fix="use more training data")
    steps = max(1, math.ceil(n / batch_size))
    score_params = scores.parameters()
    flops_kept = scores.flops_fraction()  # None: the layers' FLOPs are unknown
    if flops_weight and flops_kept is None:
        scores.flops()  # raises the one-line error
    opt_head = torch.optim.Adam(hp, lr=lr_head) if (head_every and hp) else None
    groups = [{"params": score_params, "lr": lr_mask}] + ([{"params": hp, "lr": lr_head}] if hp else [])
    opt_mask = torch.optim.Adam(groups)
    gen = torch.Generator().manual_seed(seed)
    history: list[dict[str, Any]] = []
    # only the best epoch so far is kept (not one copy per epoch): the rule is a total order
    ref = math.inf if stop_removed is not None else reference_acc
    best: tuple[int, dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None
    ckpt = _SearchCheckpoint(Path(checkpoint_dir), {
        "epochs": epochs, "lr_mask": lr_mask, "lr_head": lr_head, "alpha": alpha, "batch_size": batch_size,
        "head_every": head_every, "stop_removed": stop_removed, "seed": seed, "n": n,
        "scores": scores.describe(), "flops_weight": flops_weight, "max_acc_drop": max_acc_drop,
    }) if checkpoint_dir else None  # fmt: skip
    start = 0
    if ckpt is not None and ckpt.exists():
        start, history, best = ckpt.load(scores, hp, opt_head, opt_mask, gen, dev)
        if stop_removed is not None and history and 1.0 - history[-1]["rho"] >= stop_removed:
            start = epochs  # interrupted right after the stopping epoch was saved: nothing left to run
    t0 = time.perf_counter()
    with preserve_modes(*roots):  # modes and requires_grad of the model and head come back
        try:
            for p in hp:
                p.requires_grad_(True)
            bar = tqdm(range(start, epochs), desc=desc, unit="epoch", disable=not progress, leave=False)
            for epoch in bar:
                for m in modules:
                    m.train(not isinstance(m, _BN))
                head_only = bool(head_every) and epoch % head_every == 0 and opt_head is not None
                opt = opt_head if head_only else opt_mask
                for s in score_params:
                    s.requires_grad_(not head_only)
                perm = torch.randperm(n, generator=gen).to(dev)
                tot = torch.zeros((), device=dev)
                for i in range(steps):
                    idx = perm[i * batch_size : (i + 1) * batch_size]
                    loss = F.cross_entropy(forward(x_tr[idx]), y_tr[idx])
                    if not head_only:
                        loss = loss + alpha * scores.rho()
                        if flops_weight:
                            loss = loss + flops_weight * scores.flops()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    tot += loss.detach()
                for m in modules:
                    m.eval()
                acc = _accuracy(forward, val[0], val[1], 512, dev)
                rho = scores.kept_fraction()
                loss_v = float(tot) / steps
                if not math.isfinite(loss_v):
                    raise SafeReuseError(
                        f"the mask search diverged at epoch {epoch + 1}", fix="lower lr_mask"
                    )
                history.append({"epoch": epoch + 1, "phase": "head" if head_only else "mask", "loss": loss_v,
                                "val_acc": acc, "rho": rho})  # fmt: skip
                if flops_kept is not None:
                    history[-1]["flops"] = scores.flops_fraction()
                reached = stop_removed is not None and 1.0 - rho >= stop_removed
                i = len(history) - 1
                if (
                    reached
                    or best is None
                    or selection_key(history[i], ref, max_acc_drop)
                    < selection_key(history[best[0]], ref, max_acc_drop)
                ):
                    best = (
                        i,
                        {k: v.cpu() for k, v in scores.state().items()},
                        {str(j): p.detach().cpu().clone() for j, p in enumerate(hp)},
                    )
                bar.set_postfix(loss=f"{loss_v:.3f}", val=f"{acc:.3f}", kept=f"{rho:.3f}")
                if ckpt is not None:
                    ckpt.save(scores, hp, opt_head, opt_mask, gen, epoch + 1, history, best)
                if reached:
                    break
        finally:
            for s in score_params:
                s.grad = None
            for p in hp:
                p.grad = None
    if best is None:
        raise SafeReuseError("the mask search ran no epoch", fix="set epochs >= 1")
    chosen, score_state, head_snap = best
    scores.load(score_state)
    with torch.no_grad():
        for j, p in enumerate(hp):
            p.copy_(head_snap[str(j)].to(p.device))
    named = {}
    if head is not None:
        named = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
    rec = history[chosen]
    return SearchResult(
        masks=scores.masks(),
        head_state=named,
        epoch=int(rec["epoch"]),
        val_acc=float(rec["val_acc"]),
        rho=float(rec["rho"]),
        history=history,
        seconds=time.perf_counter() - t0,
        resumed_from=start,
        rule="stop" if stop_removed is not None else selection_rule(rec, ref, max_acc_drop),
    )


class _SearchCheckpoint:
    """Resumable search state (scores, head, both optimisers, RNG, the best epoch's masks) as safetensors +
    JSON, keyed by the search's config so a changed run restarts."""

    def __init__(self, folder: Path, cfg: dict[str, Any]) -> None:
        self.folder = folder
        self.key = config_hash(cfg)
        self.tensors = folder / "search_state.safetensors"
        self.meta = folder / "search_state.json"

    def exists(self) -> bool:
        try:
            return self.tensors.is_file() and json.loads(self.meta.read_text()).get("key") == self.key
        except (OSError, json.JSONDecodeError):
            return False

    @staticmethod
    def _opt_tensors(tag: str, opt: torch.optim.Optimizer | None, out: dict[str, torch.Tensor]) -> dict:
        if opt is None:
            return {}
        sd = opt.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for pid, st in sd["state"].items():
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    out[f"{tag}.{pid}.{k}"] = v.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(pid), {})[k] = v
        return scalars

    @staticmethod
    def _load_opt(tag: str, opt, tensors, scalars, dev) -> None:
        if opt is None:
            return
        sd = opt.state_dict()
        state: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith(tag + "."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v if name == "step" else v.to(dev)
        for pid, sc in scalars.items():
            state.setdefault(int(pid), {}).update(sc)
        sd["state"] = state
        opt.load_state_dict(sd)

    def save(self, scores, hp, opt_head, opt_mask, gen, epoch, history, best) -> None:
        t: dict[str, torch.Tensor] = {}
        for k, v in scores.state().items():
            t[f"score.{k}"] = v.cpu().contiguous()
        for j, p in enumerate(hp):
            t[f"head.{j}"] = p.detach().cpu().contiguous()
        best_i, s, h = best
        t.update({f"best.score.{k}": v.contiguous() for k, v in s.items()})
        t.update({f"best.head.{k}": v.contiguous() for k, v in h.items()})
        sc_h = self._opt_tensors("opt_head", opt_head, t)
        sc_m = self._opt_tensors("opt_mask", opt_mask, t)
        t["rng"] = gen.get_state()
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.tensors) as tmp:
            save_file(t, str(tmp))
        write_json_atomic(self.meta, {"key": self.key, "epoch": epoch, "history": history, "best": best_i,
                                      "opt_head": sc_h, "opt_mask": sc_m})  # fmt: skip

    def load(self, scores, hp, opt_head, opt_mask, gen, dev):
        meta = json.loads(self.meta.read_text())
        t = load_file(str(self.tensors))
        scores.load({k[6:]: v for k, v in t.items() if k.startswith("score.")})
        with torch.no_grad():
            for j, p in enumerate(hp):
                p.copy_(t[f"head.{j}"].to(p.device))
        best = (
            meta["best"],
            {k[11:]: v for k, v in t.items() if k.startswith("best.score.")},
            {k[10:]: v for k, v in t.items() if k.startswith("best.head.")},
        )
        self._load_opt("opt_head", opt_head, t, meta.get("opt_head", {}), dev)
        self._load_opt("opt_mask", opt_mask, t, meta.get("opt_mask", {}), dev)
        gen.set_state(t["rng"])
        return meta["epoch"], meta["history"], best

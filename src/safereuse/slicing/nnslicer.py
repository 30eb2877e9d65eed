"""NNSlicer: dynamic slicing of a neural network — which neurons and synapses made it decide.

Reference: Zhang, Li, Guo, Chen, Liu, "Dynamic Slicing for Deep Neural Networks", ESEC/FSE 2020
(spec: ``shared/specs/nnslicer.md``).

Three phases, each a per-layer tensor operation over the whole batch (no loop over neurons):

1. **Profile** (:meth:`Slicer.profile`): the mean ``ȳ_n`` of every neuron over the training set. A
   conv channel is one neuron (its feature map reduced by the mean); a Linear unit is one neuron.
2. **Forward analysis**: ``Δy_n(ξ) = y_n(ξ) − ȳ_n`` for every neuron on the path (``reference="zero"``:
   ``Δy = y``, EffectivePath-style).
3. **Backward analysis** from the criterion (``CONTRIB = 1`` on its neurons), following the model's
   real dataflow (a ``torch.fx`` trace, :mod:`.dataflow`). At a weighted neuron ``o`` (Conv / Linear)
   the term of input ``i`` is ``T_oi = w_oi Δx_i`` (conv: ``w_oi`` = kernel ``W[o, i]`` summed over
   space, so ``Δȳ_o ≈ Σ_i w_oi Δx̄_i``); the synapse contribution is
   ``S_oi = sign(CONTRIB_o · Δy_o · T_oi) ∈ {−1, 0, +1}`` and the input neuron collects
   ``CONTRIB_i = Σ_o S_oi``. **θ**: per neuron, the longest prefix of its terms sorted by ``|T|``
   whose cumulative sum stays below ``θ·|Δy_o|`` is dropped (terms tied with the first kept one are
   kept, so the result does not depend on the sort order).

Operators without weights route a neuron's contribution with its magnitude (the paper's neuron is
the weighted layer's output after its BN and activation): through an edge ``x → y`` with gain ``γ``,
``CONTRIB_x += CONTRIB_y · sign(γ · Δx · Δy)`` — ``+1`` when ``x`` moving the way it moved pushes
``y`` the way ``y`` moved. BatchNorm's gain is its scale, so a negative scale (``Δy = aΔx``) still
passes the contribution on unchanged and slicing is invariant to folding BN into the conv;
activations and pooling have ``γ = +1`` (an inactive channel, ``Δy = 0``, receives nothing); a
residual add passes to each addend; ``cat`` splits by channel; a flatten of a ``C×H×W`` map sums
its units back into channels. Contributions are signed (direction) and kept as absolute sums too.

A set of inputs is the sum of per-input contributions (``per_input=True`` keeps each).

Speed: ResNet-18 at 32 px, batch 256 — see ``benchmarks/bench_nnslicer.py`` /
``docs/results/nnslicer.md`` (the paper: 40 s per input batched, 550 s alone).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from ..device import model_device
from ..errors import SafeReuseError
from ..utils import analysis_mode, atomic_path, write_json_atomic
from .dataflow import Dataflow, Recorder, Step, describe, trace

Criterion = str | int | Sequence[int] | torch.Tensor
"""``"predicted"`` (each input's predicted class), an output class ``k``, a list of output
neurons, ``"penultimate"`` (every unit of the head's input), or a 1-d integer tensor with one class
per input (e.g. the true labels, or a class forced on every input)."""


def _as_inputs(inputs: Any) -> torch.Tensor:
    x = getattr(inputs, "x", inputs)
    if not isinstance(x, torch.Tensor):
        raise SafeReuseError(
            f"NNSlicer needs a tensor of inputs, got {type(inputs).__name__}",
            fix="pass a tensor [N, ...] or a data split",
        )
    if x.dim() == 0 or len(x) == 0:
        raise SafeReuseError("the input set is empty", fix="slice at least one input")
    return x


@dataclass
class SliceResult:
    """Contributions of every weighted layer's neurons and synapses to a slicing criterion.

    Attributes:
        layers: weighted layers (Conv / Linear module paths) in dataflow order.
        neuron: layer → signed contribution of each output neuron (channel / unit): ``[C_out]``
            summed over the inputs, or ``[N, C_out]`` with ``per_input``.
        neuron_abs: the same with ``|·|`` summed.
        synapse: layer → signed synapse contributions ``[C_out, C_in]`` (``C_in`` per group, as in
            the weight tensor), or ``[N, C_out, C_in]`` (int8, each in {−1, 0, 1}) with
            ``per_input``.
        synapse_abs: the same with ``|·|``.
        count: the number of inputs summed.
        per_input: whether the tensors keep one row per input.
        meta: θ, criterion, reference.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
        >>> r = Slicer(theta=0.0, reference="zero").slice(net, torch.ones(3, 2), criterion=0)
        >>> r.layers, r.count, tuple(r.synapse["0"].shape)
        (['0', '2'], 3, (2, 2))
    """

    layers: list[str]
    neuron: dict[str, torch.Tensor]
    neuron_abs: dict[str, torch.Tensor]
    synapse: dict[str, torch.Tensor]
    synapse_abs: dict[str, torch.Tensor]
    count: int
    per_input: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def vector(self) -> torch.Tensor:
        """All synapse contributions of each input, flattened: ``[N, D]`` float (``per_input`` only)."""
        if not self.per_input:
            raise SafeReuseError("vector() needs per-input contributions", fix="slice with per_input=True")
        return torch.cat([self.synapse[k].flatten(1).float() for k in self.layers], dim=1)

    def total(self) -> SliceResult:
        """The set result of a per-input result (its rows summed)."""
        if not self.per_input:
            return self

        def s(d: dict[str, torch.Tensor], absolute: bool = False) -> dict[str, torch.Tensor]:
            return {k: (v.abs() if absolute else v).float().sum(0) for k, v in d.items()}

        return SliceResult(
            list(self.layers),
            s(self.neuron),
            s(self.neuron, True),
            s(self.synapse),
            s(self.synapse, True),
            self.count,
            False,
            dict(self.meta),
        )

    def summary(self) -> dict[str, Any]:
        """Neurons / synapses in the slice (non-zero contribution on some input) per layer and overall."""
        t = self.total()
        layers: dict[str, Any] = {}
        for k in t.layers:
            n_abs, s_abs = t.neuron_abs[k], t.synapse_abs[k]
            layers[k] = {
                "neurons": int(n_abs.numel()),
                "neurons_in_slice": int((n_abs > 0).sum()),
                "synapses": int(s_abs.numel()),
                "synapses_in_slice": int((s_abs > 0).sum()),
            }
        tot = {
            key: sum(v[key] for v in layers.values())
            for key in ("neurons", "neurons_in_slice", "synapses", "synapses_in_slice")
        }
        return {
            "count": self.count,
            **self.meta,
            **tot,
            "fraction_neurons": tot["neurons_in_slice"] / max(1, tot["neurons"]),
            "fraction_synapses": tot["synapses_in_slice"] / max(1, tot["synapses"]),
            "layers": layers,
        }

    def save(self, path: str | Path) -> Path:
        """Write the tensors to ``path`` (safetensors) and the :meth:`summary` beside it (``.json``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        for kind in ("neuron", "neuron_abs", "synapse", "synapse_abs"):
            for k, v in getattr(self, kind).items():
                tensors[f"{kind}/{k}"] = v.detach().cpu().contiguous()
        head = {"layers": self.layers, "count": self.count, "per_input": self.per_input, "meta": self.meta}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"safereuse.slice": json.dumps(head)})
        write_json_atomic(path.with_suffix(".json"), self.summary())
        return path

    @classmethod
    def load(cls, path: str | Path) -> SliceResult:
        """Read a result written by :meth:`save`."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise SafeReuseError(f"no slice file {path}", fix="run `safereuse slice ... --out FILE` first")
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("safereuse.slice")
            if raw is None:
                raise SafeReuseError(
                    f"{path} is not a safereuse slice", fix="pass a file written by safereuse slice"
                )
            head = json.loads(raw)
            parts: dict[str, dict[str, torch.Tensor]] = {
                k: {} for k in ("neuron", "neuron_abs", "synapse", "synapse_abs")
            }
            for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                kind, _, layer = key.partition("/")
                parts[kind][layer] = f.get_tensor(key)
        return cls(
            head["layers"],
            parts["neuron"],
            parts["neuron_abs"],
            parts["synapse"],
            parts["synapse_abs"],
            int(head["count"]),
            bool(head["per_input"]),
            head["meta"],
        )


class Slicer:
    """NNSlicer (Zhang et al., FSE 2020): profile once, then slice sets of inputs.

    Args:
        theta: granularity θ ∈ [0, 1): per neuron, drop the weakest inputs whose summed ``|w Δx|``
            stays below ``θ·|Δy|`` (0 keeps every input; 0.3 is the unofficial port's default).
        reference: ``mean`` (Δ from the profiled mean, the paper) or ``zero`` (Δ = the raw value).
        chunk: elements of the ``[n, C_out, C_in]`` term tensor computed at once (memory bound).

    Attributes:
        means: fx node name → profiled mean of its neurons (``[C]``), after :meth:`profile`.
        profiled: how many inputs the profile averaged.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        ...                     nn.Linear(2, 3))
        >>> x = torch.rand(8, 1, 6, 6)
        >>> s = Slicer(theta=0.3).profile(net, x)
        >>> r = s.slice(net, x[:2], criterion="predicted")
        >>> r.count, float(r.neuron["4"].sum())  # the criterion neuron of each input counts 1
        (2, 2.0)
    """

    def __init__(
        self, theta: float = 0.3, reference: Literal["mean", "zero"] = "mean", chunk: int = 1 << 22
    ) -> None:
        if not isinstance(theta, (int, float)) or not 0.0 <= float(theta) < 1.0:
            raise SafeReuseError(
                f"theta={theta!r} is outside [0, 1)", fix="choose θ with 0 ≤ θ < 1, e.g. 0.3"
            )
        if reference not in ("mean", "zero"):
            raise SafeReuseError(f"reference={reference!r} is unknown", fix="use mean or zero")
        self.theta = float(theta)
        self.reference = reference
        self.chunk = int(chunk)
        self.means: dict[str, torch.Tensor] = {}
        self.profiled = 0

    # -- phase 1 -------------------------------------------------------------------------------
    def profile(self, model: nn.Module, inputs: Any, batch_size: int = 256, progress: bool = False) -> Slicer:
        """Average every neuron on the dataflow over ``inputs`` (the training set).

        Args:
            model: any traceable ``nn.Module`` (left as it was: flags restored, nothing registered).
            inputs: a tensor ``[N, ...]`` or a data split (its ``.x``).
            batch_size: inputs per forward pass.
            progress: show a progress bar.

        Returns:
            ``self`` (``means`` filled).
        """
        x = _as_inputs(inputs)
        dev = model_device(model)
        with analysis_mode(model):
            graph = trace(model)
            flow = Dataflow.build(model, graph)
            sums: dict[str, torch.Tensor] = {}
            for s in tqdm(range(0, len(x), batch_size), desc="profile", disable=not progress, leave=False):
                rec = Recorder(model, graph, flow.needed, flow.rules)
                rec.run(x[s : s + batch_size].to(dev))
                for k, v in rec.views.items():
                    sums[k] = sums.get(k, 0) + v.double().sum(0)
        self.means = {k: (v / len(x)).float().cpu() for k, v in sums.items()}
        self.profiled = len(x)
        return self

    # -- phases 2 and 3 ------------------------------------------------------------------------
    def slice(
        self,
        model: nn.Module,
        inputs: Any,
        criterion: Criterion = "predicted",
        per_input: bool = False,
        batch_size: int = 256,
        progress: bool = False,
    ) -> SliceResult:
        """Contributions of ``model``'s neurons and synapses to ``criterion`` on ``inputs``.

        Args:
            model: the model :meth:`profile` saw (any traceable ``nn.Module``).
            inputs: a tensor ``[N, ...]`` or a data split.
            criterion: ``"predicted"``, a class ``k``, a list of output neurons, ``"penultimate"``,
                or a 1-d integer tensor of one class per input.
            per_input: keep one row per input (else sums over the set).
            batch_size: inputs per batch (memory is flat in the set size when ``per_input`` is False).
            progress: show a progress bar.

        Returns:
            A :class:`SliceResult`.

        Raises:
            SafeReuseError: empty input, bad criterion, no profile, untraceable model, an operator
                without a rule.
        """
        x = _as_inputs(inputs)
        crit = self._criterion(criterion)
        if isinstance(crit, torch.Tensor) and len(crit) != len(x):
            raise SafeReuseError(
                f"{len(crit)} criterion classes for {len(x)} inputs", fix="give one class per input"
            )
        if self.reference == "mean" and not self.means:
            raise SafeReuseError(
                "Slicer.slice before Slicer.profile",
                fix="call profile(model, training_inputs) first, or reference='zero'",
            )
        dev = model_device(model)
        acc: dict[str, dict[str, Any]] = {k: {} for k in ("neuron", "neuron_abs", "synapse", "synapse_abs")}
        rows: dict[str, dict[str, list[torch.Tensor]]] = {"neuron": {}, "synapse": {}}
        layers: list[str] = []
        with analysis_mode(model):
            graph = trace(model)
            flow = Dataflow.build(model, graph, penultimate=isinstance(crit, str) and crit == "penultimate")
            wred = {
                s.layer: s.module.weight.detach().float().flatten(2).sum(2)
                if s.module.weight.dim() > 2  # type: ignore[union-attr]
                else s.module.weight.detach().float()  # type: ignore[union-attr]
                for s in flow.steps
                if s.rule == "weighted"
            }
            for s in tqdm(range(0, len(x), batch_size), desc="slice", disable=not progress, leave=False):
                rec = Recorder(model, graph, flow.needed, flow.rules)
                rec.run(x[s : s + batch_size].to(dev))
                part = crit[s : s + batch_size] if isinstance(crit, torch.Tensor) else crit
                neuron, synapse = self._walk(model, flow, rec, part, wred, per_input)
                for k in neuron:  # noqa: PLC0206 - keys only
                    if k not in layers:
                        layers.append(k)
                for k, g in neuron.items():
                    if per_input:
                        rows["neuron"].setdefault(k, []).append(g.cpu())
                        rows["synapse"].setdefault(k, []).append(synapse[k].cpu())
                    _acc(acc["neuron"], k, g.sum(0))
                    _acc(acc["neuron_abs"], k, g.abs().sum(0))
                    _acc(acc["synapse"], k, synapse[k + "\0sum"])
                    _acc(acc["synapse_abs"], k, synapse[k + "\0abs"])
        layers = [s.layer for s in flow.steps if s.layer in layers]  # type: ignore[misc]
        layers = list(dict.fromkeys(layers))
        meta = {"theta": self.theta, "reference": self.reference, "criterion": _crit_name(criterion)}
        if per_input:
            neuron = {k: torch.cat(rows["neuron"][k]) for k in layers}
            syn = {k: torch.cat(rows["synapse"][k]) for k in layers}
            return SliceResult(
                layers,
                neuron,
                {k: v.abs() for k, v in neuron.items()},
                syn,
                {k: v.abs() for k, v in syn.items()},
                len(x),
                True,
                meta,
            )
        return SliceResult(
            layers,
            *(
                {k: v.cpu() for k, v in acc[p].items()}
                for p in ("neuron", "neuron_abs", "synapse", "synapse_abs")
            ),
            len(x),
            False,
            meta,
        )  # type: ignore[call-arg]

    # -- internals -----------------------------------------------------------------------------
    @staticmethod
    def _criterion(c: Criterion) -> Criterion:
        if isinstance(c, torch.Tensor):
            if c.dim() != 1 or c.dtype.is_floating_point or c.dtype == torch.bool:
                raise SafeReuseError(
                    f"a criterion tensor must be 1-d integer class ids, got {tuple(c.shape)} {c.dtype}",
                    fix="pass one class id per input, e.g. the labels",
                )
            return c.long().cpu()
        if isinstance(c, str):
            if c in ("predicted", "penultimate"):
                return c
            raise SafeReuseError(
                f"unknown criterion {c!r}", fix="use predicted, penultimate, a class id or a list of ids"
            )
        if isinstance(c, bool):
            raise SafeReuseError(
                f"unknown criterion {c!r}", fix="use predicted, penultimate, a class id or a list of ids"
            )
        if isinstance(c, int):
            return [c]
        ids = list(c)
        if not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise SafeReuseError(f"criterion {c!r} names no output neuron", fix="give class ids, e.g. [0, 3]")
        return ids

    def _delta(self, name: str, view: torch.Tensor) -> torch.Tensor:
        if self.reference == "zero":
            return view
        m = self.means.get(name)
        if m is None or m.shape[0] != view.shape[1]:
            raise SafeReuseError(
                f"the profile has no neuron means for node {name} of this model",
                fix="profile the same model (Slicer.profile) before slicing it",
            )
        return view - m.to(view.device)

    def _walk(
        self,
        model: nn.Module,
        flow: Dataflow,
        rec: Recorder,
        crit: Criterion,
        wred: dict[str | None, torch.Tensor],
        rows: bool,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        views = rec.views
        delta = {k: self._delta(k, v) for k, v in views.items()}
        out = views.get(flow.criterion)
        if out is None or len(rec.shapes[flow.criterion]) != 2:
            raise SafeReuseError(
                f"the criterion node {flow.criterion} is not a [N, K] tensor",
                fix="slice a classifier returning logits [N, K]",
            )
        g0 = torch.zeros_like(out)
        if isinstance(crit, str) and crit == "predicted":
            g0[torch.arange(len(out)), out.argmax(1)] = 1.0
        elif isinstance(crit, torch.Tensor):
            if len(crit) and not 0 <= int(crit.min()) <= int(crit.max()) < out.shape[1]:
                raise SafeReuseError(
                    f"criterion classes {int(crit.min())}..{int(crit.max())} fall outside the model's "
                    f"{out.shape[1]} outputs",
                    fix=f"choose classes in 0..{out.shape[1] - 1}",
                )
            g0[torch.arange(len(out)), crit.to(out.device)] = 1.0
        elif crit == "penultimate":
            g0.fill_(1.0)
        else:
            bad = [i for i in crit if not 0 <= i < out.shape[1]]  # type: ignore[union-attr]
            if bad:
                raise SafeReuseError(
                    f"criterion class {bad[0]} does not exist (the model has {out.shape[1]} outputs)",
                    fix=f"choose a class in 0..{out.shape[1] - 1}",
                )
            g0[:, list(crit)] = 1.0  # type: ignore[arg-type]
        contrib: dict[str, torch.Tensor] = {flow.criterion: g0}
        neuron: dict[str, torch.Tensor] = {}
        synapse: dict[str, torch.Tensor] = {}
        for step in reversed(flow.steps):
            g = contrib.pop(step.name, None)
            if g is None or step.name not in delta:
                continue
            dy = delta[step.name]
            for x, gx in self._route(model, step, g, dy, delta, rec, wred, neuron, synapse, rows):
                if x in flow.receive:
                    contrib[x] = contrib[x] + gx if x in contrib else gx
        return neuron, synapse

    def _route(
        self,
        model: nn.Module,
        step: Step,
        g: torch.Tensor,
        dy: torch.Tensor,
        delta: dict[str, torch.Tensor],
        rec: Recorder,
        wred: dict[str | None, torch.Tensor],
        neuron: dict[str, torch.Tensor],
        synapse: dict[str, torch.Tensor],
        rows: bool,
    ) -> list[tuple[str, torch.Tensor]]:
        """``(input node, contribution it receives)`` pairs of one step (records weighted layers)."""
        rule, node = step.rule, step.node
        ins = [a for a in step.inputs if a in delta]

        def bad(why: str) -> SafeReuseError:
            return SafeReuseError(
                f"NNSlicer cannot route {describe(node, model)} (node {node.name}): {why}",
                fix="slice a model built from conv/BN/activation/pool/add/cat/flatten operators",
            )

        def same(dx: torch.Tensor) -> None:
            if dx.shape != dy.shape:
                raise bad(f"{tuple(dx.shape[1:])} neurons in, {tuple(dy.shape[1:])} out")

        if rule == "weighted":
            if not ins:
                raise bad("its input is not a traced tensor")
            x = ins[0]
            layer = step.layer or ""
            rows, ssum, sabs, gx = self._weighted(
                step, g, dy, delta[x], rec.shapes[x], wred[layer], bad, rows
            )
            _acc(neuron, layer, g)  # a layer called twice (shared weights): its calls are summed
            _acc(synapse, layer + "\0sum", ssum)
            _acc(synapse, layer + "\0abs", sabs)
            if rows is not None:
                _acc(synapse, layer, rows.to(torch.int16) if layer in synapse else rows)
            return [(x, gx)]
        if rule in ("bn", "act", "pool", "identity"):
            x = ins[0]
            dx = delta[x]
            same(dx)
            gain: torch.Tensor | float = 1.0
            if rule == "bn" and getattr(step.module, "weight", None) is not None:
                gain = torch.sign(step.module.weight.detach().float()).to(dx.device)  # type: ignore[union-attr]
            return [(x, g * torch.sign(gain * dx * dy))]
        if rule == "reshape":
            x = ins[0]
            dx, shape = delta[x], rec.shapes[x]
            if dx.shape == dy.shape:
                return [(x, g * torch.sign(dx * dy))]
            hw = 1
            for d in shape[2:]:
                hw *= d
            if (
                len(shape) > 2
                and dy.dim() == 2
                and len(rec.shapes[node.name]) == 2
                and dy.shape[1] == dx.shape[1] * hw
            ):
                n, c = dx.shape
                agree = torch.sign(dy.view(n, c, hw) * dx[:, :, None])
                return [(x, (g.view(n, c, hw) * agree).sum(2))]
            raise bad(f"reshapes {tuple(shape[1:])} to {rec.shapes[node.name][1:]}")
        if rule in ("add", "sub"):
            args = list(node.args)
            res = []
            for j, a in enumerate(args[:2]):
                name = getattr(a, "name", None)
                if name not in delta:
                    continue
                dx = delta[name]
                same(dx)
                sign = -1.0 if rule == "sub" and j == 1 else 1.0
                res.append((name, g * torch.sign(sign * dx * dy)))
            return res
        if rule == "scale":
            if len(ins) != 1:
                raise bad("a product of two activations has no NNSlicer rule")
            x = ins[0]
            args = list(node.args)
            other = [a for a in args[:2] if getattr(a, "name", None) != x]
            if len(other) != 1 or not isinstance(other[0], (int, float)) or isinstance(other[0], bool):
                raise bad("only multiplication / division by a number has a rule")
            name = str(getattr(node.target, "__name__", node.target))
            if name in ("truediv", "div", "div_", "itruediv") and getattr(args[0], "name", None) != x:
                raise bad("dividing by an activation has no rule")
            dx = delta[x]
            same(dx)
            return [(x, g * torch.sign(float(other[0]) * dx * dy))]
        if rule == "cat":
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            nd = len(rec.shapes[node.name])
            if dim not in (1, 1 - nd):
                raise bad(f"concatenation along dim {dim} (only channels, dim 1, has a rule)")
            parts = [getattr(a, "name", None) for a in node.args[0]]  # type: ignore[union-attr]
            if any(p not in delta for p in parts):
                raise bad("a concatenated part is not a traced activation")
            sizes = [delta[p].shape[1] for p in parts]
            if sum(sizes) != dy.shape[1]:
                raise bad("channel counts do not add up")
            res = []
            for p, gp, dyp in zip(parts, g.split(sizes, 1), dy.split(sizes, 1), strict=True):
                res.append((p, gp * torch.sign(delta[p] * dyp)))
            return res
        raise bad("no rule")

    def _weighted(
        self,
        step: Step,
        g: torch.Tensor,
        dy: torch.Tensor,
        dx: torch.Tensor,
        xshape: tuple[int, ...],
        w: torch.Tensor,
        bad: Any,
        rows: bool,
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One weighted layer: ``(per-input synapses [N, C_out, C_in] int8 or None, their signed sum,
        their absolute sum, what each input neuron receives [N, C_in])``."""
        mod = step.module
        c_out, cin = w.shape
        groups = int(getattr(mod, "groups", 1))
        if isinstance(mod, nn.Linear) and len(xshape) != 2:
            raise bad(f"a Linear on a {len(xshape)}-d input (only [N, features] has a rule)")
        if dx.shape[1] != cin * groups:
            raise bad(f"{dx.shape[1]} input neurons for a weight of {cin * groups}")
        w = w.to(dx.device)
        sgn = torch.sign(g * dy)  # [N, C_out]: the consumer's side of sign(CONTRIB · Δy · w Δx)
        if self.theta == 0.0 and groups == 1 and not rows:
            # S[n,o,i] = sgn[n,o]·sign(w[o,i])·sign(Δx[n,i]) factorises: both sums are matmuls
            sw, sx = torch.sign(w), torch.sign(dx)
            return None, sw * (sgn.T @ sx), sw.abs() * (sgn.abs().T @ sx.abs()), sx * (sgn @ sw)
        idx = None
        if groups > 1:
            idx = (torch.arange(c_out, device=dx.device) // (c_out // groups))[:, None] * cin + torch.arange(
                cin, device=dx.device
            )
        n = len(dx)
        per = max(1, self.chunk // max(1, c_out * cin))
        out: list[torch.Tensor] = []
        ssum = torch.zeros(c_out, cin, device=dx.device)
        sabs = torch.zeros(c_out, cin, device=dx.device)
        gx = torch.zeros(n, cin * groups, device=dx.device)
        sw, wabs = torch.sign(w), w.abs()
        for s in range(0, n, per):
            dxs = dx[s : s + per]
            xg = dxs[:, idx] if idx is not None else dxs[:, None, :]
            sy = sw * torch.sign(xg)  # sign(w Δx): [n, C_out, C_in]
            sy.mul_(sgn[s : s + per, :, None])
            if self.theta > 0.0:
                a = wabs * xg.abs()
                sy.mul_(a >= self._threshold(a, self.theta * dy[s : s + per].abs()[..., None]))
            ssum += sy.sum(0)
            if idx is None:
                gx[s : s + per] = sy.sum(1)
            else:
                gx[s : s + per].index_add_(1, idx.flatten(), sy.flatten(1))
            if rows:
                out.append(sy.to(torch.int8))
            sabs += sy.abs_().sum(0)
        return (torch.cat(out) if rows else None), ssum, sabs, gx

    @staticmethod
    def _threshold(a: torch.Tensor, cut: torch.Tensor) -> torch.Tensor:
        """θ's prefix rule: per row of ``a = |w Δx|`` ([n, C_out, C_in]), drop the longest prefix of
        the sorted terms whose cumulative sum stays below ``cut = θ|Δy|`` ([n, C_out, 1]).

        Returns the first kept value per row (``[n, C_out, 1]``; ``inf`` when the whole row is
        dropped): a term is kept iff ``a >= threshold``, so terms tied with the first kept one are
        kept and the result does not depend on the sort order. ``cut = 0`` keeps every term.
        """
        cin = a.shape[-1]
        srt = _sort_rows(a.reshape(-1, cin))
        k = _prefix_count(srt, cut.reshape(-1, 1))
        th = srt.gather(-1, k.clamp(max=cin - 1))
        th = torch.where(k < cin, th, torch.full_like(th, float("inf")))
        return th.view(cut.shape)


def _sort_rows(rows: torch.Tensor) -> torch.Tensor:
    """Each row of ``rows`` sorted ascending (values only).

    On the CPU numpy's sort (vectorised with AVX-512 where the CPU has it) is about 20× faster than
    ``torch.sort``, which also builds an index tensor the θ rule never reads; rows are split over
    torch's thread count (numpy releases the GIL while it sorts).
    """
    if rows.device.type != "cpu":
        return rows.sort(-1).values
    arr = rows.detach().contiguous().numpy()
    out = np.empty_like(arr)
    parts = min(torch.get_num_threads(), max(1, len(arr) // 2048))
    bounds = np.linspace(0, len(arr), parts + 1).astype(int).tolist()

    def work(lo: int, hi: int) -> None:
        out[lo:hi] = np.sort(arr[lo:hi], axis=-1)

    if parts == 1:
        work(0, len(arr))
    else:
        with ThreadPoolExecutor(parts) as pool:
            list(pool.map(work, bounds[:-1], bounds[1:]))
    return torch.from_numpy(out)


def _prefix_count(srt: torch.Tensor, cut: torch.Tensor, block: int = 32) -> torch.Tensor:
    """Per row of ascending ``srt`` ([R, C]), how many prefix sums stay below ``cut`` ([R, 1]).

    A row-wise running sum is a sequential scan (the slowest step of the θ rule); instead the rows
    are summed in blocks, the crossing block is found from the blocks' running ends, and only that
    block is scanned. Running sums are in float64 (a block's own sum in float32).
    """
    r, c = srt.shape
    nb = -(-c // block)
    if nb * block != c:  # padded with +inf: never below a cut
        srt = torch.nn.functional.pad(srt, (0, nb * block - c), value=float("inf"))
    blocks = srt.view(r, nb, block)
    cut = cut.to(torch.float64)
    ends = blocks.sum(-1).to(torch.float64).cumsum(-1)  # prefix sum at each block's end
    jb = (ends < cut).sum(-1, keepdim=True)  # whole blocks below the cut
    base = torch.where(jb > 0, ends.gather(-1, (jb - 1).clamp(min=0)), torch.zeros_like(cut))
    inside = blocks.gather(1, jb.clamp(max=nb - 1)[..., None].expand(r, 1, block)).squeeze(1)
    kin = (inside.to(torch.float64).cumsum(-1) + base < cut).sum(-1, keepdim=True)
    return torch.where(jb < nb, jb * block + kin, torch.full_like(jb, c)).clamp(max=c)


def _acc(d: dict[str, Any], k: str, v: torch.Tensor) -> None:
    d[k] = d[k] + v if k in d else v


def _crit_name(c: Criterion) -> Any:
    if isinstance(c, torch.Tensor):
        return "per-input"
    return c if isinstance(c, (str, int)) else list(c)

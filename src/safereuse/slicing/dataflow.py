"""A model's real dataflow at neuron level, for NNSlicer's backward walk (:mod:`.nnslicer`).

:func:`trace` turns any ``nn.Module`` into a ``torch.fx`` graph (every ``torch.nn`` layer stays one
node); :class:`Dataflow` gives each node that lies between a weighted layer (Conv / Linear) and the
slicing criterion a *rule* saying how contributions pass through it; :class:`Recorder` runs the graph
on a batch and keeps, for the nodes the walk needs, only the *neuron view* of their output: the
channel mean (``[N, C]``) of a feature map, the units (``[N, D]``) of a vector.

Rules (see :mod:`.nnslicer` for the arithmetic): ``weighted`` (Conv1d/2d/3d incl. grouped and
depthwise, Linear), ``bn`` (BatchNorm: per channel, gain = the sign of its scale), ``act``
(monotone elementwise activations), ``pool`` (max / average / adaptive pooling and spatial means:
channel-preserving), ``identity`` (dropout, Identity, contiguous...), ``reshape`` (flatten / view /
reshape), ``add`` / ``sub`` (to each operand), ``scale`` (multiplication / division by a number),
``cat`` (split by channel) and ``meta`` (shape queries: not data). Nothing else passes: a node on the
path without a rule raises :class:`~safereuse.errors.SafeReuseError` naming the operator.

The graph is run by a ``torch.fx.Interpreter`` on the original model (no ``GraphModule`` is built,
so models whose submodule paths plain ``getattr`` cannot reach — a ``features`` trunk next to the
contract's ``features()`` method — work too); nothing is registered on the model.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

from ..errors import SafeReuseError

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# monotone non-decreasing (GELU / SiLU / Mish dip slightly below zero: treated as monotone)
_ACT_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Mish,
    nn.Softplus,
)
_POOL_MODULES = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
_IDENTITY_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)
_ACT_FUNCS = {
    F.relu,
    torch.relu,
    F.relu_,
    torch.relu_,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.selu,
    F.gelu,
    F.silu,
    torch.sigmoid,
    F.sigmoid,
    torch.tanh,
    F.tanh,
    F.hardswish,
    F.hardsigmoid,
    F.hardtanh,
    F.mish,
    F.softplus,
}
_POOL_FUNCS = {
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
    F.adaptive_max_pool3d,
    torch.mean,
}
_IDENTITY_FUNCS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, torch.clone}
_FUNCS: dict[Any, str] = {
    **dict.fromkeys(_ACT_FUNCS, "act"),
    **dict.fromkeys(_POOL_FUNCS, "pool"),
    **dict.fromkeys(_IDENTITY_FUNCS, "identity"),
    torch.flatten: "reshape",
    torch.reshape: "reshape",
    operator.add: "add",
    operator.iadd: "add",
    torch.add: "add",
    operator.sub: "sub",
    operator.isub: "sub",
    torch.sub: "sub",
    operator.mul: "scale",
    operator.imul: "scale",
    torch.mul: "scale",
    operator.truediv: "scale",
    operator.itruediv: "scale",
    torch.div: "scale",
    torch.cat: "cat",
    torch.concat: "cat",
    operator.getitem: "meta",
}
_METHODS: dict[str, str] = {
    **dict.fromkeys(["relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_"], "act"),
    **dict.fromkeys(["view", "reshape", "flatten"], "reshape"),
    **dict.fromkeys(["contiguous", "clone", "float", "to"], "identity"),
    **dict.fromkeys(["add", "add_"], "add"),
    **dict.fromkeys(["sub", "sub_"], "sub"),
    **dict.fromkeys(["mul", "mul_", "div", "div_"], "scale"),
    "mean": "pool",
    **dict.fromkeys(["size", "dim", "numel"], "meta"),
}


def trace(model: nn.Module) -> fx.Graph:
    """The ``torch.fx`` graph of ``model.forward`` (``torch.nn`` layers are single nodes).

    Raises:
        SafeReuseError: the model cannot be traced (data-dependent control flow, ...).

    Example:
        >>> g = trace(nn.Sequential(nn.Linear(2, 3), nn.ReLU()))
        >>> [n.op for n in g.nodes]
        ['placeholder', 'call_module', 'call_module', 'output']
    """
    try:
        return fx.Tracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure is the same user-facing problem
        msg = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise SafeReuseError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(exc).__name__}: {msg})",
            fix="NNSlicer follows the traced dataflow; remove data-dependent control flow from forward()",
        ) from None


def describe(node: fx.Node, model: nn.Module) -> str:
    """A readable name of the operator a node runs (``Conv2d layer1.0.conv1``, ``torch.mul``...)."""
    if node.op == "call_module":
        return f"{type(model.get_submodule(str(node.target))).__name__} {node.target}"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    t = node.target
    mod = getattr(t, "__module__", None) or ""
    name = getattr(t, "__name__", str(t))
    if mod in ("_operator", "operator"):
        return f"operator.{name}"
    return f"{mod.replace('torch.nn.functional', 'F').replace('torch._C._nn', 'F')}.{name}".lstrip(".")


def _rule(node: fx.Node, model: nn.Module) -> str | None:
    if node.op == "call_module":
        mod = model.get_submodule(str(node.target))
        if isinstance(mod, WEIGHTED):
            return "weighted"
        if isinstance(mod, _BN):
            return "bn"
        if isinstance(mod, _ACT_MODULES):
            return "act"
        if isinstance(mod, _POOL_MODULES):
            return "pool"
        if isinstance(mod, _IDENTITY_MODULES):
            return "identity"
        if isinstance(mod, nn.Flatten):
            return "reshape"
        return None
    if node.op == "call_function":
        try:
            return _FUNCS.get(node.target)
        except TypeError:  # unhashable target
            return None
    if node.op == "call_method":
        return _METHODS.get(str(node.target))
    return None


def _node_args(args: Iterable[Any]) -> list[fx.Node]:
    out: list[fx.Node] = []
    for a in args:
        if isinstance(a, fx.Node):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(_node_args(a))
        elif isinstance(a, dict):
            out.extend(_node_args(a.values()))
    return out


@dataclass
class Step:
    """One node of the backward walk.

    Attributes:
        name: the fx node name (the key of its neuron view).
        rule: how contributions pass (see the module docstring).
        node: the fx node.
        inputs: data-carrying argument nodes, in argument order.
        layer: the module path of a weighted layer (else None).
        module: the called module (else None).
    """

    name: str
    rule: str
    node: fx.Node
    inputs: list[str]
    layer: str | None = None
    module: nn.Module | None = None


@dataclass
class Dataflow:
    """The part of a traced model between its weighted layers and a criterion node.

    Attributes:
        graph: the fx graph.
        criterion: name of the criterion node (the logits, or the head's input for ``penultimate``).
        steps: the nodes whose contributions the walk computes, in graph (topological) order.
        receive: nodes that may receive contributions (descendants of a weighted layer).
        needed: nodes whose neuron views the walk reads.
        head: module path of the final weighted layer feeding the criterion (None if none).
    """

    graph: fx.Graph
    criterion: str
    steps: list[Step]
    receive: set[str]
    needed: set[str]
    head: str | None = None
    rules: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def build(cls, model: nn.Module, graph: fx.Graph, penultimate: bool = False) -> Dataflow:
        """Plan the walk of ``model`` (traced as ``graph``) back from its output or its head's input.

        Raises:
            SafeReuseError: no single output tensor, no weighted layer, or no head for ``penultimate``.
        """
        nodes = list(graph.nodes)
        outs = [n for n in nodes if n.op == "output"]
        res = outs[0].args[0] if outs else None
        if not isinstance(res, fx.Node):
            raise SafeReuseError(
                f"{type(model).__name__}.forward returns {type(res).__name__}, not one tensor",
                fix="slice a model whose forward returns the logits tensor",
            )
        weighted = [n for n in nodes if n.op == "call_module" and _rule(n, model) == "weighted"]
        if not weighted:
            raise SafeReuseError(
                f"{type(model).__name__} has no Conv or Linear layer on its dataflow",
                fix="NNSlicer slices models built from nn.Conv*d / nn.Linear layers",
            )
        crit, head = res, None
        # the head: the last weighted layer upstream of the output
        up = _ancestors(res)
        feeding = [n for n in weighted if n.name in up]
        if feeding:
            head = str(feeding[-1].target)
        if penultimate:
            head_name = getattr(model, "head_name", None)
            cands = [n for n in feeding if head_name is not None and n.target == head_name] or feeding[-1:]
            if not cands:
                raise SafeReuseError(
                    "the model has no head layer feeding its output", fix="use criterion=predicted"
                )
            src = cands[-1].args[0]
            if not isinstance(src, fx.Node):
                raise SafeReuseError("the head's input is not a traced tensor", fix="use criterion=predicted")
            crit = src
        anc = _ancestors(crit)
        receive: set[str] = set()
        for n in nodes:
            if n.name in receive or (n.op == "call_module" and _rule(n, model) == "weighted"):
                receive.update(u.name for u in n.users)
                receive.add(n.name)
        steps: list[Step] = []
        needed: set[str] = {crit.name}
        rules: dict[str, str | None] = {}
        for n in nodes:
            if n.name not in anc or n.op in ("placeholder", "get_attr", "output"):
                continue
            rule = _rule(n, model)
            if n.name not in receive and rule != "weighted":
                continue
            rules[n.name] = rule
            ins = [a.name for a in _node_args(n.args) + _node_args(n.kwargs.values())]
            if rule == "weighted":
                first = n.args[0]
                ins = [first.name] if isinstance(first, fx.Node) else []
            mod = model.get_submodule(str(n.target)) if n.op == "call_module" else None
            layer = str(n.target) if rule == "weighted" else None
            steps.append(Step(n.name, rule or "", n, ins, layer, mod))
            needed.add(n.name)
            needed.update(ins)
        return cls(graph, crit.name, steps, receive, needed, head, rules)


def _ancestors(node: fx.Node) -> set[str]:
    seen: set[str] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n.name in seen:
            continue
        seen.add(n.name)
        stack.extend(n.all_input_nodes)
    return seen


class Recorder(fx.Interpreter):
    """Runs a traced graph on ``model`` and keeps the neuron views of the ``needed`` nodes.

    After :meth:`run`: ``views[name]`` is ``[N, C]`` (channel means of a feature map, or the units
    of a vector, float32, detached) and ``shapes[name]`` the node's full output shape.
    ``check`` (node name → rule or None) makes a data-carrying node on the path without a rule an
    error naming its operator.
    """

    def __init__(
        self, model: nn.Module, graph: fx.Graph, needed: set[str], check: dict[str, str | None] | None = None
    ) -> None:
        super().__init__(model, garbage_collect_values=True, graph=graph)
        self.model = model
        self.needed = needed
        self.check = check or {}
        self.views: dict[str, torch.Tensor] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}

    def fetch_attr(self, target: str) -> Any:
        # nn.Module.get_submodule first: ReusableModel resolves ``features.*`` that getattr cannot
        try:
            return self.model.get_submodule(target)
        except AttributeError:
            owner, _, leaf = target.rpartition(".")
            return getattr(self.model.get_submodule(owner) if owner else self.model, leaf)

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n.name in self.needed and isinstance(out, torch.Tensor) and out.dim() >= 2:
            if n.name in self.check and self.check[n.name] in (None, "meta"):
                raise SafeReuseError(
                    f"NNSlicer has no rule for operator {describe(n, self.model)} (node {n.name})",
                    fix="slice a model built from conv/linear/BN/activation/pool/add/cat/flatten operators",
                )
            o = out.detach().float()
            self.views[n.name] = o.mean(dim=tuple(range(2, o.dim()))) if o.dim() > 2 else o.clone()
            self.shapes[n.name] = tuple(out.shape)
        return out

"""The model contract every method in safereuse relies on.

A :class:`ReusableModel` takes images in ``[0, 1]`` pixel space (it applies its own normalisation, so
attacks, triggers and ε are always expressed in pixels) and exposes:

- ``features(x)`` — the penultimate vector (input of the classifier head);
- ``head`` / ``head_name`` — the final ``nn.Linear`` and its dotted path;
- ``reset_head(n)`` — a fresh head with ``n`` outputs;
- ``blocks()`` — ordered ``(name, module)`` pairs from input to head, for "fine-tune the last k";
- ``residual_blocks()`` — the modules computing ``act(shortcut(x) + F(x))`` (CARTL's convex
  residuals); found by tracing by default (:func:`find_residual_blocks`), or declared by overriding;
- ``input_spec`` — channels, size, normalisation.

Normalisation constants are non-persistent buffers, so ``state_dict()`` keys stay identical to
torchvision's for the architectures torchvision has.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import SafeReuseError
from .capture import capture


@dataclass(frozen=True)
class InputSpec:
    """What a model expects as input: ``[N, channels, *size]`` floats in ``pixel_range``.

    ``mean``/``std`` are applied inside the model (per channel).
    """

    channels: int = 1
    size: tuple[int, int] = (28, 28)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    pixel_range: tuple[float, float] = (0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        return cls(
            channels=int(d["channels"]),
            size=tuple(d["size"]),  # type: ignore[arg-type]
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            pixel_range=tuple(d.get("pixel_range", (0.0, 1.0))),  # type: ignore[arg-type]
        )

    def with_stats(self, mean: tuple[float, ...], std: tuple[float, ...]) -> InputSpec:
        return InputSpec(self.channels, self.size, tuple(mean), tuple(std), self.pixel_range)

    @classmethod
    def neutral(cls, in_channels: int, image_size: int) -> InputSpec:
        """A square input normalised with mean 0.5 / std 0.5 per channel (the small architectures'
        default, until ``set_normalization`` puts the training data's statistics in).

        Example:
            >>> InputSpec.neutral(1, 28)
            InputSpec(channels=1, size=(28, 28), mean=(0.5,), std=(0.5,), pixel_range=(0.0, 1.0))
        """
        return cls(in_channels, (image_size, image_size), (0.5,) * in_channels, (0.5,) * in_channels)

    @classmethod
    def imagenet(cls, in_channels: int, image_size: int) -> InputSpec:
        """The ImageNet statistics for RGB input (torchvision's layouts), :meth:`neutral` otherwise.

        Example:
            >>> InputSpec.imagenet(3, 224).mean == IMAGENET_MEAN, InputSpec.imagenet(1, 28).mean
            (True, (0.5,))
        """
        if in_channels == 3:
            return cls(3, (image_size, image_size), IMAGENET_MEAN, IMAGENET_STD)
        return cls.neutral(in_channels, image_size)


@dataclass
class ModelInfo:
    """How to rebuild a model: registry name plus constructor arguments."""

    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)


class ReusableModel(nn.Module):
    """Base class implementing the contract; subclasses define ``forward_features``.

    Subclasses set ``head_name`` (dotted path of the final ``nn.Linear``) and implement
    ``forward_features(x)`` on *normalised* input and ``block_names()``.
    """

    head_name: str = "fc"

    def __init__(self, input_spec: InputSpec) -> None:
        super().__init__()
        self.input_spec = input_spec
        self.info: ModelInfo | None = None
        mean, std = _norm_tensors(input_spec.channels, input_spec.mean, input_spec.std)
        self.register_buffer("_norm_mean", mean, persistent=False)
        self.register_buffer("_norm_std", std, persistent=False)

    # -- input ------------------------------------------------------------------------------
    def set_normalization(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        """Replace the per-channel normalisation (e.g. ``(0,), (1,)`` for a checkpoint trained on raw
        pixels); the buffers keep their device and dtype."""
        m, s = _norm_tensors(self.input_spec.channels, mean, std)
        old = self._norm_mean
        self.input_spec = self.input_spec.with_stats(tuple(mean), tuple(std))
        self._norm_mean = m.to(device=old.device, dtype=old.dtype)
        self._norm_std = s.to(device=old.device, dtype=old.dtype)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self._norm_mean) / self._norm_std

    # -- contract ---------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate representation of pixel-space input ``x`` (``[N, D]``)."""
        return self.forward_features(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @property
    def head(self) -> nn.Linear:
        return self.get_submodule(self.head_name)  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    def reset_head(self, num_classes: int, seed: int | None = None) -> nn.Linear:
        """Replace the head with a freshly initialised ``Linear(feature_dim, num_classes)``."""
        old = self.head
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        # built on "meta" so that constructing it does not draw from the global RNG when a seed is given
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None, device="meta")
        new = new.to_empty(device="cpu")
        bound = 1.0 / old.in_features**0.5
        with torch.no_grad():
            new.weight.uniform_(-bound, bound, generator=gen)
            if new.bias is not None:
                new.bias.zero_()
        new = new.to(device=old.weight.device, dtype=old.weight.dtype)
        self.set_submodule(self.head_name, new)
        if self.info is not None:
            self.info.kwargs["num_classes"] = num_classes
        return new

    def block_names(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- submodule paths ----------------------------------------------------------------------
    # torchvision's VGG / MobileNet call their convolutional trunk ``features``, which is also the
    # name of the contract method above. ``getattr(model, "features")`` is therefore the *method*
    # and ``nn.Module.get_submodule("features.0")`` would fail; these overrides resolve children
    # through ``_modules`` first, so dotted paths from ``named_modules()`` / ``state_dict()`` always
    # work (and with them ``get_parameter``/``get_buffer``). Tools that walk paths with plain
    # ``getattr`` (``torch.func.functional_call``, ``torch.fx``) still cannot reach ``features.*``.
    def get_submodule(self, target: str) -> nn.Module:
        if target == "":
            return self
        first, _, rest = target.partition(".")
        child = self._modules.get(first)
        if child is None:
            return super().get_submodule(target)
        return child.get_submodule(rest) if rest else child

    def set_submodule(self, target: str, module: nn.Module, strict: bool = False) -> None:
        if target == "":
            raise ValueError("Cannot set the submodule without a target name!")
        if not isinstance(module, nn.Module):
            raise ValueError(f"`module` is not an nn.Module, found {type(module)}")
        parent_name, _, leaf = target.rpartition(".")
        parent = self.get_submodule(parent_name)
        if leaf not in parent._modules and (strict or hasattr(parent, leaf)):
            raise AttributeError(f"{parent._get_name()} has no submodule `{leaf}`")
        parent.add_module(leaf, module)

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """Ordered ``(name, module)`` from the input to the head (the head is the last block).

        A block name may join several sibling modules with ``+`` (e.g. ``"conv1+bn1"``); its module
        is then an unregistered ``nn.ModuleList`` view, so parameter names are unchanged.
        """
        out: list[tuple[str, nn.Module]] = []
        for name in self.block_names():
            parts = name.split("+")
            mod = (
                self.get_submodule(parts[0])
                if len(parts) == 1
                else nn.ModuleList([self.get_submodule(p) for p in parts])
            )
            out.append((name, mod))
        return out

    def residual_blocks(self) -> list[tuple[str, nn.Module]]:
        """The residual blocks, ``(name, module)`` in definition order: the modules whose forward
        ends in ``shortcut + F(x)``, optionally under a ReLU-like activation (``ReLU(a + b)``).

        The default finds them by tracing every submodule (:func:`find_residual_blocks`), so a foreign
        model behind :func:`adapt` gets its blocks too; a model whose blocks cannot be traced (data-
        dependent control flow) overrides this to name them.

        Example:
            >>> class Block(nn.Module):
            ...     def __init__(self):
            ...         super().__init__()
            ...         self.conv = nn.Conv2d(2, 2, 3, padding=1)
            ...     def forward(self, x):
            ...         return torch.relu(self.conv(x) + x)
            >>> net = nn.Sequential(Block(), nn.Flatten(), nn.Linear(8, 2))
            >>> [n for n, _ in adapt(net, InputSpec(2, (2, 2), (0.0,), (1.0,)), head="2").residual_blocks()]
            ['module.0']
        """
        return find_residual_blocks(self)


# -- residual blocks -------------------------------------------------------------------------------
#: Activations ``act`` with ``act(c·s) = c·act(s)`` for ``c > 0``, allowed after the residual sum.
_HOMOGENEOUS_MODULES = (nn.ReLU, nn.LeakyReLU)
_HOMOGENEOUS_FUNCTIONS = (F.relu, torch.relu, F.leaky_relu)
_ADDS = (operator.add, operator.iadd, torch.add)


class _ChildrenAsLeaves(fx.Tracer):
    """Traces one module's own forward: every submodule call stays one ``call_module`` node."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


def residual_sum(module: nn.Module) -> tuple[fx.Graph, fx.Node, fx.Node | None] | None:
    """``(graph, add node, activation node or None)`` when ``module``'s forward returns
    ``a + b`` or ``act(a + b)`` (``act`` ReLU-like) with both ``a`` and ``b`` computed from its input;
    ``None`` otherwise (also for a module that cannot be traced).

    Example:
        >>> residual_sum(nn.Sequential(nn.Linear(2, 2))) is None
        True
    """
    if not any(True for _ in module.children()):
        return None  # a layer, not a block
    try:
        graph = _ChildrenAsLeaves().trace(module)
    except Exception:  # noqa: BLE001 - untraceable (data-dependent control flow...): not detected
        return None
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    out = next((n for n in graph.nodes if n.op == "output"), None)
    node = out.args[0] if out is not None else None
    if len(inputs) != 1 or not isinstance(node, fx.Node):
        return None
    act = None
    if _is_homogeneous(module, node) and node.args and isinstance(node.args[0], fx.Node):
        act, node = node, node.args[0]
    is_add = (node.op == "call_function" and node.target in _ADDS) or (
        node.op == "call_method" and node.target in ("add", "add_")
    )
    if not is_add or len(node.args) < 2 or not all(isinstance(a, fx.Node) for a in node.args[:2]):
        return None
    if not all(_reaches(a, inputs[0]) for a in node.args[:2]):
        return None
    return graph, node, act


def _is_homogeneous(module: nn.Module, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(module.get_submodule(str(node.target)), _HOMOGENEOUS_MODULES)
    if node.op == "call_function":
        return node.target in _HOMOGENEOUS_FUNCTIONS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _reaches(node: fx.Node, source: fx.Node) -> bool:
    """Whether ``node`` is computed from ``source``."""
    todo, seen = [node], set()
    while todo:
        n = todo.pop()
        if n is source:
            return True
        if n in seen:
            continue
        seen.add(n)
        todo += [a for a in n.all_input_nodes]
    return False


def find_residual_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every submodule of ``model`` (not ``model`` itself) whose forward ends in a residual sum
    (:func:`residual_sum`), in definition order: the default of
    :meth:`ReusableModel.residual_blocks`.

    Example:
        >>> from safereuse.models import create_model
        >>> [n for n, _ in find_residual_blocks(create_model("resnet8"))]
        ['layer1.0', 'layer2.0', 'layer3.0']
    """
    return [(n, m) for n, m in model.named_modules() if m is not model and residual_sum(m) is not None]


def last_k_parameters(model: ReusableModel, k: int) -> list[str]:
    """Names of the parameters inside the last ``k`` blocks (k = 1: only the head)."""
    blocks = model.blocks()
    if not 0 <= k <= len(blocks):
        raise SafeReuseError(
            f"k={k} is out of range for {type(model).__name__} with {len(blocks)} blocks",
            fix=f"choose k between 0 and {len(blocks)}",
        )
    chosen = [part for n, _ in blocks[len(blocks) - k :] for part in n.split("+")]
    return [
        name
        for name, _ in model.named_parameters()
        if any(name == c or name.startswith(c + ".") for c in chosen)
    ]


def check_contract(model: nn.Module) -> ReusableModel:
    if not isinstance(model, ReusableModel):
        raise SafeReuseError(
            f"{type(model).__name__} does not implement the safereuse model contract",
            fix="wrap it with safereuse.models.adapt(module, head='fc', blocks=[...])",
        )
    return model


class AdaptedModel(ReusableModel):
    """Any ``nn.Module`` with a final ``nn.Linear`` behind the contract (see :func:`adapt`)."""

    def __init__(self, module: nn.Module, input_spec: InputSpec, head: str, blocks: list[str] | None) -> None:
        super().__init__(input_spec)
        self.module = module
        self.head_name = f"module.{head}"
        if not isinstance(self.head, nn.Linear):
            raise SafeReuseError(f"{head!r} is not an nn.Linear", fix="name the final Linear layer")
        self._block_names = [f"module.{b}" for b in (blocks or [n for n, _ in module.named_children()])]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # the foreign module has no features() of its own: run it and take what enters the head
        with capture(self, [(self.head_name, self.head)], inputs=True, outputs=False, grad=True) as cap:
            self.module(x)
        return cap.inputs()[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(self.normalize(x))

    def block_names(self) -> list[str]:
        return self._block_names


def adapt(
    module: nn.Module,
    input_spec: InputSpec | None = None,
    head: str = "fc",
    blocks: list[str] | None = None,
) -> ReusableModel:
    """Put a foreign ``nn.Module`` (e.g. a torchvision model) behind the model contract.

    Args:
        module: the network; its ``head`` must be the final ``nn.Linear``.
        input_spec: input channels/size/normalisation (default: 3×224×224, ImageNet statistics).
        head: dotted name of the final linear layer.
        blocks: ordered child names for last-k freezing (default: the top-level children).

    Returns:
        A :class:`ReusableModel` sharing ``module``'s parameters.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> m = adapt(net, InputSpec(1, (2, 2), (0.0,), (1.0,)), head="3")
        >>> m.features(torch.zeros(1, 1, 2, 2)).shape
        torch.Size([1, 8])
    """
    spec = input_spec or InputSpec(3, (224, 224), IMAGENET_MEAN, IMAGENET_STD)
    return AdaptedModel(module, spec, head, blocks)


def _norm_tensors(
    channels: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    if len(mean) not in (1, channels) or len(std) not in (1, channels):
        raise SafeReuseError(
            f"normalisation has {len(mean)} means / {len(std)} stds for {channels} channels",
            fix="give one value per input channel",
        )
    if any(float(v) <= 0 for v in std):
        raise SafeReuseError(f"normalisation std {tuple(std)} must be positive", fix="check the std values")
    m = torch.tensor([float(v) for v in mean], dtype=torch.float32).reshape(1, -1, 1, 1)
    s = torch.tensor([float(v) for v in std], dtype=torch.float32).reshape(1, -1, 1, 1)
    return m, s


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ModelFactory = Callable[..., ReusableModel]

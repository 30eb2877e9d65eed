"""One way to read (and optionally change) what modules compute: forward hooks in a context manager.

Every analysis in safereuse that looks inside a network goes through :func:`capture`: ReMoS's
coverage profile (inputs and outputs of the sliced layers), the nc-guided generator (conv outputs,
kept in the autograd graph), DELTA / Renofeation (block outputs of student and teacher, spatial
dropout on the student's), the latent backdoor (the head's input or a named layer's output, with
gradients) and the model contract (the head's input of an adapted foreign model).

The hooks exist only inside the ``with`` block: they are registered after every layer name has been
resolved and removed in ``finally``, so an exception in the body (or in a hook) leaves the model
hook-free. It sits in the model layer (it imports nothing but errors), so the model contract can use
it; :mod:`safereuse.slicing` re-exports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..errors import SafeReuseError

Reduce = Callable[[Any], Any]
"""What to record of a captured tensor, computed inside the hook (e.g. ``torch.clone`` — safe from
later in-place ops — or ``lambda t: t.mean((2, 3))``, which never keeps the full tensor)."""

Transform = Callable[[nn.Module, Any], Any]
"""``(module, output) -> new output or None``: replaces what the rest of the network sees."""

Layers = Iterable[str | tuple[str, nn.Module]]


@dataclass(frozen=True)
class Record:
    """One captured value.

    Attributes:
        name: the layer's name, as given to :func:`capture`.
        site: ``input`` (the first positional argument, read before the module runs) or ``output``.
        value: the tensor (detached unless ``grad=True``), or what ``reduce`` made of it.
    """

    name: str
    site: Literal["input", "output"]
    value: Any


class Capture:
    """What a :func:`capture` block recorded, in call order.

    Attributes:
        records: every :class:`Record`, in the order the hooks fired.
        active: record only while True (a ``transform`` applies either way); set it to False around
            forward passes whose activations are not needed, e.g. evaluation inside a training loop.
    """

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.active = True

    def inputs(self, name: str | None = None) -> list[Any]:
        """Recorded inputs (of layer ``name``, or of every layer), in call order."""
        return [r.value for r in self.records if r.site == "input" and (name is None or r.name == name)]

    def outputs(self, name: str | None = None) -> list[Any]:
        """Recorded outputs (of layer ``name``, or of every layer), in call order."""
        return [r.value for r in self.records if r.site == "output" and (name is None or r.name == name)]

    def calls(self, name: str) -> int:
        """How many recorded calls layer ``name`` made (counted on its outputs, else its inputs)."""
        outs = sum(1 for r in self.records if r.name == name and r.site == "output")
        return outs or sum(1 for r in self.records if r.name == name and r.site == "input")

    def clear(self) -> None:
        """Forget everything recorded so far (e.g. before the next batch)."""
        self.records.clear()

    def __len__(self) -> int:
        return len(self.records)


def resolve_layers(model: nn.Module, layers: Layers) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` pairs for names of ``model``'s submodules (pairs are passed through).

    Raises:
        SafeReuseError: a name that is not a submodule of ``model``.

    Example:
        >>> resolve_layers(nn.Sequential(nn.Linear(2, 2)), ["0"])[0][1]
        Linear(in_features=2, out_features=2, bias=True)
    """
    out: list[tuple[str, nn.Module]] = []
    for layer in layers:
        if isinstance(layer, tuple):
            name, mod = layer
        else:
            name = layer
            try:
                mod = model.get_submodule(name)
            except AttributeError:
                names = [n for n, _ in model.named_modules() if n]
                more = ", ..." if len(names) > 12 else ""
                raise SafeReuseError(
                    f"{type(model).__name__} has no layer {name!r}",
                    fix=f"use one of: {', '.join(names[:12])}{more}",
                ) from None
        if not isinstance(mod, nn.Module):
            raise SafeReuseError(f"layer {name!r} is not an nn.Module", fix="name a submodule of the model")
        out.append((name, mod))
    return out


@contextmanager
def capture(
    model: nn.Module,
    layers: Layers,
    *,
    inputs: bool = False,
    outputs: bool = True,
    grad: bool = False,
    reduce: Reduce | None = None,
    transform: Transform | None = None,
) -> Iterator[Capture]:
    """Record the inputs and/or outputs of chosen layers during the forward passes inside ``with``.

    Args:
        model: the network (layer names are resolved against it, with ``get_submodule``).
        layers: layer names, or ``(name, module)`` pairs (e.g. a model's ``head`` or blocks).
        inputs: record each call's first positional input (forward pre-hook: before the module
            runs, so in-place ops inside it cannot change what is recorded).
        outputs: record each call's output (forward hook).
        grad: keep the recorded tensors in the autograd graph (e.g. to differentiate a loss on a
            hidden representation); otherwise they are detached.
        reduce: applied to each tensor inside the hook; its result is recorded (default: the tensor).
        transform: ``(module, output) -> output | None`` after the output is recorded; a non-None
            result replaces the output for the rest of the network (e.g. spatial dropout). It
            applies even while ``Capture.active`` is False.

    Yields:
        A :class:`Capture` filled while the block runs. The hooks are removed on exit, also when
        the block raises.

    Raises:
        SafeReuseError: an unknown layer name, or nothing to capture.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> with capture(net, ["0", "2"], inputs=True) as cap:
        ...     _ = net(torch.zeros(5, 3))
        >>> [tuple(t.shape) for t in cap.outputs()], tuple(cap.inputs("2")[0].shape)
        ([(5, 4), (5, 2)], (5, 4))
        >>> any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())
        False
    """
    pairs = resolve_layers(model, layers)
    if not pairs:
        raise SafeReuseError("no layer to capture", fix="name at least one layer")
    if not (inputs or outputs or transform is not None):
        raise SafeReuseError("capture records nothing", fix="ask for inputs, outputs or a transform")
    cap = Capture()

    def keep(name: str, site: Literal["input", "output"], t: Any) -> None:
        if not grad and isinstance(t, torch.Tensor) and t.requires_grad:
            t = t.detach()  # (only then: under no_grad the same object lets reducers share work by id)
        cap.records.append(Record(name, site, t if reduce is None else reduce(t)))

    def pre_hook(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            if cap.active:
                if not args:
                    raise SafeReuseError(
                        f"layer {name!r} was called without a positional input",
                        fix="capture its output, or a layer called with positional arguments",
                    )
                keep(name, "input", args[0])

        return hook

    def post_hook(name: str) -> Callable[..., Any]:
        def hook(m: nn.Module, _args: tuple[Any, ...], out: Any) -> Any:
            if outputs and cap.active:
                keep(name, "output", out)
            return transform(m, out) if transform is not None else None

        return hook

    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for name, mod in pairs:
            if inputs:
                handles.append(mod.register_forward_pre_hook(pre_hook(name)))
            if outputs or transform is not None:
                handles.append(mod.register_forward_hook(post_hook(name)))
        yield cap
    finally:
        for h in handles:
            h.remove()

"""Which registered defects fit a model: its input kind (images or token ids) and, for attacks, whether
the defect crafts inputs at all.

Every defect declares the inputs it takes as ``input_kind`` (``image``: float pixels; ``text``:
integer token ids) on its class (:class:`~safereuse.defects.base.Defect`); a model declares it with
``takes_text`` (the text models of :mod:`safereuse.models`). :func:`defects_for` lists the names that
fit, so an error message offers only names that would work ("unknown attack ... (fix: one of ...)").
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from ..errors import SafeReuseError
from .attacks import ExploratoryDefect
from .base import DEFECTS

InputKind = Literal["image", "text"]
INPUT_KINDS: tuple[str, ...] = ("image", "text")


def input_kind_of(source: Any) -> InputKind:
    """The input kind of a model (``takes_text``), of an input batch (integer = token ids) or a kind.

    Args:
        source: a model, an input tensor, or ``"image"`` / ``"text"``.

    Returns:
        ``"image"`` or ``"text"``.

    Example:
        >>> input_kind_of(torch.zeros(2, 8, dtype=torch.long)), input_kind_of(torch.nn.Linear(2, 2))
        ('text', 'image')
    """
    if isinstance(source, str):
        if source not in INPUT_KINDS:
            raise SafeReuseError(f"unknown input kind {source!r}", fix="use image or text")
        return source  # type: ignore[return-value]
    if isinstance(source, torch.Tensor):
        return "image" if source.is_floating_point() else "text"
    return "text" if bool(getattr(source, "takes_text", False)) else "image"


def defects_for(source: Any, *, crafts: bool = False) -> list[str]:
    """The registered defects (sorted names) that fit ``source``'s input kind.

    Args:
        source: a model, an input batch, or an input kind (see :func:`input_kind_of`).
        crafts: only the defects that craft inputs (attacks and corruptions, not backdoors).

    Returns:
        The names, sorted.

    Example:
        >>> "jsma" in defects_for("image", crafts=True), "pwws" in defects_for("image")
        (True, False)
        >>> "badnets" in defects_for("image", crafts=True), "pwws" in defects_for("text", crafts=True)
        (False, True)
    """
    kind = input_kind_of(source)
    out = []
    for name in DEFECTS.names():
        cls = DEFECTS.get(name)
        if cls.input_kind == kind and (not crafts or issubclass(cls, ExploratoryDefect)):
            out.append(name)
    return out


def make_attack(name: str, params: dict[str, Any] | None = None, source: Any = "image") -> ExploratoryDefect:
    """The input-crafting defect ``name`` of :data:`DEFECTS` with ``params`` (validated), checked to
    fit ``source``'s input kind.

    Args:
        name: a defect name (an attack or a corruption).
        params: its parameters.
        source: the model (or inputs, or input kind) it will be crafted on.

    Raises:
        SafeReuseError: an unknown name or one of the other input kind (the fix lists the attacks
            that fit), a defect that crafts nothing (a backdoor), a bad parameter.

    Example:
        >>> type(make_attack("fgsm", {"eps": 0.01})).__name__, type(make_attack("gaussian-noise")).__name__
        ('FGSM', 'GaussianNoise')
        >>> make_attack("pwws")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        safereuse.errors.SafeReuseError: pwws is an attack on text models, not on image models (fix: ...
    """
    kind = input_kind_of(source)
    fits = defects_for(kind, crafts=True)
    if name not in DEFECTS:
        raise SafeReuseError(f"unknown attack {name!r}", fix=f"use one of: {', '.join(fits)}")
    cls = DEFECTS.get(name)
    if not issubclass(cls, ExploratoryDefect):
        raise SafeReuseError(
            f"{name!r} is not an attack (it crafts no inputs)", fix="name an adversarial attack"
        )
    if cls.input_kind != kind:
        raise SafeReuseError(
            f"{name} is an attack on {cls.input_kind} models, not on {kind} models",
            fix=f"use one of: {', '.join(fits)}",
        )
    return DEFECTS.create(name, **(params or {}))


__all__ = ["INPUT_KINDS", "InputKind", "defects_for", "input_kind_of", "make_attack"]

"""One validation path for the parameters of every registered factory.

``--param ratio=abc`` (CLI), ``{method: remos, ratio: abc}`` (YAML), ``METHODS.create("remos",
ratio="abc")`` and ``ReMoS(ratio="abc")`` (Python) all end in :func:`validate_params` /
:func:`validate_fields`, so they fail with the same one-line :class:`SafeReuseError` naming the
parameter, what it expects and the method::

    method 'remos': ratio='abc' is invalid (expected a number in [0, 1]) (fix: e.g. ratio=0.2, the default)

Types come from the factory's type hints (``int``, ``float``, ``bool``, ``str``, ``Literal``,
``X | None``, ``list[X]`` / ``tuple[X, ...]``); ranges are declared once per class in a
``param_ranges`` table (merged along the class hierarchy, so a subclass adds or overrides rows)::

    @dataclass
    class ReMoS(TransferMethod):
        param_ranges: ClassVar[dict[str, str]] = {"ratio": "[0, 1]", "top_k": ">= 1"}

A range is an interval (``"[0, 1]"``, ``"[0, 1)"``, ``"(0, inf)"``) or a bound (``">= 1"``, ``"> 0"``,
``"<= 1"``, ``"< 1"``); ranged values must also be finite. Values are coerced the way YAML users
expect, identically on every path: ``"1e-3"`` (which YAML 1.1 reads as a string) → ``0.001`` for a
float, ``4.0`` or ``"4"`` → ``4`` for an int, ``"true"`` → ``True`` for a bool; an int stays an int
for a float field (so the recorded config does not change).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
import numbers
import re
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .errors import SafeReuseError

__all__ = [
    "Range",
    "accepted_params",
    "check_value",
    "is_list_type",
    "param_hints",
    "param_ranges",
    "unknown_param_error",
    "validate_fields",
    "validate_params",
]


@dataclass(frozen=True)
class Range:
    """A numeric range, parsed from ``"[0, 1]"``, ``"(0, inf)"``, ``">= 1"``...

    Example:
        >>> r = Range.parse("[0, 1)")
        >>> (0.0 in r, 1.0 in r, float("nan") in r, str(r))
        (True, False, False, 'in [0, 1)')
        >>> str(Range.parse(">= 1")), str(Range.parse("(0, inf)"))
        ('≥ 1', '> 0')
    """

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    @classmethod
    def parse(cls, text: str) -> Range:
        s = text.strip().replace("≥", ">=").replace("≤", "<=")
        m = re.fullmatch(r"([\[(])\s*([^,]+?)\s*,\s*([^,]+?)\s*([\])])", s)
        if m:
            return cls(float(m[2]), float(m[3]), m[1] == "(", m[4] == ")")
        m = re.fullmatch(r"(>=|>|<=|<)\s*(\S+)", s)
        if not m:
            raise ValueError(f"cannot parse the range {text!r}")
        v = float(m[2])
        return {
            ">=": cls(lo=v),
            ">": cls(lo=v, lo_open=True),
            "<=": cls(hi=v),
            "<": cls(hi=v, hi_open=True),
        }[m[1]]

    def __contains__(self, v: object) -> bool:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            return False
        x = float(v)
        above = x > self.lo if self.lo_open else x >= self.lo
        below = x < self.hi if self.hi_open else x <= self.hi
        return above and below

    def __str__(self) -> str:
        def num(x: float) -> str:
            return str(int(x)) if x.is_integer() else repr(x)

        if math.isinf(self.hi):
            return f"{'>' if self.lo_open else '≥'} {num(self.lo)}"
        if math.isinf(self.lo):
            return f"{'<' if self.hi_open else '≤'} {num(self.hi)}"
        left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
        return f"in {left}{num(self.lo)}, {num(self.hi)}{right}"


# -- what a factory declares -----------------------------------------------------------------------
@functools.cache
def param_hints(factory: Any) -> dict[str, Any]:
    """Resolved type hints of ``factory``'s parameters (ClassVars and ``return`` dropped; ``{}`` when
    the annotations cannot be resolved, which switches type checks off)."""
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # noqa: BLE001 - unresolvable annotations: no type checks
        return {}
    hints.pop("return", None)
    return {k: v for k, v in hints.items() if typing.get_origin(v) is not typing.ClassVar}


@functools.cache
def param_ranges(factory: Any) -> dict[str, Range]:
    """The ``param_ranges`` rows of ``factory`` and its base classes, parsed (subclass rows win).

    Example:
        >>> from safereuse.methods import ReMoS
        >>> str(param_ranges(ReMoS)["ratio"]), str(param_ranges(ReMoS)["epochs"])
        ('in [0, 1]', '≥ 1')
    """
    owners = reversed(inspect.getmro(factory)) if inspect.isclass(factory) else [factory]
    out: dict[str, Range] = {}
    for owner in owners:
        # a class's own table only (vars), so inherited rows are not re-applied over a subclass's
        own = vars(owner) if inspect.isclass(owner) else {"param_ranges": getattr(owner, "param_ranges", {})}
        table = own.get("param_ranges", {})
        out.update({k: Range.parse(v) if isinstance(v, str) else v for k, v in table.items()})
    return out


def _signature(factory: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(factory)
    except (TypeError, ValueError):
        return None


def accepted_params(factory: Any) -> set[str] | None:
    """The keyword names ``factory`` takes (``None``: it takes ``**kwargs``, anything goes)."""
    sig = _signature(factory)
    if sig is None:
        return None
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY)
    return {n for n, p in params.items() if n != "self" and p.kind not in skip}


def is_list_type(hint: Any) -> bool:
    """Whether the annotation ``hint`` accepts a list (list, tuple, or a union with one).

    Example:
        >>> is_list_type(list[int]), is_list_type(int | None), is_list_type(str | tuple[int, ...])
        (True, False, True)
    """
    origin = typing.get_origin(hint)
    if hint in (list, tuple) or origin in (list, tuple, Sequence):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(is_list_type(a) for a in typing.get_args(hint))
    return False


# -- errors ----------------------------------------------------------------------------------------
def unknown_param_error(what: str, key: str, accepted: Iterable[str]) -> SafeReuseError:
    """The error for a parameter ``key`` that ``what`` (e.g. ``"method 'remos'"``) does not take.

    Example:
        >>> print(unknown_param_error("method 'remos'", "ration", ["ratio", "tau"]))
        method 'remos' has no parameter 'ration' (fix: did you mean 'ratio'? parameters: ratio, tau)
    """
    names = sorted(accepted)
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    choices = ", ".join(names) or "(none)"
    return SafeReuseError(f"{what} has no parameter {key!r}", fix=f"{hint}parameters: {choices}")


class _Invalid(Exception):
    pass


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if hint is type(None):
        return "None"
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in args if a is not type(None)]
        text = " or ".join(_describe(a) for a in arms)
        return text + " or None" if len(arms) < len(args) else text
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        inner = [a for a in args if a is not Ellipsis]
        return f"a list of {_plural(inner[0])}" if len(set(inner)) == 1 else "a list"
    if origin is dict or hint is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _expected(hint: Any, rng: Range | None) -> str:
    """``an integer ≥ 1 or None``: the range goes with the numeric part, ``None`` last."""
    if hint is Any:
        return f"a value {rng}" if rng else "a value"
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        arms = tuple(a for a in args if a is not type(None))
        hint = arms[0] if len(arms) == 1 else typing.Union[arms]  # noqa: UP007 - built at run time
    text = _describe(hint) + (f" {rng}" if rng else "")
    return text + " or None" if optional else text


def _plural(hint: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(hint, _describe(hint))


def _coerce(hint: Any, value: Any, lax: bool) -> Any:
    """``value`` as ``hint``, or :class:`_Invalid`; ``lax`` allows the YAML-style conversions."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return value
    if hint is type(None):
        if value is None:
            return None
        raise _Invalid
    if hint is bool:
        if isinstance(value, bool):
            return value
        if lax and isinstance(value, str) and value.strip().lower() in _BOOLS:
            return _BOOLS[value.strip().lower()]
        raise _Invalid
    if hint is int:
        if isinstance(value, bool):
            raise _Invalid
        if isinstance(value, numbers.Integral):
            return int(value)
        if lax and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                try:
                    value = float(value)
                except ValueError:
                    raise _Invalid from None
        if lax and isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
            return int(value)
        raise _Invalid
    if hint is float:
        if isinstance(value, bool):
            raise _Invalid
        if isinstance(value, numbers.Integral):
            return value if isinstance(value, int) else int(value)
        if isinstance(value, numbers.Real):
            return float(value)
        if lax and isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise _Invalid from None
        raise _Invalid
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Invalid
    if origin is Literal:
        for a in args:
            if value == a and type(value) is type(a):
                return a
        raise _Invalid
    if origin in (typing.Union, types.UnionType):
        for strict_pass in (True, False) if lax else (True,):
            for arm in args:
                try:
                    return _coerce(arm, value, lax=not strict_pass)
                except _Invalid:
                    pass
        raise _Invalid
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Invalid
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise _Invalid
            return tuple(_coerce(a, v, lax) for a, v in zip(args, value, strict=True))
        inner = args[0] if args else Any
        items = [_coerce(inner, v, lax) for v in value]
        return tuple(items) if (origin is tuple or hint is tuple) else items
    if origin is dict or hint is dict:
        if isinstance(value, dict):
            return value
        raise _Invalid
    if inspect.isclass(hint) and not isinstance(value, hint) and hint.__module__ == "builtins":
        raise _Invalid
    return value  # a type we do not check (a callable, a tensor...): the factory's own business


_BOOLS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}


def _in_range(rng: Range, value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (list, tuple)):
        return all(_in_range(rng, v) for v in value)
    if isinstance(value, str):
        return True  # a Literal arm of a union, e.g. "auto"
    return value in rng


def check_value(factory: Any, key: str, value: Any, what: str) -> Any:
    """``value`` for ``factory``'s parameter ``key``, coerced to its annotation and range-checked.

    Args:
        factory: the class or function (its type hints and ``param_ranges`` are used).
        key: the parameter name.
        value: the given value (from the CLI, YAML or Python).
        what: who takes it, for the message, e.g. ``"method 'remos'"``.

    Returns:
        The value, coerced (``"1e-3"`` → ``0.001`` for a float).

    Raises:
        SafeReuseError: naming ``what``, the parameter, its value and what is expected.

    Example:
        >>> from safereuse.methods import ReMoS
        >>> check_value(ReMoS, "lr", "1e-3", "method 'remos'")
        0.001
        >>> check_value(ReMoS, "ratio", 2, "method 'remos'")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        safereuse.errors.SafeReuseError: method 'remos': ratio=2 is invalid (expected a number in [0, 1]) ...
    """
    hint = param_hints(factory).get(key, Any)
    rng = param_ranges(factory).get(key)
    try:
        out = _coerce(hint, value, lax=True)
        if rng is not None and not _in_range(rng, out):
            raise _Invalid
    except _Invalid:
        expected = _expected(hint, rng)
        raise SafeReuseError(
            f"{what}: {key}={value!r} is invalid (expected {expected})", fix=_example(factory, key, expected)
        ) from None
    return out


def _example(factory: Any, key: str, expected: str) -> str:
    sig = _signature(factory)
    p = sig.parameters.get(key) if sig is not None else None
    default = p.default if p is not None else inspect.Parameter.empty
    if default is not inspect.Parameter.empty and isinstance(default, (bool, int, float, str)):
        return f"e.g. {key}={default!r}, the default"
    return f"pass {expected}"


def validate_params(
    factory: Any, params: dict[str, Any], what: str, *, forbidden: Iterable[str] = ()
) -> dict[str, Any]:
    """Check names, types and ranges of ``params`` for ``factory``; return them coerced.

    The one validation path: :meth:`Registry.create <safereuse.registry.Registry.create>`, the YAML
    spec checker, the CLI and the dataclasses' ``__post_init__`` (:func:`validate_fields`) all use it.

    Args:
        factory: a class or function.
        params: keyword arguments for it.
        what: who takes them, for messages (``"method 'remos'"``, ``"teacher training"``).
        forbidden: names the factory takes but the caller sets itself (refused like unknown ones).

    Returns:
        ``params`` with coerced values.

    Raises:
        SafeReuseError: an unknown name (with a did-you-mean) or an invalid value.

    Example:
        >>> from safereuse.methods import FinetuneLastK
        >>> validate_params(FinetuneLastK, {"k": "3", "lr": "1e-3"}, "method 'finetune-last-k'")
        {'k': 3, 'lr': 0.001}
        >>> validate_params(FinetuneLastK, {"kk": 3}, "method 'k'")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        safereuse.errors.SafeReuseError: method 'k' has no parameter 'kk' (fix: did you mean 'k'? ...
    """
    accepted = accepted_params(factory)
    forbidden = set(forbidden)
    out = {}
    for key, value in params.items():
        if key in forbidden or (accepted is not None and key not in accepted):
            raise unknown_param_error(what, key, (accepted or set()) - forbidden)
        out[key] = check_value(factory, key, value, what)
    return out


def validate_fields(obj: Any, what: str) -> None:
    """Validate a dataclass instance's init fields in place (call it from ``__post_init__``).

    Coerced values are written back, so ``ReMoS(lr="1e-3").lr == 0.001``.

    Example:
        >>> from safereuse.train import FitConfig
        >>> FitConfig(epochs="2").epochs
        2
        >>> FitConfig(lr=0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        safereuse.errors.SafeReuseError: training: lr=0 is invalid (expected a number > 0) (fix: ...)
    """
    cls = type(obj)
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        new = check_value(cls, f.name, value, what)
        if new is not value:
            object.__setattr__(obj, f.name, new)  # also works on frozen dataclasses

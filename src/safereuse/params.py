"""One validation path for the parameters of every registered factory, on pydantic.

``--param ratio=abc`` (CLI), ``{method: remos, ratio: abc}`` (YAML), ``METHODS.create("remos",
ratio="abc")`` and ``ReMoS(ratio="abc")`` (Python) all end in :func:`validate_params` /
:func:`validate_fields`, so they fail with the same one-line :class:`SafeReuseError` naming the
parameter, what it expects and the method::

    method 'remos': ratio='abc' is invalid (expected a number in [0, 1]) (fix: e.g. ratio=0.2, the default)

Types come from the factory's type hints (``int``, ``float``, ``bool``, ``str``, ``Literal``,
``X | None``, ``list[X]`` / ``tuple[X, ...]``); a range is declared once, next to the field, with
:func:`pydantic.Field` inside :data:`typing.Annotated` (``ge``/``gt``/``le``/``lt``; ranged values must
also be finite)::

    @dataclass
    class ReMoS(TransferMethod):
        ratio: Annotated[float, Field(ge=0, le=1)] = 0.2
        eps: Annotated[float, Field(gt=0)] | None = None       # the range goes with the number
        thetas: list[Annotated[float, Field(ge=0, le=1)]] = ...  # ... or with each element

pydantic checks the values (one :class:`pydantic.TypeAdapter` per parameter, built once), in strict
mode plus the conversions YAML users expect, identically on every path: ``"1e-3"`` (which YAML 1.1
reads as a string) → ``0.001`` for a float, ``4.0`` or ``"4"`` → ``4`` for an int, ``"true"`` /
``"yes"`` / ``"on"`` → ``True`` for a bool; an int stays an int for a float field (so the recorded
config does not change). Hints of other classes (a callable, a tensor, a module) are not checked.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import difflib
import functools
import inspect
import math
import numbers
import types
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal

import annotated_types
from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, WrapValidator

from .errors import SafeReuseError

__all__ = [
    "Validated",
    "accepted_params",
    "check_value",
    "is_list_type",
    "param_hints",
    "unknown_param_error",
    "validate_fields",
    "validate_params",
]


# -- what a factory declares -----------------------------------------------------------------------
@functools.cache
def param_hints(factory: Any) -> dict[str, Any]:
    """Resolved type hints of ``factory``'s parameters, ``Annotated`` ranges kept (ClassVars and
    ``return`` dropped; ``{}`` when the annotations cannot be resolved, which switches checks off).

    Example:
        >>> from safereuse.methods import ReMoS
        >>> param_hints(ReMoS)["top_k"]
        typing.Annotated[int, FieldInfo(annotation=NoneType, required=True, metadata=[Ge(ge=1)])]
    """
    try:
        hints = typing.get_type_hints(factory, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable annotations: no checks
        return {}
    hints.pop("return", None)
    return {k: v for k, v in hints.items() if typing.get_origin(_bare(v)) is not typing.ClassVar}


def _bare(hint: Any) -> Any:
    """``hint`` without an outer ``Annotated``."""
    return typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint


def _signature(factory: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(factory)
    except (TypeError, ValueError):
        return None


def accepted_params(factory: Any) -> set[str] | None:
    """The keyword names ``factory`` takes (``None``: it takes ``**kwargs``, anything goes).

    Example:
        >>> sorted(accepted_params(lambda a, b=1: None)), accepted_params(lambda **kw: None)
        (['a', 'b'], None)
    """
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
    hint = _bare(hint)
    origin = typing.get_origin(hint)
    if hint in (list, tuple) or origin in (list, tuple, collections.abc.Sequence):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(is_list_type(a) for a in typing.get_args(hint))
    return False


# -- the pydantic schema of one parameter -----------------------------------------------------------
_BOOLS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}


def _yaml_bool(v: Any) -> Any:
    """YAML 1.1 spellings of a bool (``"yes"``, ``"on"``...); pydantic (strict) checks the rest."""
    return _BOOLS.get(v.strip().lower(), v) if isinstance(v, str) else v


def _yaml_int(v: Any) -> Any:
    """``"4"``, ``"4.0"``, ``4.0`` → ``4``; anything else is left for pydantic (strict) to refuse."""
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            try:
                v = float(v)
            except ValueError:
                return v
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    return _plain_int(v)


def _plain_int(v: Any) -> Any:
    """A NumPy / other integral number as an ``int`` (never a bool)."""
    return int(v) if isinstance(v, numbers.Integral) and not isinstance(v, bool) else v


def _keep_int(v: Any, handler: Callable[[Any], Any]) -> Any:
    """A float parameter: ``"1e-3"`` → ``0.001``; an int is checked as a number but stays an int."""
    if isinstance(v, str):
        with contextlib.suppress(ValueError):
            v = float(v.strip())
    return _int_stays(v, handler)


def _int_stays(v: Any, handler: Callable[[Any], Any]) -> Any:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise ValueError("not a number")  # pydantic would read a NumPy bool as 1.0
    v = _plain_int(v)
    if not isinstance(v, (int, float)):
        v = float(v)  # a NumPy float32
    out = handler(v)
    return v if isinstance(v, int) and not isinstance(v, bool) else out


def _finite(v: Any, handler: Callable[[Any], Any]) -> Any:
    out = handler(v)
    if isinstance(out, float) and not math.isfinite(out):
        raise ValueError("not finite")
    return out


def _as(kind: type) -> BeforeValidator:
    """Accept a list for a tuple field and the reverse (YAML has only lists)."""
    return BeforeValidator(lambda v: kind(v) if isinstance(v, (list, tuple)) else v)


_BOUNDS = (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt)


def _bounds(meta: Iterable[Any]) -> list[Any]:
    """The ``Ge``/``Gt``/``Le``/``Lt`` items of ``Annotated`` metadata (``Field(ge=...)`` unpacked)."""
    out = []
    for m in meta:
        out += _bounds(getattr(m, "metadata", [])) if not isinstance(m, _BOUNDS) else [m]
    return out


def _schema(hint: Any, lax: bool = True) -> Any:
    """``hint`` as a type for pydantic's strict mode; ``lax`` attaches the YAML conversions.

    A union tries its arms as given first (``max_features=1.0`` stays the float, ``"4"`` the string
    of ``int | str``), then with the conversions, left to right.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        bounds = _bounds(hint.__metadata__)
        inner = _schema(args[0], lax)
        return Annotated[(inner, *bounds, WrapValidator(_finite))] if bounds else inner
    if hint is bool:
        return Annotated[bool, BeforeValidator(_yaml_bool)] if lax else bool
    if hint is int:
        return Annotated[int, BeforeValidator(_yaml_int if lax else _plain_int)]
    if hint is float:
        return Annotated[float, WrapValidator(_keep_int if lax else _int_stays)]
    if hint in (str, type(None)) or origin is Literal:
        return hint
    if origin in (typing.Union, types.UnionType):
        arms = [_schema(a, False) for a in args] + ([_schema(a) for a in args] if lax else [])
        arms = [a for i, a in enumerate(arms) if a not in arms[:i]]
        union = typing.Union[tuple(arms)]  # noqa: UP007 - built at run time
        if len([a for a in arms if a is not type(None)]) < 2:
            return union
        return Annotated[union, Field(union_mode="left_to_right")]
    if hint is list or origin in (list, collections.abc.Sequence):
        return Annotated[list[_schema(args[0], lax) if args else Any], _as(list)]
    if hint is tuple or origin is tuple:
        items = tuple(a if a is Ellipsis else _schema(a, lax) for a in args) or (Any, ...)
        return Annotated[tuple[items], _as(tuple)]
    if hint is dict or origin is dict:
        return dict
    if inspect.isclass(hint) and hint.__module__ == "builtins" and hint is not object:
        return Annotated[Any, BeforeValidator(functools.partial(_instance, hint))]
    return Any  # a type we do not check (a callable, a tensor...): the factory's own business


def _instance(kind: type, v: Any) -> Any:
    if not isinstance(v, kind):
        raise ValueError(f"not a {kind.__name__}")
    return v


@functools.cache
def _adapter(factory: Any, key: str) -> TypeAdapter[Any] | None:
    hint = param_hints(factory).get(key)
    if hint is None or hint is Any:
        return None
    try:
        return TypeAdapter(_schema(hint), config=ConfigDict(strict=True))
    except Exception:  # noqa: BLE001 - a hint pydantic cannot build a schema for: not checked ...
        if _find_bounds(hint):
            raise  # ... but a declared range that cannot be checked is a bug in the declaration
        return None


# -- messages --------------------------------------------------------------------------------------
def _range_text(hint: Any) -> str:
    """``in [0, 1]``, ``≥ 1``, ``> 0``... from the first ``Annotated`` bounds inside ``hint``."""
    lo, hi, lo_open, hi_open = -math.inf, math.inf, False, False
    for b in _find_bounds(hint):
        if isinstance(b, annotated_types.Ge | annotated_types.Gt):
            lo, lo_open = float(getattr(b, "ge", getattr(b, "gt", lo))), isinstance(b, annotated_types.Gt)
        else:
            hi, hi_open = float(getattr(b, "le", getattr(b, "lt", hi))), isinstance(b, annotated_types.Lt)

    def num(x: float) -> str:
        return str(int(x)) if x.is_integer() else repr(x)

    if math.isinf(lo) and math.isinf(hi):
        return ""
    if math.isinf(hi):
        return f"{'>' if lo_open else '≥'} {num(lo)}"
    if math.isinf(lo):
        return f"{'<' if hi_open else '≤'} {num(hi)}"
    return f"in {'(' if lo_open else '['}{num(lo)}, {num(hi)}{')' if hi_open else ']'}"


def _find_bounds(hint: Any) -> list[Any]:
    if typing.get_origin(hint) is Annotated:
        return _bounds(hint.__metadata__) or _find_bounds(typing.get_args(hint)[0])
    for a in typing.get_args(hint):
        if found := _find_bounds(a):
            return found
    return []


def _strip(hint: Any) -> Any:
    """``hint`` with every ``Annotated`` removed (for the description)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return _strip(args[0])
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_strip(a) for a in args)]  # noqa: UP007 - built at run time
    if origin in (list, tuple, collections.abc.Sequence) and args:
        return origin[tuple(a if a is Ellipsis else _strip(a) for a in args)]
    return hint


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
    if origin in (list, tuple, collections.abc.Sequence) or hint in (list, tuple):
        inner = [a for a in args if a is not Ellipsis]
        return f"a list of {_plural(inner[0])}" if len(set(inner)) == 1 else "a list"
    if origin is dict or hint is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _plural(hint: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(hint, _describe(hint))


def _expected(hint: Any) -> str:
    """``an integer ≥ 1 or None``: the range goes with the numeric part, ``None`` last."""
    rng = _range_text(hint)
    hint = _strip(hint)
    if hint is Any:
        return f"a value {rng}" if rng else "a value"
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        arms = tuple(a for a in args if a is not type(None))
        hint = arms[0] if len(arms) == 1 else typing.Union[arms]  # noqa: UP007 - built at run time
    text = _describe(hint) + (f" {rng}" if rng else "")
    return text + " or None" if optional else text


def _example(factory: Any, key: str, expected: str) -> str:
    sig = _signature(factory)
    p = sig.parameters.get(key) if sig is not None else None
    default = p.default if p is not None else inspect.Parameter.empty
    if default is not inspect.Parameter.empty and isinstance(default, (bool, int, float, str)):
        return f"e.g. {key}={default!r}, the default"
    return f"pass {expected}"


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


# -- checks ----------------------------------------------------------------------------------------
def check_value(factory: Any, key: str, value: Any, what: str) -> Any:
    """``value`` for ``factory``'s parameter ``key``, validated by pydantic against its annotation.

    Args:
        factory: the class or function (its type hints, ``Annotated`` ranges included, are used).
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
    adapter = _adapter(factory, key)
    if adapter is None:
        return value
    try:
        return adapter.validate_python(value)
    except ValidationError:
        expected = _expected(param_hints(factory)[key])
        raise SafeReuseError(
            f"{what}: {key}={value!r} is invalid (expected {expected})", fix=_example(factory, key, expected)
        ) from None


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
    if not dataclasses.is_dataclass(obj):
        return
    cls = type(obj)
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        new = check_value(cls, f.name, value, what)
        if new is not value:
            object.__setattr__(obj, f.name, new)  # also works on frozen dataclasses


class Validated:
    """Base of parameter dataclasses whose fields are validated before any ``__post_init__`` of theirs.

    A subclass's own ``__post_init__`` (cross-field checks, derived defaults) runs after
    :func:`validate_fields`, so no subclass can skip the checks by forgetting
    ``super().__post_init__()``. Subclasses name themselves in messages with :meth:`_what`.

    Example:
        >>> from dataclasses import dataclass
        >>> from pydantic import Field
        >>> @dataclass
        ... class Knob(Validated):
        ...     level: Annotated[int, Field(ge=1)] = 3
        >>> Knob(level="4").level
        4
        >>> Knob(level=0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        safereuse.errors.SafeReuseError: 'Knob': level=0 is invalid (expected an integer ≥ 1) (fix: ...)
    """

    def _what(self) -> str:
        """Who takes the parameters, for messages (e.g. ``"defect 'pgd'"``)."""
        return repr(getattr(self, "name", "") or type(self).__name__)

    def __post_init__(self) -> None:
        validate_fields(self, self._what())

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is not None and not getattr(own, "_validates", False):

            @functools.wraps(own)
            def post_init(self: Validated) -> None:
                validate_fields(self, self._what())
                own(self)

            post_init._validates = True  # type: ignore[attr-defined]
            cls.__post_init__ = post_init  # type: ignore[method-assign]

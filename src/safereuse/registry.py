"""Name → factory registries, so that CLI, YAML and Python name the same things.

``--method remos --param ratio=0.1`` == ``{method: remos, ratio: 0.1}`` == ``ReMoS(ratio=0.1)``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import yaml

from .errors import SafeReuseError
from .params import validate_params

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    summary: str


class Registry(Generic[T]):
    """A named collection of factories (classes or functions).

    Args:
        kind: what the registry holds ("model", "dataset", ...), used in error messages.
        list_command: the CLI command that lists the names, quoted in error messages.

    Example:
        >>> reg = Registry("widget", "safereuse list widgets")
        >>> @reg.register("box", summary="a box")
        ... def make_box(size=1):
        ...     return ("box", size)
        >>> reg.create("box", size=3)
        ('box', 3)
    """

    def __init__(self, kind: str, list_command: str) -> None:
        self.kind = kind
        self.list_command = list_command
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, summary: str | None = None) -> Callable[[T], T]:
        """Decorator registering a class or factory function under ``name``: the one place the name is
        written. A class gets ``name`` set as its class attribute, so it must not define one itself.

        Args:
            name: the registry name (what the CLI, YAML and Python use).
            summary: one line for ``safereuse list``; default: the first line of the docstring.

        Returns:
            The decorator (it returns the object unchanged, ``name`` set on classes).
        """

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            if inspect.isclass(obj):
                own = obj.__dict__.get("name")
                if own not in (None, "", name):
                    raise ValueError(f"{obj.__name__} defines name={own!r} but is registered as {name!r}")
                obj.name = name  # type: ignore[attr-defined]
            doc = summary or (inspect.getdoc(obj) or "").split("\n")[0]
            self._entries[name] = Entry(name, obj, doc)
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._entries[name].obj
        except KeyError:
            close = difflib.get_close_matches(name, list(self._entries), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise SafeReuseError(
                f"unknown {self.kind} {name!r}",
                fix=f"{hint}run `{self.list_command}` for the choices",
            ) from None

    def create(self, name: str, /, **kwargs: Any) -> Any:
        """Build ``name`` with ``kwargs``, validated first (names, types, ranges: :mod:`safereuse.params`).

        Raises:
            SafeReuseError: an unknown name or parameter, or an invalid value, in one line.
        """
        factory: Any = self.get(name)
        return factory(**validate_params(factory, kwargs, f"{self.kind} {name!r}"))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        return sorted(self._entries)


# -- experiment kinds ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExperimentTable:
    """A report section that lists an experiment's rows.

    Attributes:
        title: the section title.
        columns: the columns shown, in order (those the rows lack are left out).
        digits: decimals of float columns (others are shown as they are).
    """

    title: str
    columns: tuple[str, ...]
    digits: dict[str, int]


@dataclass(frozen=True)
class ExperimentCurve:
    """A report section that draws ``ys`` against ``x``, one line per ``group`` value and one figure
    per scenario, each point the mean over the rows (subsets × seeds) with its 95 % t-interval.

    Attributes:
        title: the section title (also the figure titles').
        x: the column on the x axis (also the figures' file name prefix).
        ys: ``(column, name)`` of each panel: a share in [0, 1], drawn in %.
        group: the column that tells the lines apart.
    """

    title: str
    x: str
    ys: tuple[tuple[str, str], ...]
    group: str = "criterion"


class ExperimentKind(Protocol):
    """What a registered experiment kind (:data:`EXPERIMENTS`) gives the runner and the report.

    A kind is a class whose constructor takes its validated parameters (a dataclass: its fields are
    the spec's ``experiment.params`` and, resolved, part of every cell's key); the runner builds it,
    calls :meth:`run` on each scenario's teacher and data per seed, and the report draws its rows as
    the kind's :attr:`report` sections say.
    """

    #: the report sections of the kind's rows
    report: ClassVar[tuple[ExperimentTable | ExperimentCurve, ...]]

    def run(self, model: Any, bundle: Any, seed: int) -> list[dict[str, Any]]:
        """The experiment on ``model`` and its data ``bundle``: one flat dict per result row."""
        ...


#: Experiment kinds that a spec's ``experiment: {kind: ...}`` names. The runner and the report read
#: it and import no kind by name; a kind is registered when the module defining it is imported
#: (NNSlicer's ``slice-*`` kinds: :mod:`safereuse.applications`, which the CLI imports).
EXPERIMENTS: Registry[type[ExperimentKind]] = Registry("experiment kind", "safereuse list experiments")


def check_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any], what: str) -> dict[str, Any]:
    """Validate ``kwargs`` for ``factory`` (see :func:`safereuse.params.validate_params`); return them
    coerced.

    Example:
        >>> from safereuse.train import FitConfig
        >>> check_kwargs(FitConfig, {"lr": "1e-3"}, "teacher training")
        {'lr': 0.001}
    """
    return validate_params(factory, kwargs, what)


def parse_value(text: str) -> Any:
    """Parse a ``--param key=value`` value the way YAML would (numbers, bools, lists)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``["ratio=0.1", "reset=zero"]`` → ``{"ratio": 0.1, "reset": "zero"}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SafeReuseError(f"--param {item!r} is not key=value", fix="write e.g. --param lr=0.01")
        out[key.strip().replace("-", "_")] = parse_value(value.strip())
    return out

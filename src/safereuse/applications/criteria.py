"""Criteria: the registered strategies that score synapses (pruning, protection) or describe inputs
(detection), each a small dataclass with its own parameters and their ranges declared once.

Torch-Pruning injects its importance as an object; so do NNSlicer's applications:
:class:`~safereuse.applications.prune.ClassPruning`,
:class:`~safereuse.applications.protect.Protection` and
:class:`~safereuse.applications.detect.SliceDetector` take a :class:`Criterion` (or its name, or a
mapping ``{name: nnslicer, theta: 0.3}`` as YAML writes it), resolved by :func:`make_criterion`.

=================  =================  ===================================================================
name               parameters         used for
=================  =================  ===================================================================
``nnslicer``       ``theta``          synapse scores (each class's inputs sliced, |Σ contribution|) and
                                      detection (every synapse contribution of the input's slice)
``effectivepath``  ``path_share``     synapse scores (how many critical paths hold a synapse) and
                                      detection (the binary critical path; Qiu et al., CVPR 2019)
``featuremap``     —                  detection (per-layer mean activations)
``weight``         —                  synapse scores: the mean ``|w|`` of the synapse
``channel``        —                  synapse scores: the mean ``|w|`` of its output neuron
``random``         —                  synapse scores: seeded noise (the application's ``seed``)
=================  =================  ===================================================================

A new criterion is one class here: subclass :class:`Criterion`, declare its fields (ranges with
``Annotated[..., Field(...)]``), implement :meth:`Criterion.scores` and/or :meth:`Criterion.features`,
and register it with ``@CRITERIA.register("name")``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Annotated, Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from ..errors import SafeReuseError
from ..params import Validated, check_value, unknown_param_error
from ..registry import Registry
from .features import FeatureMapFeatures, Features, PathFeatures, SliceFeatures
from .synapses import (
    Scores,
    channel_scores,
    effectivepath_scores,
    nnslicer_scores,
    random_scores,
    weight_scores,
)

CRITERIA: Registry[type[Criterion]] = Registry("criterion", "safereuse list criteria")


@dataclass
class Criterion(Validated):
    """Base of every criterion; subclasses are dataclasses whose fields are its parameters.

    Class attributes: ``scores_synapses`` (usable by pruning and protection) and ``detects`` (usable
    by the detector), declared by each subclass and checked when an application takes it.
    """

    name: ClassVar[str] = ""
    scores_synapses: ClassVar[bool] = False
    detects: ClassVar[bool] = False

    def _what(self) -> str:
        return f"criterion {self.name!r}"

    def params(self) -> dict[str, Any]:
        """The criterion's own parameters (recorded next to its name)."""
        return asdict(self)

    def config(self) -> dict[str, Any]:
        """``{"name": ..., **params}``, the form YAML takes.

        Example:
            >>> NNSlicer(theta=0.2).config()
            {'name': 'nnslicer', 'theta': 0.2}
        """
        return {"name": self.name, **self.params()}

    def scores(
        self,
        model: nn.Module,
        x: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        classes: list[int] | None = None,
        *,
        profile_x: torch.Tensor | None = None,
        per_class: int | None = None,
        batch_size: int = 256,
        seed: int = 0,
        include_head: bool = False,
    ) -> Scores:
        """The synapse scores (layer → ``[C_out, C_in]``, higher = more important).

        Args:
            model: the network.
            x, y: inputs and labels (the criteria that slice need them).
            classes: the classes whose inputs count.
            profile_x: the inputs whose mean behaviour is the reference (default: ``x``).
            per_class: at most this many inputs per class (None: all).
            batch_size: slicing batch.
            seed: seed of a random criterion.
            include_head: score the head too.
        """
        raise _unfit(self.name, "scores")

    def features(self) -> Features:
        """A fresh feature extractor for the detector."""
        raise _unfit(self.name, "detects")


@CRITERIA.register("nnslicer", "NNSlicer: synapse contributions to the slice (Zhang et al. 2020)")
@dataclass
class NNSlicer(Criterion):
    """NNSlicer's synapse contributions (spec ``nnslicer.md``).

    Args:
        theta: the slicer's θ (drop each neuron's weakest inputs), in [0, 1).
    """

    scores_synapses: ClassVar[bool] = True
    detects: ClassVar[bool] = True
    theta: Annotated[float, Field(ge=0, lt=1)] = 0.3

    def scores(
        self,
        model,
        x=None,
        y=None,
        classes=None,
        *,
        profile_x=None,
        per_class=None,
        batch_size=256,
        seed=0,
        include_head=False,
    ) -> Scores:  # noqa: D102 - see Criterion.scores
        return nnslicer_scores(
            model, x, y, classes, theta=self.theta, profile_x=profile_x, per_class=per_class,
            batch_size=batch_size, include_head=include_head,
        )  # fmt: skip

    def features(self) -> Features:  # noqa: D102 - see Criterion.features
        return SliceFeatures(theta=self.theta)


@CRITERIA.register("effectivepath", "EffectivePath: critical paths (Qiu et al. 2019)")
@dataclass
class EffectivePath(Criterion):
    """EffectivePath's critical paths (:mod:`safereuse.slicing.effective_path`).

    Args:
        path_share: the share of each neuron's value its critical inputs must reach, in (0, 1].
    """

    scores_synapses: ClassVar[bool] = True
    detects: ClassVar[bool] = True
    path_share: Annotated[float, Field(gt=0, le=1)] = 0.5

    def scores(
        self,
        model,
        x=None,
        y=None,
        classes=None,
        *,
        profile_x=None,
        per_class=None,
        batch_size=256,
        seed=0,
        include_head=False,
    ) -> Scores:  # noqa: D102 - see Criterion.scores
        return effectivepath_scores(
            model, x, y, classes, path_share=self.path_share, per_class=per_class, batch_size=batch_size,
            include_head=include_head,
        )  # fmt: skip

    def features(self) -> Features:  # noqa: D102 - see Criterion.features
        return PathFeatures(path_share=self.path_share)


@CRITERIA.register("featuremap", "FeatureMap: per-layer mean activations (detection baseline)")
@dataclass
class FeatureMap(Criterion):
    """The paper's FeatureMap baseline: mean activation of every channel / unit of every layer."""

    detects: ClassVar[bool] = True

    def features(self) -> Features:  # noqa: D102 - see Criterion.features
        return FeatureMapFeatures()


@CRITERIA.register("weight", "L1 norm of each synapse's weights (|w|)")
@dataclass
class Weight(Criterion):
    """Magnitude pruning's score: the mean ``|w|`` of the synapse.

    Example:
        >>> sorted(Weight().scores(nn.Sequential(nn.Linear(2, 2))))
        ['0']
    """

    scores_synapses: ClassVar[bool] = True

    def scores(self, model, *_, seed=0, include_head=False, **__) -> Scores:  # noqa: D102 - Criterion.scores
        # data-free: the inputs, classes and profile the interface passes are not needed
        return weight_scores(model, include_head)


@CRITERIA.register("channel", "mean |w| of each synapse's output neuron (channel pruning)")
@dataclass
class Channel(Criterion):
    """Channel pruning's score: the mean ``|w|`` of the synapse's output neuron."""

    scores_synapses: ClassVar[bool] = True

    def scores(self, model, *_, seed=0, include_head=False, **__) -> Scores:  # noqa: D102 - Criterion.scores
        # data-free: the inputs, classes and profile the interface passes are not needed
        return channel_scores(model, include_head)


@CRITERIA.register("random", "seeded uniform noise (protection baseline)")
@dataclass
class Random(Criterion):
    """Seeded uniform noise (the seed is the application's, so a seed sweep varies it)."""

    scores_synapses: ClassVar[bool] = True

    def scores(self, model, *_, seed=0, include_head=False, **__) -> Scores:  # noqa: D102 - Criterion.scores
        # data-free: the inputs, classes and profile the interface passes are not needed
        return random_scores(model, include_head, seed=seed)


def names(use: str) -> list[str]:
    """The registered criteria for a use: ``scores`` (pruning, protection) or ``detects``.

    Example:
        >>> names("detects")
        ['effectivepath', 'featuremap', 'nnslicer']
    """
    flag = "scores_synapses" if use == "scores" else "detects"
    return [n for n in CRITERIA.names() if getattr(CRITERIA.get(n), flag)]


def loose_params() -> set[str]:
    """Every criterion parameter name (the old loose fields ``theta``, ``path_share``)."""
    return {f.name for n in CRITERIA.names() for f in fields(CRITERIA.get(n))}


def make_criterion(
    criterion: Criterion | str | Mapping[str, Any],
    loose: Mapping[str, Any] | None = None,
    *,
    use: str = "scores",
    what: str = "criterion",
) -> Criterion:
    """A criterion object from an object, a name or ``{name: ..., **params}``.

    The old loose form (a name plus ``theta`` / ``path_share`` beside the application's fields) is
    read too: each loose value is validated (messages name ``what``, as before) and goes to the
    criterion that has that parameter; a criterion without it ignores it (``pruning: {theta: 0.2}``
    for the criteria ``[nnslicer, weight]``). A parameter inside the mapping wins over a loose one.

    Args:
        criterion: the criterion.
        loose: loose criterion parameters (old form).
        use: ``scores`` (pruning, protection) or ``detects`` (the detector): checked.
        what: who takes the loose parameters, for messages (``"class-specific pruning"``).

    Returns:
        The criterion, validated.

    Raises:
        SafeReuseError: an unknown name or parameter, an invalid value, a criterion for another use.

    Example:
        >>> make_criterion({"name": "nnslicer", "theta": 0.2})
        NNSlicer(theta=0.2)
        >>> make_criterion("effectivepath", {"theta": 0.1, "path_share": 0.4})
        EffectivePath(path_share=0.4)
        >>> make_criterion("featuremap")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        safereuse.errors.SafeReuseError: criterion 'featuremap' does not score synapses (fix: use one of: ...
    """
    loose = dict(loose or {})
    if isinstance(criterion, Criterion):
        obj, own = criterion, None
    else:
        if isinstance(criterion, Mapping):
            own = dict(criterion)
            name = own.pop("name", None)
            if not isinstance(name, str):
                raise SafeReuseError(
                    f"a criterion mapping needs a name, got {dict(criterion)!r}",
                    fix="write e.g. criterion: {name: nnslicer, theta: 0.3}",
                )
        elif isinstance(criterion, str):
            name, own = criterion, {}
        else:
            raise SafeReuseError(
                f"criterion {criterion!r} is not a name or a mapping",
                fix=f"use one of: {', '.join(names(use))}",
            )
        if name not in CRITERIA:
            raise SafeReuseError(f"unknown criterion {name!r}", fix=f"use one of: {', '.join(names(use))}")
        cls = CRITERIA.get(name)
        mine = {f.name for f in fields(cls)}
        for key in own:
            if key not in mine:
                raise unknown_param_error(f"criterion {name!r}", key, mine)
        for key, value in loose.items():
            owner = cls if key in mine else _owner(key)
            value = check_value(owner, key, value, what)
            if key in mine:
                own.setdefault(key, value)
        obj = CRITERIA.create(name, **own)
    if not (obj.scores_synapses if use == "scores" else obj.detects):
        raise _unfit(obj.name, use)
    return obj


@dataclass
class CriterionScored(Validated):
    """What class-specific pruning and protection share: a criterion that scores synapses and the
    inputs it is computed on, each range declared once here.

    Args:
        criterion: a :class:`Criterion`, its name or ``{name: ..., **params}``.
        per_class: training inputs sliced per target class (None: all).
        profile_size: training inputs whose mean behaviour is NNSlicer's reference (the first ones).
        batch_size: slicing and training batch.
        seed: seed of the random criterion (and of the application's own draws).
    """

    what: ClassVar[str] = "synapse scoring"
    # Any: a Criterion, a name or a mapping; made a Criterion in __post_init__ (make_criterion checks it)
    criterion: Any = "nnslicer"
    per_class: Annotated[int, Field(ge=1)] | None = 1000
    profile_size: Annotated[int, Field(ge=1)] = 10000
    batch_size: Annotated[int, Field(ge=1)] = 256
    seed: int = 0

    def _what(self) -> str:
        return self.what

    def __post_init__(self) -> None:
        self.criterion = make_criterion(self.criterion, use="scores", what=self.what)

    @classmethod
    def from_params(cls, criterion: Any = "nnslicer", **params: Any) -> Any:
        """Build from a criterion plus flat parameters, the loose criterion ones (``theta``,
        ``path_share``) included: the old form of the CLI's ``--param`` and of a spec's ``pruning:``.

        Example:
            >>> from safereuse.applications.prune import ClassPruning
            >>> ClassPruning.from_params("nnslicer", theta=0.2, ratio=0.4).criterion
            NNSlicer(theta=0.2)
        """
        loose_names = loose_params()
        loose = {k: params.pop(k) for k in list(params) if k in loose_names}
        accepted = {f.name for f in fields(cls) if f.init} - {"criterion"}
        for key in params:
            if key not in accepted:
                raise unknown_param_error(cls.what, key, accepted | loose_names)
        return cls(make_criterion(criterion, loose, use="scores", what=cls.what), **params)

    def config(self) -> dict[str, Any]:
        """The criterion's name and parameters, then the application's (flat, as recorded before).

        Example:
            >>> from safereuse.applications.prune import ClassPruning
            >>> list(ClassPruning({"name": "nnslicer", "theta": 0.2}).config())[:3]
            ['criterion', 'theta', 'per_class']
        """
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.init and f.name != "criterion"}
        return {"criterion": self.criterion.name, **self.criterion.params(), **out}

    def scores(self, model: nn.Module, data: Any, classes: list[int]) -> Scores:
        """The synapse scores of the criterion for ``classes`` (the expensive part; reuse it)."""
        return self.criterion.scores(
            model, data.train.x, data.train.y, classes, profile_x=data.train.x[: self.profile_size],
            per_class=self.per_class, batch_size=self.batch_size, seed=self.seed,
        )  # fmt: skip


def _owner(key: str) -> type[Criterion]:
    """The first registered criterion with the parameter ``key`` (to validate a loose value)."""
    classes = [CRITERIA.get(n) for n in CRITERIA.names()]
    return next(c for c in classes if key in {f.name for f in fields(c)})


def _unfit(name: str, use: str) -> SafeReuseError:
    what = "score synapses" if use == "scores" else "describe inputs for detection"
    return SafeReuseError(f"criterion {name!r} does not {what}", fix=f"use one of: {', '.join(names(use))}")


__all__ = [
    "CRITERIA",
    "Channel",
    "Criterion",
    "CriterionScored",
    "EffectivePath",
    "FeatureMap",
    "NNSlicer",
    "Random",
    "Weight",
    "loose_params",
    "make_criterion",
    "names",
]

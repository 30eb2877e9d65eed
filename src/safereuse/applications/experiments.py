"""NNSlicer's application studies as runner experiment kinds (``experiment:`` in a spec).

A spec with a top-level ``experiment: {kind: KIND, params: {...}}`` runs one cell per scenario × seed:
the scenario's teacher (trained and cached as usual) is the model, its own data slice the data, and
the experiment kind does the work and returns rows for the report. Such a spec has no ``methods``,
``defects`` or ``student`` (see ``examples/slice-*.yaml``)::

    experiment:
      kind: slice-prune
      params: {criteria: [nnslicer, weight, channel], ratios: [0.1, 0.5, 0.9], subsets: 3}
    scenarios:
      - name: fmnist10
        teacher: {arch: resnet8, data: fashion-mnist, epochs: 6, seed: 0}
    seeds: [0]

Kinds (registered in :data:`safereuse.registry.EXPERIMENTS`, which the runner and the report read;
importing :mod:`safereuse.applications` registers them): ``slice-detect``
(:func:`~safereuse.applications.evaluation.evaluate_detection`), ``slice-prune`` (target-class accuracy vs
the pruning ratio over random class subsets, with and without fine-tuning), ``slice-protect``
(recovered accuracy vs the hidden share). Each kind declares its report sections (``report``); the
runner's side (checks, cells, the task) is :mod:`safereuse.runner.spec` / :mod:`~safereuse.runner.worker`,
the report's :mod:`safereuse.report.experiments`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import Field

from ..errors import SafeReuseError
from ..params import validate_fields
from ..registry import EXPERIMENTS, ExperimentCurve, ExperimentTable
from .detect import PAPER_ATTACKS, make_detectors
from .evaluation import DEFAULT_DETECTORS, evaluate_detection
from .protect import Protection
from .prune import ClassPruning, check_ratio, prune_curve


@EXPERIMENTS.register("slice-detect", "adversarial-input detection: slice k-NN vs the paper's and baselines")
@dataclass
class DetectExperiment:
    """Args: attacks (names, or ``paper`` for the paper's list), detectors, n_train, n_test,
    slow_sources (sources of the slow attacks, None: all), detector_params (for every detector)."""

    report: ClassVar[tuple[ExperimentTable, ...]] = (
        ExperimentTable(
            "Detection per attack (recall / precision %, Wilson 95 %; F1 / AUC bootstrap 95 %)",
            ("scenario", "seed", "attack", "detector", "n_success", "recall", "recall_ci", "precision",
             "precision_ci", "tp", "fp", "fn", "tn", "f1", "f1_ci", "auc", "auc_ci"),
            {"recall": 1, "precision": 1, "f1": 3, "auc": 3},
        ),
    )  # fmt: skip
    attacks: list[str] = field(default_factory=lambda: ["paper"])
    detectors: list[str] = field(default_factory=lambda: list(DEFAULT_DETECTORS))
    n_train: Annotated[int, Field(ge=1)] = 10000
    n_test: Annotated[int, Field(ge=1)] = 500
    slow_sources: Annotated[int, Field(ge=1)] | None = None
    detector_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_fields(self, "experiment slice-detect")
        make_detectors(self.detectors, self.detector_params)  # names and parameters, before any cell

    def run(self, model: Any, bundle: Any, seed: int) -> list[dict[str, Any]]:
        points = []
        for a in self.attacks:
            points += PAPER_ATTACKS if a == "paper" else [(a, a, {})]
        res = evaluate_detection(
            model, bundle, attacks=points, detectors=self.detectors, detector_params=self.detector_params,
            n_train=self.n_train, n_test=self.n_test, seed=seed, progress=False,
            slow_sources=self.slow_sources,
        )  # fmt: skip
        rows = []
        for a in res["attacks"]:
            for dn, m in a["detectors"].items():
                info = res["detectors"][dn]
                fit_s = info["seconds_fit"]
                rows.append({"attack": a["attack"], "detector": dn, "n_success": a["n_success"],
                             "n_sources": a["n_sources"], **m, "fit_seconds": fit_s,
                             "ms_per_input": 1000 * info["seconds_per_test_input"]})  # fmt: skip
        return rows


@EXPERIMENTS.register("slice-prune", "class-specific pruning: target-class accuracy vs ratio")
@dataclass
class PruneExperiment:
    """Args: criteria, ratios, subsets (random class subsets per seed), subset_size, finetune_epochs,
    and :class:`~safereuse.applications.prune.ClassPruning` parameters in ``pruning``."""

    report: ClassVar[tuple[ExperimentCurve, ...]] = (
        ExperimentCurve("Target-class accuracy vs pruning ratio", "ratio",
                        (("acc_pruned", "pruned"), ("acc_finetuned", "fine-tuned"))),
    )  # fmt: skip
    criteria: list[str | dict[str, Any]] = field(  # a name or {name: nnslicer, theta: 0.3}
        default_factory=lambda: ["nnslicer", "weight", "channel", "effectivepath"]
    )
    ratios: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    subsets: Annotated[int, Field(ge=1)] = 3
    subset_size: Annotated[int, Field(ge=1)] = 4
    finetune_epochs: Annotated[int, Field(ge=0)] = 1
    pruning: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_fields(self, "experiment slice-prune")
        for r in self.ratios:
            check_ratio(r)
        for c in self.criteria:
            ClassPruning.from_params(c, **self.pruning)

    def run(self, model: Any, bundle: Any, seed: int) -> list[dict[str, Any]]:
        if self.subset_size >= bundle.num_classes:
            raise SafeReuseError(
                f"subset_size {self.subset_size} leaves no class out of {bundle.num_classes}",
                fix="choose a smaller subset_size",
            )
        rng = np.random.default_rng(seed)
        rows = []
        for i in range(self.subsets):
            classes = sorted(int(c) for c in rng.choice(bundle.num_classes, self.subset_size, replace=False))
            for m in prune_curve(model, bundle, classes, criteria=self.criteria, ratios=self.ratios,
                                 finetune_epochs=self.finetune_epochs, base=self.pruning):  # fmt: skip
                rows.append({"subset": i, **m, "target_classes": ",".join(map(str, classes))})
        return rows


@EXPERIMENTS.register("slice-protect", "model protection: attacker's recovered accuracy vs hidden share")
@dataclass
class ProtectExperiment:
    """Args: criteria, hides, target_size (random target classes per seed; None = all classes), and
    :class:`~safereuse.applications.protect.Protection` parameters in ``protection``."""

    report: ClassVar[tuple[ExperimentCurve, ...]] = (
        ExperimentCurve("Attacker's recovered accuracy vs hidden share", "hide",
                        (("acc_target_recovered", "target classes"), ("acc_all_recovered", "all classes"))),
    )  # fmt: skip
    criteria: list[str | dict[str, Any]] = field(  # a name or {name: nnslicer, theta: 0.3}
        default_factory=lambda: ["nnslicer", "weight", "random", "effectivepath"]
    )
    hides: list[float] = field(default_factory=lambda: [0.5])
    target_size: Annotated[int, Field(ge=1)] | None = None
    protection: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_fields(self, "experiment slice-protect")
        for h in self.hides:
            check_ratio(h, "hide")
        for c in self.criteria:
            Protection.from_params(c, **self.protection)

    def run(self, model: Any, bundle: Any, seed: int) -> list[dict[str, Any]]:
        classes = None
        if self.target_size is not None:
            rng = np.random.default_rng(seed)
            classes = sorted(int(c) for c in rng.choice(bundle.num_classes, self.target_size, replace=False))
        rows = []
        for c in self.criteria:
            p = Protection.from_params(c, hide=self.hides[0], **{"seed": seed, **self.protection})
            labels = classes if classes is not None else list(range(bundle.num_classes))
            scores = p.scores(model, bundle, labels)
            for h in self.hides:
                p.hide = h
                res = p.protect(model, bundle, classes, scores=scores)
                p.attack(res, bundle)
                m = dict(res.metrics)
                m["target_classes"] = ",".join(map(str, m["target_classes"]))
                rows.append(m)
        return rows


__all__ = ["DetectExperiment", "ProtectExperiment", "PruneExperiment"]

"""NNSlicer's application studies and SeaM's direct reuse as runner experiment kinds (``experiment:``).

A spec with a top-level ``experiment: {kind: KIND, params: {...}}`` runs one cell per scenario × seed
(× part, for a kind with a ``split()`` method, e.g. ``seam-reengineer``: one per target ×
granularity): the scenario's teacher (trained and cached as usual) is the model, its own data slice
the data, and the experiment kind does the work and returns rows for the report. Such a spec has no
``methods``, ``defects`` or ``student`` (see ``examples/slice-*.yaml``, ``docs/results/seam-direct.yaml``)::

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
(recovered accuracy vs the hidden share); and SeaM's direct reuse, ``seam-reengineer``
(:class:`SeaMExperiment`: weights kept, channels removed, accuracy and speed per target problem ×
granularity, one cell each). Each kind declares its report sections (``report``); the
runner's side (checks, cells, the task) is :mod:`safereuse.runner.spec` / :mod:`~safereuse.runner.worker`,
the report's :mod:`safereuse.report.experiments`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import Field

from ..data import parse_classes
from ..data.targets import target_problem
from ..errors import SafeReuseError
from ..methods.seam import SeaM, measure_reengineered
from ..metrics import rate
from ..params import validate_fields, validate_params
from ..registry import EXPERIMENTS, ExperimentCurve, ExperimentTable
from ..slicing.maskparam import Granularity
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


def _target(t: Any) -> dict[str, Any]:
    """A ``targets`` entry, checked: ``{"classes": [ids...], "binary": bool}``."""
    what = "experiment seam-reengineer: target"
    if not isinstance(t, dict) or "classes" not in t or set(t) - {"classes", "binary"}:
        raise SafeReuseError(
            f"{what} {t!r} must be a mapping with classes (and binary)",
            fix="write e.g. {classes: 3-5, binary: false}",
        )
    classes = parse_classes(t["classes"]) or []
    binary = t.get("binary", False)
    if not isinstance(binary, bool):
        raise SafeReuseError(f"{what} binary={binary!r} must be true or false", fix="write binary: true")
    if binary and len(classes) != 1:
        raise SafeReuseError(
            f"{what} {t['classes']!r}: a binary target is one class", fix="e.g. {classes: 3, binary: true}"
        )
    if not binary and len(classes) < 2:
        raise SafeReuseError(
            f"{what} {t['classes']!r}: a multi-class target needs 2 classes or more",
            fix="add classes, or binary: true for one class against the others",
        )
    return {"classes": classes, "binary": binary}


def _rate(acc: float, n: int) -> dict[str, Any]:
    """An accuracy over ``n`` images as the report's rate: percent, ``k / n`` and its Wilson interval."""
    return rate(round(acc * n), n).to_dict()


@EXPERIMENTS.register(
    "seam-reengineer", "SeaM direct reuse: weights kept, channels removed, accuracy and speed per target"
)
@dataclass
class SeaMExperiment:
    """SeaM's direct reuse (Qi et al., ICSE 2023) measured on a scenario's teacher, per target problem ×
    granularity, as ``safereuse reengineer --json`` reports it
    (:func:`~safereuse.methods.seam.measure_reengineered`).

    The teacher's own data slice is the data: the target problem is drawn from its training split
    (searched on), its validation split (selection: the data spec's ``val_fraction``) and its test
    split (reported). The runner gives every target × granularity its own cell (:meth:`split`), so an
    interrupted study redoes at most one search per worker.

    Args:
        targets: target problems, ``{classes: "3-5" | [3, 4, 5] | 3, binary: bool}`` (dataset class
            ids among the teacher's classes; binary: one class against an equal-sized sample of the others).
        granularities: ``weight`` and / or ``channel`` (:class:`~safereuse.methods.SeaM`).
        seam: :class:`~safereuse.methods.SeaM` parameters for every search (not ``granularity``).
        threads: CPU threads of the latency measurement (both models alike).

    Rows: one per target × granularity (``target``, ``binary``, ``granularity``, the accuracies as rates
    ``{value %, k, n, ci_low, ci_high}`` (Wilson 95 %), ``weights_kept``, ``channels_removed``, FLOPs,
    latencies and speed-ups, ``selected_epoch``, ``selection_rule``, ``flops_weight``, ``seconds``), and
    one per search epoch (``curve``, ``epoch``, ``phase``, ``val_acc``, ``rho``) for the curves.

    Example:
        >>> e = SeaMExperiment(targets=[{"classes": "3-5"}], granularities=["channel"], seam={"epochs": 5})
        >>> [label for label, _ in e.split()]
        ['seam 3,4,5 channel']
        >>> SeaMExperiment(granularities=["filter"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        safereuse.errors.SafeReuseError: experiment seam-reengineer: granularities=['filter'] is invalid ...
    """

    report: ClassVar[tuple[ExperimentTable | ExperimentCurve, ...]] = (
        ExperimentTable(
            "SeaM direct reuse per target × granularity (test accuracy %, k / n, Wilson 95 %; latency ms)",
            ("scenario", "seed", "target", "binary", "granularity", "acc_original", "acc_original_kn",
             "acc_original_ci", "acc_reengineered", "acc_reengineered_kn", "acc_reengineered_ci",
             "weights_kept", "channels_removed", "flops_kept", "latency_b1_original",
             "latency_b1_reengineered", "speedup_b1", "latency_b64_original", "latency_b64_reengineered",
             "speedup_b64", "val_acc_original", "val_acc_reengineered", "selected_epoch", "selection_rule",
             "flops_weight", "seconds"),
            {"acc_original": 1, "acc_reengineered": 1, "weights_kept": 4, "channels_removed": 3,
             "flops_kept": 4, "latency_b1_original": 2, "latency_b1_reengineered": 2, "speedup_b1": 2,
             "latency_b64_original": 2, "latency_b64_reengineered": 2, "speedup_b64": 2,
             "val_acc_original": 1, "val_acc_reengineered": 1, "flops_weight": 2, "seconds": 0},
        ),
        ExperimentTable(
            "SeaM cost counts per target × granularity (FLOPs at batch 1)",
            ("scenario", "seed", "target", "granularity", "flops_original", "flops_reengineered",
             "flop_counter_original", "flop_counter_reengineered", "n", "n_val"),
            {},
        ),
        ExperimentCurve(
            "SeaM search: validation accuracy and weights kept ρ per epoch", "epoch",
            (("val_acc", "validation accuracy %"), ("rho", "weights kept ρ %")), group="curve",
        ),
    )  # fmt: skip
    targets: list[dict[str, Any]] = field(
        default_factory=lambda: [{"classes": 0, "binary": True}, {"classes": "0-2", "binary": False}]
    )
    granularities: list[Granularity] = field(default_factory=lambda: ["weight", "channel"])
    seam: dict[str, Any] = field(default_factory=dict)
    threads: Annotated[int, Field(ge=1)] = 2

    def __post_init__(self) -> None:
        validate_fields(self, "experiment seam-reengineer")
        if not self.targets or not self.granularities:
            raise SafeReuseError(
                "experiment seam-reengineer: targets and granularities must each name one at least",
                fix="e.g. targets: [{classes: 3, binary: true}], granularities: [weight]",
            )
        self.targets = [_target(t) for t in self.targets]
        if "granularity" in self.seam:
            raise SafeReuseError(
                "experiment seam-reengineer: seam.granularity is set per cell",
                fix="list it in granularities: instead",
            )
        self.seam = validate_params(SeaM, dict(self.seam), "experiment seam-reengineer: seam")
        for g in self.granularities:  # every search's parameters, before any cell runs
            SeaM(**self.seam, granularity=g)

    def split(self) -> list[tuple[str, dict[str, Any]]]:
        """One ``(label, params)`` per target × granularity: the runner's cells (one search each)."""
        out = []
        for t in self.targets:
            for g in self.granularities:
                label = f"seam {','.join(map(str, t['classes']))}{' binary' if t['binary'] else ''} {g}"
                out.append(
                    (
                        label,
                        {
                            "targets": [t],
                            "granularities": [g],
                            "seam": dict(self.seam),
                            "threads": self.threads,
                        },
                    )
                )
        return out

    def run(self, model: Any, bundle: Any, seed: int) -> list[dict[str, Any]]:
        ids = list(bundle.spec.classes) if bundle.spec.classes is not None else list(range(model.num_classes))
        rows: list[dict[str, Any]] = []
        for t in self.targets:
            outside = [c for c in t["classes"] if c not in ids]
            if outside:
                raise SafeReuseError(
                    f"target class {outside[0]} is outside the teacher's classes "
                    f"({', '.join(map(str, ids))})",
                    fix="choose target classes the teacher was trained on",
                )
            problem = target_problem(
                bundle, [ids.index(c) for c in t["classes"]], t["binary"], model.num_classes
            )
            name = ",".join(map(str, t["classes"]))
            for g in self.granularities:
                t0 = time.perf_counter()
                res = measure_reengineered(
                    SeaM(**self.seam, granularity=g),
                    model,
                    problem,
                    seed=seed,
                    progress=False,
                    threads=self.threads,
                )
                m, n, n_val = res.metrics, res.metrics["n"], len(problem.val)
                lo, lr = m["latency_original_ms"], m["latency_reengineered_ms"]
                rows.append({
                    "target": name, "binary": t["binary"], "granularity": g,
                    "acc_original": _rate(m["acc_original"], n),
                    "acc_reengineered": _rate(m["acc_reengineered"], n),
                    "n": n, "weights_kept": m["weights_kept"], "channels_removed": m["channels_removed"],
                    "flops_original": m["flops_original"], "flops_reengineered": m["flops_reengineered"],
                    "flops_kept": m["flops_reengineered"] / max(m["flops_original"], 1),
                    "flop_counter_original": m["flop_counter_original"],
                    "flop_counter_reengineered": m["flop_counter_reengineered"],
                    "latency_b1_original": lo["1"], "latency_b1_reengineered": lr["1"],
                    "speedup_b1": lo["1"] / lr["1"],
                    "latency_b64_original": lo["64"], "latency_b64_reengineered": lr["64"],
                    "speedup_b64": lo["64"] / lr["64"],
                    "val_acc_original": _rate(m["val_acc_original"], n_val),
                    "val_acc_reengineered": _rate(m["val_acc_reengineered"], n_val), "n_val": n_val,
                    "selected_epoch": m["selected_epoch"], "selection_rule": m["selection_rule"],
                    "flops_weight": m["flops_weight"], "search_seconds": res.found.search.seconds,
                    "seconds": time.perf_counter() - t0,
                    "channels_removed_per_layer": m["channels_removed_per_layer"],
                })  # fmt: skip
                curve = f"{name}{' binary' if t['binary'] else ''} {g}"
                rows += [
                    {"curve": curve, "epoch": h["epoch"], "phase": h.get("phase"), "val_acc": h["val_acc"],
                     "rho": h["rho"], "flops": h.get("flops")}
                    for h in res.found.search.history
                ]  # fmt: skip
        return rows


__all__ = ["DetectExperiment", "ProtectExperiment", "PruneExperiment", "SeaMExperiment"]

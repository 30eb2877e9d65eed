"""NNSlicer's application studies as runner experiments (``experiment:`` in a spec).

A spec with a top-level ``experiment: {kind: KIND, params: {...}}`` runs one cell per scenario × seed:
the scenario's teacher (trained and cached as usual) is the model, its own data slice the data, and
the experiment kind (:data:`EXPERIMENTS`) does the work and returns rows for the report. Such a spec
has no ``methods``, ``defects`` or ``student`` (see ``examples/slice-*.yaml``)::

    experiment:
      kind: slice-prune
      params: {criteria: [nnslicer, weight, channel], ratios: [0.1, 0.5, 0.9], subsets: 3}
    scenarios:
      - name: fmnist10
        teacher: {arch: resnet8, data: fashion-mnist, epochs: 6, seed: 0}
    seeds: [0]

Kinds: ``slice-detect`` (:func:`~safereuse.applications.tasks.evaluate_detection`), ``slice-prune``
(target-class accuracy vs the pruning ratio over random class subsets, with and without
fine-tuning), ``slice-protect`` (recovered accuracy vs the hidden share).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..errors import SafeReuseError
from ..params import validate_fields
from ..registry import Registry

EXPERIMENTS: Registry[type] = Registry("experiment kind", "safereuse run --help")


@EXPERIMENTS.register("slice-detect", "adversarial-input detection: NNSlicer vs FeatureMap vs EffectivePath")
@dataclass
class DetectExperiment:
    """Args: attacks (names, or ``paper`` for the paper's list), detectors, n_train, n_test,
    slow_sources (sources of the slow attacks, None: all), detector_params (for every detector)."""

    param_ranges: ClassVar[dict[str, str]] = {"n_train": ">= 1", "n_test": ">= 1", "slow_sources": ">= 1"}
    attacks: list[str] = field(default_factory=lambda: ["paper"])
    detectors: list[str] = field(default_factory=lambda: ["nnslicer", "featuremap", "effectivepath"])
    n_train: int = 10000
    n_test: int = 500
    slow_sources: int | None = None
    detector_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_fields(self, "experiment slice-detect")

    def run(self, model: Any, bundle: Any, seed: int) -> list[dict[str, Any]]:
        from .attacks import PAPER_ATTACKS
        from .tasks import evaluate_detection

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
                fit_s = info["seconds_vectors"] + info["seconds_tree"]
                rows.append({"attack": a["attack"], "detector": dn, "n_success": a["n_success"],
                             "n_sources": a["n_sources"], **m, "fit_seconds": fit_s,
                             "ms_per_input": 1000 * info["seconds_per_test_input"]})  # fmt: skip
        return rows


@EXPERIMENTS.register("slice-prune", "class-specific pruning: target-class accuracy vs ratio")
@dataclass
class PruneExperiment:
    """Args: criteria, ratios, subsets (random class subsets per seed), subset_size, finetune_epochs,
    and :class:`~safereuse.applications.prune.ClassPruning` parameters in ``pruning``."""

    param_ranges: ClassVar[dict[str, str]] = {
        "subsets": ">= 1",
        "subset_size": ">= 1",
        "finetune_epochs": ">= 0",
    }
    criteria: list[str] = field(default_factory=lambda: ["nnslicer", "weight", "channel", "effectivepath"])
    ratios: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    subsets: int = 3
    subset_size: int = 4
    finetune_epochs: int = 1
    pruning: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_fields(self, "experiment slice-prune")
        from .prune import ClassPruning, check_ratio

        for r in self.ratios:
            check_ratio(r)
        for c in self.criteria:
            ClassPruning(c, **self.pruning)

    def run(self, model: Any, bundle: Any, seed: int) -> list[dict[str, Any]]:
        from .prune import prune_curve

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

    param_ranges: ClassVar[dict[str, str]] = {"target_size": ">= 1"}
    criteria: list[str] = field(default_factory=lambda: ["nnslicer", "weight", "random", "effectivepath"])
    hides: list[float] = field(default_factory=lambda: [0.5])
    target_size: int | None = None
    protection: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_fields(self, "experiment slice-protect")
        from .protect import Protection
        from .prune import check_ratio

        for h in self.hides:
            check_ratio(h, "hide")
        for c in self.criteria:
            Protection(c, **self.protection)

    def run(self, model: Any, bundle: Any, seed: int) -> list[dict[str, Any]]:
        from .protect import Protection

        classes = None
        if self.target_size is not None:
            rng = np.random.default_rng(seed)
            classes = sorted(int(c) for c in rng.choice(bundle.num_classes, self.target_size, replace=False))
        rows = []
        for c in self.criteria:
            p = Protection(c, hide=self.hides[0], **{"seed": seed, **self.protection})
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


def make_experiment(kind: str, params: dict[str, Any]) -> Any:
    """The experiment ``kind`` with ``params`` (validated; one-line errors)."""
    return EXPERIMENTS.create(kind, **params)


# -- the runner's side -----------------------------------------------------------------------------
def check_experiment(loaded: Any) -> None:
    """Spec check: the kind exists, its parameters are valid, and grid keys are absent."""
    spec = loaded.spec
    exp = spec.experiment
    for key in ("methods", "defects", "select"):
        if getattr(spec, key):
            raise loaded.error(
                (key,), f"an experiment spec has no {key}", fix=f"remove {key}: or experiment:"
            )
    for i, sc in enumerate(spec.scenarios):
        if sc.student is not None:
            raise loaded.error(
                ("scenarios", i, "student"), "an experiment uses the teacher's own data; it has no student",
                fix="remove student:",
            )  # fmt: skip
    try:
        make_experiment(exp.kind, dict(exp.params))
    except SafeReuseError as exc:
        raise loaded.error(("experiment",), exc.problem, exc.fix) from None


def expand_experiment(loaded: Any) -> list[Any]:
    """One cell per seed × scenario (task ``experiment``)."""
    import json

    from ..runner.spec import CELL_VERSION, Cell, teacher_recipe
    from ..utils import config_hash, json_default

    spec = loaded.spec
    exp = make_experiment(spec.experiment.kind, dict(spec.experiment.params))
    cells = []
    for seed in spec.seeds:
        for sc in spec.scenarios:
            config = json.loads(json.dumps({
                "v": CELL_VERSION, "task": "experiment", "scenario": sc.name, "seed": seed,
                "teacher": teacher_recipe(sc.teacher, seed),
                "method": {"name": spec.experiment.kind, "params": dict(spec.experiment.params),
                           "config": asdict(exp)},
                "defects": [], "audit": {},
            }, default=json_default))  # fmt: skip
            cells.append(Cell(config_hash(config, 12), config, len(cells), spec.experiment.kind))
    return cells


def run_experiment(
    teacher_dir: str | Path, config: dict[str, Any], data_dir: str | None = None
) -> dict[str, Any]:
    """The experiment of a cell ``config`` on the teacher in ``teacher_dir`` and its data slice.

    Returns:
        The ledger metrics: ``{"teacher": {...}, "experiment": {"kind", "rows", "seconds"}}``.
    """
    from ..artifacts import load_model
    from ..data import DataSpec, load_data

    art = load_model(teacher_dir, device="cpu")
    bundle = load_data(DataSpec(**config["teacher"]["data"], data_dir=data_dir))
    exp = make_experiment(config["method"]["name"], config["method"]["params"])
    t0 = time.perf_counter()
    rows = exp.run(art.model, bundle, int(config["seed"]))
    return {
        "teacher": {"hash": art.hash, "test_acc": (art.manifest.get("metrics") or {}).get("test_acc"),
                    "n_test": (art.manifest.get("metrics") or {}).get("n_test")},
        "experiment": {"kind": config["method"]["name"], "rows": rows, "seconds": time.perf_counter() - t0},
    }  # fmt: skip


# -- report ----------------------------------------------------------------------------------------
def experiment_frame(cells: list[dict[str, Any]]) -> pd.DataFrame:
    """Every row of every done experiment cell, with its scenario and seed."""
    rows = []
    for c in cells:
        m = c.get("metrics") or {}
        for r in (m.get("experiment") or {}).get("rows", []):
            flat = {k: v for k, v in r.items() if not isinstance(v, (dict, list))}
            for k in ("recall", "precision"):
                if isinstance(r.get(k), dict):
                    flat[k] = r[k].get("value")
                    flat[f"{k}_ci"] = f"[{_f(r[k].get('ci_low'))}, {_f(r[k].get('ci_high'))}]"
            for k in ("f1_ci", "auc_ci"):
                if isinstance(r.get(k), list):
                    flat[k] = f"[{_f(r[k][0], 3)}, {_f(r[k][1], 3)}]"
            rows.append({"scenario": c["scenario"], "seed": c["seed"], **flat})
    return pd.DataFrame(rows)


def _f(v: Any, d: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{float(v):.{d}f}"


def _mean_ci(v: pd.Series) -> tuple[float, float, float]:
    from ..metrics import student_t_quantile

    v = v.dropna().astype(float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    m = float(v.mean())
    if len(v) == 1:
        return m, math.nan, math.nan
    h = student_t_quantile(0.975, len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return m, m - h, m + h


def experiment_sections(
    cells: list[dict[str, Any]],
) -> list[tuple[str, pd.DataFrame, list[tuple[str, str, bytes]]]]:
    """Report sections ``(title, table, figures)`` of an experiment run (none for a grid run)."""
    df = experiment_frame(cells)
    kinds = {c["method"] for c in cells}
    if df.empty:
        return []
    out = []
    if "slice-detect" in kinds:
        cols = ["scenario", "seed", "attack", "detector", "n_success", "recall", "recall_ci", "precision",
                "precision_ci", "tp", "fp", "fn", "tn", "f1", "f1_ci", "auc", "auc_ci"]  # fmt: skip
        t = df[[c for c in cols if c in df]].copy()
        for c in ("recall", "precision"):
            t[c] = t[c].map(_f)
        for c in ("f1", "auc"):
            t[c] = t[c].map(lambda v: _f(v, 3))
        out.append(
            ("Detection per attack (recall / precision %, Wilson 95 %; F1 / AUC bootstrap 95 %)", t, [])
        )
    if "slice-prune" in kinds:
        out += _curve_sections(df, "ratio", [("acc_pruned", "pruned"), ("acc_finetuned", "fine-tuned")],
                               "Target-class accuracy vs pruning ratio")  # fmt: skip
    if "slice-protect" in kinds:
        out += _curve_sections(df, "hide", [("acc_target_recovered", "target classes"),
                                            ("acc_all_recovered", "all classes")],
                               "Attacker's recovered accuracy vs hidden share")  # fmt: skip
    return out


def _png_bytes(fig: Any) -> bytes:
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _curve_sections(
    df: pd.DataFrame, x: str, ys: list[tuple[str, str]], title: str
) -> list[tuple[str, pd.DataFrame, list[tuple[str, str, bytes]]]]:
    from matplotlib.figure import Figure

    from ..report.plots import colors

    ys = [(col, name) for col, name in ys if col in df]
    rows = []
    for (sc, crit, xv), g in df.groupby(["scenario", "criterion", x], sort=False):
        row: dict[str, Any] = {"scenario": sc, "criterion": crit, x: xv, "runs": len(g)}
        for col, name in ys:
            if col in g:
                m, lo, hi = _mean_ci(g[col] * 100)
                row[f"{name} %"] = f"{_f(m)} [{_f(lo)}, {_f(hi)}]"
                row[f"_{col}"] = (m, lo, hi)
        rows.append(row)
    table = pd.DataFrame(rows)
    figs = []
    palette = colors(list(dict.fromkeys(df["criterion"])))
    for sc in dict.fromkeys(table["scenario"]):
        fig = Figure(figsize=(5 * len(ys), 3.6))
        for i, (col, name) in enumerate(ys):
            ax = fig.add_subplot(1, len(ys), i + 1)
            for crit, g in table[table["scenario"] == sc].groupby("criterion", sort=False):
                if f"_{col}" not in g:
                    continue
                pts = [v for v in g[f"_{col}"] if isinstance(v, tuple)]
                if not pts:
                    continue
                xs = list(g[x])[: len(pts)]
                m = [p[0] for p in pts]
                ax.plot(xs, m, marker="o", label=crit, color=palette[crit])
                lo = [p[1] if math.isfinite(p[1]) else p[0] for p in pts]
                hi = [p[2] if math.isfinite(p[2]) else p[0] for p in pts]
                ax.fill_between(xs, lo, hi, color=palette[crit], alpha=0.15)
            ax.set_xlabel(x)
            ax.set_ylabel(f"{name} accuracy %")
            ax.set_title(f"{sc}: {name}")
            ax.legend(fontsize=7)
        fig.tight_layout()
        figs.append((f"{title} — {sc}", f"{x}_{sc}.png", _png_bytes(fig)))
    shown = table[[c for c in table.columns if not c.startswith("_")]]
    return [(f"{title} (mean over subsets × seeds, 95 % t-interval)", shown, figs)]


__all__ = [
    "EXPERIMENTS",
    "DetectExperiment",
    "ProtectExperiment",
    "PruneExperiment",
    "check_experiment",
    "expand_experiment",
    "experiment_frame",
    "experiment_sections",
    "make_experiment",
    "run_experiment",
]

"""From the ledger to tables: one record per (cell, defect), and aggregates over seeds.

All rates are percentages. ``acc`` is the student's clean accuracy on its whole test split (from the
student's manifest, ``n_test`` images); the audit's rates are over its (possibly sub-sampled) test
images: ``dir`` over the ``n`` clean-correct ones, with the cell's 95 % Wilson interval.

Aggregates (one row per scenario × method label × defect) give the mean ± sample standard deviation
over seeds and a 95 % interval for the mean that counts both seed and image variation
(:func:`safereuse.metrics.seed_interval`: Student's t with ``S − 1`` degrees of freedom on the
per-seed rates, its standard error widened by the binomial variance of the audited images, which
every seed shares; one seed → that cell's Wilson interval). A Wilson interval of the counts pooled
over seeds would be too narrow: the seeds reuse the same images and differ by more than binomial noise.

Comparisons (:func:`paired_vs`, :func:`comparisons`) take one method minus a reference seed by seed
(:func:`safereuse.metrics.seed_difference`), mark the differences whose interval excludes 0 and say
how many seeds would resolve the others (:func:`safereuse.metrics.seeds_to_resolve`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import SafeReuseError
from ..metrics import CI_NONE, seed_difference, seed_interval, seeds_to_resolve
from ..runner.ledger import LEDGER_FILE, Ledger
from ..runner.rundir import read_run_spec

#: Across-seed columns of ``results.csv``: the same on every row of one scenario × method label ×
#: defect (done cells only); ``seeds_ci_method`` says how ``seeds_*_ci_*`` were computed
#: (:data:`~safereuse.metrics.CI_SEEDS_T` or, with one seed, :data:`~safereuse.metrics.CI_ONE_SEED`).
SEED_COLUMNS = [
    "seeds",
    *(f"seeds_{m}_{s}" for m in ("acc", "dir", "asr", "rob") for s in ("mean", "std", "ci_low", "ci_high")),
    "seeds_ci_method",
]

#: Columns of ``results.csv`` (one row per cell and defect; a failed cell has one row, no defect).
#: ``ci_low``/``ci_high`` (DIR), ``asr_ci_*`` and ``rob_ci_*`` are the cell's own 95 % Wilson intervals;
#: ``seeds_*`` are the across-seed figures of :data:`SEED_COLUMNS`.
COLUMNS = [
    "cell_id",
    "scenario",
    "method",
    "label",
    "seed",
    "status",
    "defect",
    "kind",
    "acc",
    "n_test",
    "audit_acc",
    "audit_n",
    "dir",
    "n",
    "k",
    "ci_low",
    "ci_high",
    "asr",
    "asr_n",
    "asr_ci_low",
    "asr_ci_high",
    "teacher_rate",
    "rob",
    "rob_n",
    "rob_ci_low",
    "rob_ci_high",
    "teacher_acc",
    "teacher_backdoor_asr",
    "seconds",
    "teacher_dir",
    "student_dir",
    "error",
    *SEED_COLUMNS,
]


@dataclass
class RunData:
    """Everything a report shows.

    Attributes:
        rundir: the run directory.
        spec: ``spec.json`` (hash, name, normalised spec).
        spec_text: the spec YAML as given.
        cells: ledger rows of the current spec, in grid order.
        records: one row per (cell, defect) — the ``results.csv`` table.
    """

    rundir: Path
    spec: dict[str, Any]
    spec_text: str
    cells: list[dict[str, Any]]
    records: pd.DataFrame

    @property
    def scenarios(self) -> list[str]:
        return list(dict.fromkeys(c["scenario"] for c in self.cells))

    @property
    def labels(self) -> list[str]:
        return list(dict.fromkeys(c["label"] for c in self.cells))

    @property
    def defects(self) -> list[str]:
        d = self.records["defect"].dropna()
        return list(dict.fromkeys(d))


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v).replace(" ", "")


def defect_labels(cells: list[dict[str, Any]]) -> dict[str, str]:
    """Report names of the spec's defect points: the name, plus the parameters that differ between
    points of the same defect (``seed`` aside). Keyed by the JSON of ``{"name", "params"}``."""
    points: dict[str, tuple[str, dict[str, Any]]] = {}
    for c in cells:
        for d in c["config"].get("defects", []):
            params = {k: v for k, v in d["params"].items() if k != "seed"}
            points.setdefault(json.dumps(d, sort_keys=True), (d["name"], params))
    by_name: dict[str, list[dict[str, Any]]] = {}
    for name, params in points.values():
        if params not in by_name.setdefault(name, []):
            by_name[name].append(params)
    out = {}
    for key, (name, params) in points.items():
        variants = by_name[name]
        if len(variants) == 1:
            out[key] = name
            continue
        keys = sorted({k for p in variants for k in p})
        varying = [k for k in keys if len({_short(p.get(k)) for p in variants}) > 1]
        out[key] = f"{name}({','.join(f'{k}={_short(params.get(k))}' for k in varying)})"
    return out


def _pct(v: Any) -> float:
    return math.nan if v is None else 100.0 * float(v)


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def load_run(rundir: str | Path) -> RunData:
    """Read a run directory's spec and ledger into :class:`RunData`.

    Raises:
        SafeReuseError: not a run directory (no ledger or no spec).
    """
    rundir = Path(rundir)
    if not rundir.is_dir():
        raise SafeReuseError(
            f"run directory {rundir} does not exist", fix="pass the --out of `safereuse run`"
        )
    if not (rundir / LEDGER_FILE).is_file():
        raise SafeReuseError(
            f"{rundir} has no results ledger", fix="run `safereuse run SPEC --out DIR` first"
        )
    spec = read_run_spec(rundir)
    if spec is None:
        raise SafeReuseError(f"{rundir} has no spec.json", fix="re-run `safereuse run SPEC --out DIR`")
    spec_text = (rundir / "spec.yaml").read_text() if (rundir / "spec.yaml").is_file() else ""
    with Ledger(rundir / LEDGER_FILE, create=False) as led:
        cells = led.rows(spec.get("spec_hash"))
    labels = defect_labels(cells)
    recs: list[dict[str, Any]] = []
    for c in cells:
        m = c["metrics"] or {}
        st, te = m.get("student") or {}, m.get("teacher") or {}
        audit = m.get("audit") or {}
        art = c["artifacts"] or {}
        base = {
            "cell_id": c["id"],
            "scenario": c["scenario"],
            "method": c["method"],
            "label": c["label"],
            "seed": c["seed"],
            "status": c["status"],
            "acc": _pct(st.get("test_acc")),
            "n_test": st.get("n_test"),
            "audit_acc": _num((audit.get("acc") or {}).get("value")),
            "audit_n": (audit.get("acc") or {}).get("n"),
            "teacher_acc": _pct(te.get("test_acc")),
            "teacher_backdoor_asr": _pct(te.get("teacher_asr")),
            "seconds": c["seconds"],
            "teacher_dir": art.get("teacher"),
            "student_dir": art.get("student"),
            "error": c["error"],
        }
        rows = audit.get("rows") or []
        cfg_defects = c["config"].get("defects", [])
        if not rows:
            recs.append(base)
            continue
        for i, r in enumerate(rows):
            key = json.dumps(cfg_defects[i], sort_keys=True) if i < len(cfg_defects) else None
            n = r.get("n") or 0
            d = _num(r.get("dir"))
            recs.append(
                {
                    **base,
                    "defect": labels.get(key, r.get("defect")) if key else r.get("defect"),
                    "kind": r.get("kind"),
                    "dir": d,
                    "n": n,
                    "k": round(d * n / 100) if math.isfinite(d) else 0,
                    "ci_low": _num(r.get("ci_low")),
                    "ci_high": _num(r.get("ci_high")),
                    "asr": _num(r.get("asr")),
                    "asr_n": r.get("asr_n"),
                    "asr_ci_low": _num(r.get("asr_ci_low")),
                    "asr_ci_high": _num(r.get("asr_ci_high")),
                    "teacher_rate": _num(r.get("teacher_rate")),
                    "rob": _num(r.get("rob")),
                    "rob_n": r.get("rob_n"),
                    "rob_ci_low": _num(r.get("rob_ci_low")),
                    "rob_ci_high": _num(r.get("rob_ci_high")),
                }
            )
    df = pd.DataFrame.from_records(recs, columns=[c for c in COLUMNS if c not in SEED_COLUMNS])
    agg = aggregate(RunData(rundir, spec, spec_text, cells, df))
    # the across-seed figures on every row of their group (rows with a defect are done cells' rows)
    keys = ["scenario", "label", "defect"]
    src = {c: ("seeds" if c == "seeds" else c.removeprefix("seeds_")) for c in SEED_COLUMNS}
    if agg.empty:
        df = df.assign(**dict.fromkeys(SEED_COLUMNS, None))
    else:
        per_group = agg[keys + list(src.values())].rename(columns={v: k for k, v in src.items()})
        df = df.merge(per_group, on=keys, how="left")
    return RunData(rundir, spec, spec_text, cells, df[COLUMNS])


def _mean_std(s: pd.Series) -> tuple[float, float]:
    v = s.dropna().astype(float)
    if len(v) == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _counts(rates: pd.Series, ns: pd.Series) -> list[tuple[int, int]]:
    """Per-seed ``(k, n)`` from a rate in percent and its denominator (seeds without either skipped)."""
    out = []
    for r, n in zip(rates, ns, strict=True):
        if r is None or n is None or not (math.isfinite(float(r)) and math.isfinite(float(n))) or n <= 0:
            continue
        out.append((round(float(r) * int(n) / 100), int(n)))
    return out


def _seed_figures(name: str, rates: pd.Series, ns: pd.Series) -> dict[str, Any]:
    """``{name}_mean/_std/_ci_low/_ci_high`` over seeds (mean ± std of the rates as given; the
    interval from :func:`~safereuse.metrics.seed_interval` on the counts) and that interval's method."""
    m, s = _mean_std(rates)
    si = seed_interval(_counts(rates, ns))
    return {
        f"{name}_mean": m,
        f"{name}_std": s,
        f"{name}_ci_low": si.ci_low,
        f"{name}_ci_high": si.ci_high,
        f"{name}_ci_method": si.method,
    }


def aggregate(data: RunData) -> pd.DataFrame:
    """One row per scenario × method label × defect, over the done cells' seeds.

    Columns: ``scenario, label, defect, kind, seeds``; for each of ``acc, dir, asr, rob`` the mean and
    sample std over seeds and the 95 % interval ``_ci_low, _ci_high`` of
    :func:`~safereuse.metrics.seed_interval` (seed and image variation; ``nan`` where the rate does not
    apply); ``ci_method`` (the DIR interval's method, see :data:`~safereuse.metrics.CI_SEEDS_T`);
    ``k, n`` (DIR counts summed over seeds, shown for scale, not used by the interval) and the mean
    ``teacher_rate``. Percentages throughout.
    """
    df = data.records
    done = df[(df["status"] == "done") & df["defect"].notna()]
    out = []
    for (sc, label, defect), g in done.groupby(["scenario", "label", "defect"], sort=False):
        figs: dict[str, Any] = {}
        for name, rate_col, n_col in (("acc", "acc", "n_test"), ("dir", "dir", "n"), ("asr", "asr", "asr_n"),
                                      ("rob", "rob", "rob_n")):  # fmt: skip
            figs.update(_seed_figures(name, g[rate_col], g[n_col]))
        method = figs.pop("dir_ci_method")
        for name in ("acc", "asr", "rob"):
            figs.pop(f"{name}_ci_method")
        out.append(
            {
                "scenario": sc,
                "label": label,
                "defect": defect,
                "kind": g["kind"].iloc[0],
                "seeds": int(g["seed"].nunique()),
                **figs,
                "ci_method": method if method != CI_NONE else None,
                "k": int(g["k"].sum()),
                "n": int(g["n"].fillna(0).sum()),
                "teacher_rate": _mean_std(g["teacher_rate"])[0],
            }
        )
    return pd.DataFrame(out)


def method_summary(data: RunData) -> pd.DataFrame:
    """One row per scenario × method label: cells done/failed/other, ACC mean ± std over seeds and its
    95 % interval (:func:`~safereuse.metrics.seed_interval`)."""
    cells = data.records.drop_duplicates("cell_id")
    out = []
    for (sc, label), g in cells.groupby(["scenario", "label"], sort=False):
        done = g[g["status"] == "done"]
        acc = _seed_figures("acc", done["acc"], done["n_test"])
        out.append(
            {
                "scenario": sc,
                "label": label,
                "done": len(done),
                "failed": int((g["status"] == "failed").sum()),
                "other": int((~g["status"].isin(["done", "failed"])).sum()),
                "acc_mean": acc["acc_mean"],
                "acc_std": acc["acc_std"],
                "acc_ci_low": acc["acc_ci_low"],
                "acc_ci_high": acc["acc_ci_high"],
                "teacher_acc": _mean_std(done["teacher_acc"])[0],
            }
        )
    df = pd.DataFrame(out)
    if df.empty:
        return df
    sc_order = {s: i for i, s in enumerate(data.scenarios)}
    lab_order = {lab: i for i, lab in enumerate(data.labels)}
    key = df["scenario"].map(sc_order) * 10_000 + df["label"].map(lab_order)
    return df.assign(_k=key).sort_values("_k", kind="stable").drop(columns="_k").reset_index(drop=True)


#: The pair whose accuracy gap says what reuse buys in a scenario: fine-tune the teacher vs train
#: the same architecture from scratch on the student's data (ReMoS's two reference points).
REUSE_METHOD, SCRATCH_METHOD = "finetune", "retrain"


#: Rate columns of the records a paired comparison can take, each with its denominator column. ``acc``
#: is one figure per cell; the others are one per (cell, defect).
DENOMINATORS = {"acc": "n_test", "dir": "n", "asr": "asr_n", "rob": "rob_n"}


def _count(rate: Any, n: Any) -> tuple[int, int] | None:
    """One seed's ``(k, n)`` from a rate in percent and its denominator; None where either is missing."""
    if rate is None or n is None:
        return None
    r, m = float(rate), float(n)
    if not (math.isfinite(r) and math.isfinite(m)) or m <= 0:
        return None
    return round(r * int(m) / 100), int(m)


def paired_vs(data: RunData, reference: str, column: str = "acc", z: float = 1.96) -> pd.DataFrame:
    """Each method's rate minus a reference method's, seed by seed, per scenario (and per defect).

    Seeds are paired (seed ``s`` of both methods shares the student's training sample and the test
    images); the interval is :func:`~safereuse.metrics.seed_difference`'s, from each seed's counts
    (the rate and its denominator of :data:`DENOMINATORS`), so each seed's binomial variance counts.
    The reference is the first label of method ``reference`` in the scenario; scenarios without one
    have no rows, and so do defects the reference was not audited on.

    Args:
        data: the run.
        reference: the reference *method* (e.g. ``"finetune"`` or ``"retrain"``).
        column: a key of :data:`DENOMINATORS`: ``"acc"`` (one row per scenario × label) or a
            per-defect rate, ``"dir"``, ``"asr"``, ``"rob"`` (one row per scenario × label × defect).
        z: normal quantile of the interval's level (1.96 → 95 %).

    Returns:
        One row per scenario × label (× defect; the reference's label excluded): ``scenario, label,
        method, defect`` (None for ``acc``), ``seeds`` (paired seeds used), ``diff_mean, diff_std,
        diff_ci_low, diff_ci_high`` (percentage points), ``ci_method``, ``image_var`` (points², see
        :class:`~safereuse.metrics.SeedDifference`), ``ref_label`` (the reference's label) and
        ``value_mean, ref_mean`` (percent, means over the paired seeds).

    Raises:
        SafeReuseError: ``column`` is not a rate the records hold.

    Example (scenario ``s``: remos's DIR 10 / 20 % of 100 images against fine-tune's 30 / 40 %):

        >>> import pandas as pd
        >>> recs = pd.DataFrame({"cell_id": list("abcd"), "scenario": "s", "status": "done",
        ...     "method": ["finetune", "finetune", "remos", "remos"], "seed": [0, 1, 0, 1],
        ...     "defect": "penultimate", "dir": [30.0, 40.0, 10.0, 20.0], "n": 100})
        >>> recs["label"] = recs["method"]
        >>> r = paired_vs(RunData(Path("."), {}, "", [], recs), "finetune", "dir").iloc[0]
        >>> r["label"], r["defect"], int(r["seeds"])
        ('remos', 'penultimate', 2)
        >>> [round(float(r[c]), 1) for c in ("diff_mean", "diff_std", "diff_ci_low", "diff_ci_high")]
        [-20.0, 0.0, -94.9, 54.9]
    """
    if column not in DENOMINATORS:
        raise SafeReuseError(
            f"cannot compare {column!r}: not a rate of the records",
            fix=f"use one of {', '.join(DENOMINATORS)}",
        )
    n_col = DENOMINATORS[column]
    recs = data.records
    per_cell = column == "acc"
    rows = recs.drop_duplicates("cell_id") if per_cell else recs[recs["defect"].notna()]
    done = rows[rows["status"] == "done"]
    groups = ["label"] if per_cell else ["defect", "label"]
    out = []
    for sc, g in done.groupby("scenario", sort=False):
        ref = g[g["method"] == reference]
        if ref.empty:
            continue
        ref_label = ref["label"].iloc[0]
        ref = ref[ref["label"] == ref_label]
        for key, m in g[g["label"] != ref_label].groupby(groups, sort=False):
            defect, label = (None, key[0]) if per_cell else key
            r = ref if per_cell else ref[ref["defect"] == defect]
            m, r = m.drop_duplicates("seed").set_index("seed"), r.drop_duplicates("seed").set_index("seed")
            seeds = [s for s in m.index if s in r.index]
            a = [_count(m.at[s, column], m.at[s, n_col]) for s in seeds]
            b = [_count(r.at[s, column], r.at[s, n_col]) for s in seeds]
            used = [s for s, x, y in zip(seeds, a, b, strict=True) if x and y]
            if not used:
                continue
            d = seed_difference(a, b, z)
            out.append(
                {
                    "scenario": sc,
                    "label": label,
                    "method": m["method"].iloc[0],
                    "defect": defect,
                    "seeds": d.seeds,
                    "diff_mean": d.mean,
                    "diff_std": d.std,
                    "diff_ci_low": d.ci_low,
                    "diff_ci_high": d.ci_high,
                    "ci_method": d.method,
                    "image_var": d.image_var,
                    "ref_label": ref_label,
                    "value_mean": float(m.loc[used, column].astype(float).mean()),
                    "ref_mean": float(r.loc[used, column].astype(float).mean()),
                }
            )
    return pd.DataFrame(out)


def acc_vs_retrain(data: RunData, scratch: str = SCRATCH_METHOD) -> pd.DataFrame:
    """Each method's test accuracy minus retraining's, seed by seed, per scenario
    (:func:`paired_vs` on ``acc``).

    Returns:
        One row per scenario × method label (the reference excluded): ``scenario, label, method,
        seeds, gain_mean, gain_std, gain_ci_low, gain_ci_high`` (percentage points) and
        ``acc_mean, ref_acc_mean`` (percent, over the paired seeds).
    """
    df = paired_vs(data, scratch, "acc")
    names = {f"diff_{s}": f"gain_{s}" for s in ("mean", "std", "ci_low", "ci_high")}
    names |= {"value_mean": "acc_mean", "ref_mean": "ref_acc_mean"}
    cols = ["scenario", "label", "method", "seeds", *names]
    return df[cols].rename(columns=names) if not df.empty else df


#: The most seeds :func:`comparisons` considers when it says how many would resolve a difference.
MAX_SEEDS = 100
#: Marks of a resolved difference: its interval wholly below / above 0.
BELOW, ABOVE = "▼", "▲"
#: Columns of :func:`comparisons` (and of the report's ``comparisons.csv``).
COMPARISON_COLUMNS = [
    "scenario",
    "label",
    "method",
    "ref_label",
    "metric",
    "defect",
    "compared",
    "seeds",
    "diff_mean",
    "diff_std",
    "diff_ci_low",
    "diff_ci_high",
    "ci_method",
    "image_var",
    "resolved",
    "mark",
    "seeds_to_resolve",
    "verdict",
    "value_mean",
    "ref_mean",
]


def _verdict(seeds: int, resolved: bool, mark: str, needed: int | None, mean: float, image_var: float,
             max_seeds: int, z: float) -> str:  # fmt: skip
    if resolved:
        return f"{mark} resolved"
    if seeds < 2:
        return "one seed: run ≥ 2 to estimate the seed spread"
    if needed is not None:
        return f"needs ≈ {needed} seeds"
    if mean == 0:
        return "not resolvable at this effect size (no difference observed)"
    floor = z * math.sqrt(image_var) if math.isfinite(image_var) else math.nan
    if math.isfinite(mean) and floor >= abs(mean):  # more seeds cannot help, more test inputs can
        return f"not resolvable at this effect size (below the test-set noise, ± {floor:.1f} pt)"
    return f"not resolvable at this effect size (> {max_seeds} seeds)"


def comparisons(
    data: RunData, reference: str = REUSE_METHOD, max_seeds: int = MAX_SEEDS, z: float = 1.96
) -> pd.DataFrame:
    """What is resolved: each method minus ``reference`` on ACC and on every audited defect's DIR,
    per scenario, paired by seed (:func:`paired_vs`), with a mark where the 95 % interval excludes 0
    and, from the observed spread, how many seeds would resolve a difference of the observed size
    (:func:`~safereuse.metrics.seeds_to_resolve`).

    Args:
        data: the run.
        reference: the reference method (its first label in each scenario); default fine-tune.
        max_seeds: the most seeds worth suggesting.
        z: normal quantile of the level (1.96 → 95 %).

    Returns:
        One row per scenario × label × compared figure (ACC first, then the defects in the run's
        order), columns :data:`COMPARISON_COLUMNS`: :func:`paired_vs`'s plus ``metric`` (``acc`` or
        ``dir``), ``compared`` (``ACC`` or ``DIR <defect>``), ``resolved`` (the interval excludes 0),
        ``mark`` (``▼`` below, ``▲`` above, empty), ``seeds_to_resolve`` (None with fewer than 2
        seeds or beyond ``max_seeds``) and ``verdict`` (``▼ resolved``, ``needs ≈ N seeds``, ``not
        resolvable at this effect size (...)``).

    Example (3 seeds, 1,000 images each: remos's DIR 10 / 12 / 14 % against fine-tune's 40 / 44 / 48 %
    is resolved; its ACC, 70 / 80 / 75 % against 80 % each time, differs by −5 ± 5 points, which
    about 14 seeds would resolve):

        >>> import pandas as pd
        >>> recs = pd.DataFrame({"cell_id": list("abcdef"), "scenario": "s", "status": "done",
        ...     "method": ["finetune"] * 3 + ["remos"] * 3, "seed": [0, 1, 2] * 2, "n_test": 1000,
        ...     "acc": [80.0, 80.0, 80.0, 70.0, 80.0, 75.0], "defect": "pgd", "n": 1000,
        ...     "dir": [40.0, 44.0, 48.0, 10.0, 12.0, 14.0]})
        >>> recs["label"] = recs["method"]
        >>> c = comparisons(RunData(Path("."), {}, "", [], recs))
        >>> for r in c.itertuples():
        ...     print(r.compared, round(r.diff_mean, 1), r.mark, r.seeds_to_resolve, r.verdict)
        ACC -5.0  14 needs ≈ 14 seeds
        DIR pgd -32.0 ▼ 2 ▼ resolved
    """
    order = {d: i for i, d in enumerate(data.defects)}
    parts = [paired_vs(data, reference, metric, z).assign(metric=metric) for metric in ("acc", "dir")]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    df = pd.concat(parts, ignore_index=True)
    df["compared"] = [
        "ACC" if m == "acc" else f"DIR {d}" for m, d in zip(df["metric"], df["defect"], strict=True)
    ]
    sc_order = {s: i for i, s in enumerate(data.scenarios or list(dict.fromkeys(df["scenario"])))}
    lab_order = {lab: i for i, lab in enumerate(data.labels or list(dict.fromkeys(df["label"])))}
    key = [
        (
            sc_order.get(sc, len(sc_order)),
            lab_order.get(lab, len(lab_order)),
            -1 if m == "acc" else order.get(d, 0),
        )
        for sc, lab, m, d in zip(df["scenario"], df["label"], df["metric"], df["defect"], strict=True)
    ]
    df = df.iloc[sorted(range(len(df)), key=key.__getitem__)].reset_index(drop=True)
    resolved = (df["diff_ci_low"] > 0) | (df["diff_ci_high"] < 0)
    marks = [
        BELOW if hi < 0 else ABOVE if lo > 0 else ""
        for lo, hi in zip(df["diff_ci_low"], df["diff_ci_high"], strict=True)
    ]
    needed = [
        seeds_to_resolve(m, sd, v, z=z, max_seeds=max_seeds) if s >= 2 else None
        for m, sd, v, s in zip(df["diff_mean"], df["diff_std"], df["image_var"], df["seeds"], strict=True)
    ]
    verdicts = [
        _verdict(int(s), bool(r), mk, n, float(m), float(v), max_seeds, z)
        for s, r, mk, n, m, v in zip(
            df["seeds"], resolved, marks, needed, df["diff_mean"], df["image_var"], strict=True
        )
    ]
    out = df.assign(resolved=resolved, mark=marks, verdict=verdicts)
    out["seeds_to_resolve"] = pd.Series(needed, dtype=object)
    return out[COMPARISON_COLUMNS]


def reuse_gain(data: RunData) -> pd.DataFrame:
    """What reuse buys per scenario: fine-tune's test accuracy minus retraining's (paired seeds).

    Example (a run whose scenario ``s`` has fine-tune at 80 / 90 % and retrain at 60 / 70 %):

        >>> import pandas as pd
        >>> recs = pd.DataFrame({"cell_id": list("abcd"), "scenario": "s", "status": "done",
        ...     "method": ["finetune", "finetune", "retrain", "retrain"], "seed": [0, 1, 0, 1],
        ...     "acc": [80.0, 90.0, 60.0, 70.0], "n_test": 100})
        >>> recs["label"] = recs["method"]
        >>> g = reuse_gain(RunData(Path("."), {}, "", [], recs)).iloc[0]
        >>> [round(float(g[c]), 1) for c in ("gain_mean", "gain_std", "gain_ci_low", "gain_ci_high")]
        [20.0, 0.0, -54.9, 94.9]

    Returns:
        :func:`acc_vs_retrain`'s rows for :data:`REUSE_METHOD` (its first label per scenario).
    """
    df = acc_vs_retrain(data)
    if df.empty:
        return df
    return df[df["method"] == REUSE_METHOD].drop_duplicates("scenario").reset_index(drop=True)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points when DIR (x) is minimised and ACC (y) maximised,
    sorted by DIR.

    Example:
        >>> pareto_front([(10, 80), (20, 90), (15, 70), (30, 85)])
        [0, 1]
    """
    ok = [i for i, (x, y) in enumerate(points) if math.isfinite(x) and math.isfinite(y)]
    front = []
    for i in ok:
        xi, yi = points[i]
        dominated = any(
            points[j][0] <= xi and points[j][1] >= yi and (points[j][0] < xi or points[j][1] > yi) for j in ok
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


__all__ = [
    "COLUMNS",
    "DENOMINATORS",
    "REUSE_METHOD",
    "SCRATCH_METHOD",
    "RunData",
    "ABOVE",
    "BELOW",
    "COMPARISON_COLUMNS",
    "MAX_SEEDS",
    "acc_vs_retrain",
    "aggregate",
    "comparisons",
    "defect_labels",
    "load_run",
    "method_summary",
    "paired_vs",
    "pareto_front",
    "reuse_gain",
]

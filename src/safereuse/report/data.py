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
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import SafeReuseError
from ..metrics import CI_NONE, seed_difference, seed_interval
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


def acc_vs_retrain(data: RunData, scratch: str = SCRATCH_METHOD) -> pd.DataFrame:
    """Each method's test accuracy minus retraining's, seed by seed, per scenario.

    Seeds are paired (seed ``s`` of both methods shares the few-shot sample and the test images);
    the interval is :func:`~safereuse.metrics.seed_difference`'s. The reference is the first label
    of method ``scratch`` in the scenario; scenarios without one have no rows.

    Returns:
        One row per scenario × method label (the reference excluded): ``scenario, label, method,
        seeds, gain_mean, gain_std, gain_ci_low, gain_ci_high`` (percentage points) and
        ``acc_mean, ref_acc_mean`` (percent, over the paired seeds).
    """
    cells = data.records.drop_duplicates("cell_id")
    done = cells[(cells["status"] == "done") & cells["acc"].notna() & cells["n_test"].notna()]
    out = []
    for sc, g in done.groupby("scenario", sort=False):
        ref = g[g["method"] == scratch]
        if ref.empty:
            continue
        ref = ref[ref["label"] == ref["label"].iloc[0]].drop_duplicates("seed").set_index("seed")
        for label, m in g[g["label"] != ref["label"].iloc[0]].groupby("label", sort=False):
            m = m.drop_duplicates("seed").set_index("seed")
            seeds = [s for s in m.index if s in ref.index]
            if not seeds:
                continue
            d = seed_difference(
                [_counts(m.loc[[s], "acc"], m.loc[[s], "n_test"])[0] for s in seeds],
                [_counts(ref.loc[[s], "acc"], ref.loc[[s], "n_test"])[0] for s in seeds],
            )
            out.append(
                {
                    "scenario": sc,
                    "label": label,
                    "method": m["method"].iloc[0],
                    "seeds": d.seeds,
                    "gain_mean": d.mean,
                    "gain_std": d.std,
                    "gain_ci_low": d.ci_low,
                    "gain_ci_high": d.ci_high,
                    "acc_mean": float(m.loc[seeds, "acc"].mean()),
                    "ref_acc_mean": float(ref.loc[seeds, "acc"].mean()),
                }
            )
    return pd.DataFrame(out)


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
    "REUSE_METHOD",
    "SCRATCH_METHOD",
    "RunData",
    "acc_vs_retrain",
    "aggregate",
    "defect_labels",
    "load_run",
    "method_summary",
    "pareto_front",
    "reuse_gain",
]

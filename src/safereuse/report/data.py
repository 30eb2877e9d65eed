"""From the ledger to tables: one record per (cell, defect), and aggregates over seeds.

All rates are percentages. ``acc`` is the student's clean accuracy on its whole test split (from the
student's manifest, ``n_test`` images); the audit's rates are over its (possibly sub-sampled) test
images: ``dir`` over the ``n`` clean-correct ones, with a 95 % Wilson interval.

Aggregates (one row per scenario × method label × defect) give the mean ± sample standard deviation
over seeds and a *pooled* Wilson interval: the inherited counts and the ``n`` of every seed added up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import SafeReuseError
from ..metrics import wilson_interval
from ..runner.core import read_run_spec
from ..runner.ledger import LEDGER_FILE, Ledger

#: Columns of ``results.csv`` (one row per cell and defect; a failed cell has one row, no defect).
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
    "teacher_rate",
    "rob",
    "teacher_acc",
    "teacher_backdoor_asr",
    "seconds",
    "teacher_dir",
    "student_dir",
    "error",
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
    import json

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
    import json

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
                    "teacher_rate": _num(r.get("teacher_rate")),
                    "rob": _num(r.get("rob")),
                }
            )
    df = pd.DataFrame.from_records(recs, columns=COLUMNS)
    return RunData(rundir, spec, spec_text, cells, df)


def _mean_std(s: pd.Series) -> tuple[float, float]:
    v = s.dropna().astype(float)
    if len(v) == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def aggregate(data: RunData) -> pd.DataFrame:
    """One row per scenario × method label × defect, over the done cells' seeds.

    Columns: ``scenario, label, defect, kind, seeds, acc_mean, acc_std, dir_mean, dir_std, k, n,
    wilson_low, wilson_high, asr_mean, asr_std, teacher_rate`` (percentages; ``k``/``n`` pooled).
    """
    df = data.records
    done = df[(df["status"] == "done") & df["defect"].notna()]
    out = []
    for (sc, label, defect), g in done.groupby(["scenario", "label", "defect"], sort=False):
        acc_m, acc_s = _mean_std(g["acc"])
        dir_m, dir_s = _mean_std(g["dir"])
        asr_m, asr_s = _mean_std(g["asr"])
        k, n = int(g["k"].sum()), int(g["n"].fillna(0).sum())
        lo, hi = wilson_interval(k, n) if n else (math.nan, math.nan)
        out.append(
            {
                "scenario": sc,
                "label": label,
                "defect": defect,
                "kind": g["kind"].iloc[0],
                "seeds": int(g["seed"].nunique()),
                "acc_mean": acc_m,
                "acc_std": acc_s,
                "dir_mean": dir_m,
                "dir_std": dir_s,
                "k": k,
                "n": n,
                "wilson_low": 100 * lo if math.isfinite(lo) else math.nan,
                "wilson_high": 100 * hi if math.isfinite(hi) else math.nan,
                "asr_mean": asr_m,
                "asr_std": asr_s,
                "teacher_rate": _mean_std(g["teacher_rate"])[0],
            }
        )
    return pd.DataFrame(out)


def method_summary(data: RunData) -> pd.DataFrame:
    """One row per scenario × method label: cells done/failed/other, ACC mean ± std over seeds."""
    cells = data.records.drop_duplicates("cell_id")
    out = []
    for (sc, label), g in cells.groupby(["scenario", "label"], sort=False):
        done = g[g["status"] == "done"]
        acc_m, acc_s = _mean_std(done["acc"])
        out.append(
            {
                "scenario": sc,
                "label": label,
                "done": len(done),
                "failed": int((g["status"] == "failed").sum()),
                "other": int((~g["status"].isin(["done", "failed"])).sum()),
                "acc_mean": acc_m,
                "acc_std": acc_s,
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


__all__ = ["COLUMNS", "RunData", "aggregate", "defect_labels", "load_run", "method_summary", "pareto_front"]

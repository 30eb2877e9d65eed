"""Report sections of experiment specs (``experiment:``): tables and curves of the kinds' rows.

Each registered experiment kind (:data:`safereuse.registry.EXPERIMENTS`) declares its sections as
data (``report``: :class:`~safereuse.registry.ExperimentTable`,
:class:`~safereuse.registry.ExperimentCurve`); this module draws them, so the report names no kind.
A kind that is not registered in this process gets one table of all its rows.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from ..metrics import student_t_quantile
from ..registry import EXPERIMENTS, ExperimentCurve, ExperimentTable
from .plots import colors, png_bytes

#: ``(title, table, figures)``; a figure is ``(title, file name, png bytes)``
Section = tuple[str, pd.DataFrame, list[tuple[str, str, bytes]]]


def experiment_frame(cells: list[dict[str, Any]]) -> pd.DataFrame:
    """Every row of every done experiment cell, with its scenario and seed; an interval (a rate's
    ``{"value", "ci_low", "ci_high"}``, :class:`safereuse.metrics.Rate` as a dict) becomes its value
    and a ``[low, high]`` text column ``<name>_ci`` (and ``<name>_kn``, ``k/n``, when it has its counts).

    Example:
        >>> rows = [{"attack": "fgsm", "recall": {"value": 50.0, "ci_low": 30.0, "ci_high": 70.0}}]
        >>> cell = {"scenario": "s", "seed": 0, "metrics": {"experiment": {"rows": rows}}}
        >>> experiment_frame([cell]).to_dict("records")
        [{'scenario': 's', 'seed': 0, 'attack': 'fgsm', 'recall': 50.0, 'recall_ci': '[30.0, 70.0]'}]
        >>> rows = [{"acc": {"value": 80.0, "k": 8, "n": 10, "ci_low": 49.0, "ci_high": 94.3}}]
        >>> cell = {"scenario": "s", "seed": 0, "metrics": {"experiment": {"rows": rows}}}
        >>> experiment_frame([cell]).iloc[0, 2:].to_dict()
        {'acc': 80.0, 'acc_ci': '[49.0, 94.3]', 'acc_kn': '8/10'}
    """
    rows = []
    for c in cells:
        m = c.get("metrics") or {}
        for r in (m.get("experiment") or {}).get("rows", []):
            flat = {k: v for k, v in r.items() if not isinstance(v, (dict, list))}
            for k, v in r.items():
                if isinstance(v, dict) and {"value", "ci_low", "ci_high"} <= set(v):
                    flat[k] = v.get("value")
                    flat[f"{k}_ci"] = f"[{_f(v.get('ci_low'))}, {_f(v.get('ci_high'))}]"
                    if "k" in v and "n" in v:
                        flat[f"{k}_kn"] = f"{v['k']}/{v['n']}"
            for k in ("f1_ci", "auc_ci"):
                if isinstance(r.get(k), list):
                    flat[k] = f"[{_f(r[k][0], 3)}, {_f(r[k][1], 3)}]"
            rows.append({"scenario": c["scenario"], "seed": c["seed"], **flat})
    return pd.DataFrame(rows)


def _f(v: Any, d: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{float(v):.{d}f}"


def _mean_ci(v: pd.Series) -> tuple[float, float, float]:
    v = v.dropna().astype(float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    m = float(v.mean())
    if len(v) == 1:
        return m, math.nan, math.nan
    h = student_t_quantile(0.975, len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return m, m - h, m + h


def experiment_sections(cells: list[dict[str, Any]]) -> list[Section]:
    """Report sections ``(title, table, figures)`` of an experiment run (none for a grid run), in the
    order of the registered kinds, then the unregistered ones.

    Example:
        >>> experiment_sections([])
        []
    """
    kinds = sorted({c["method"] for c in cells})  # a grid's methods have no experiment rows: skipped
    out: list[Section] = []
    for kind in kinds:
        df = experiment_frame([c for c in cells if c["method"] == kind])
        if df.empty:
            continue
        views = EXPERIMENTS.get(kind).report if kind in EXPERIMENTS else (ExperimentTable(kind, (), {}),)
        for view in views:
            out += _curve_sections(df, view) if isinstance(view, ExperimentCurve) else [_table(df, view)]
    return out


def _table(df: pd.DataFrame, view: ExperimentTable) -> Section:
    t = df[[c for c in view.columns if c in df]].copy() if view.columns else df.copy()
    own = [c for c in t.columns if c not in ("scenario", "seed")]
    if own:  # rows of another section (e.g. a kind's per-epoch rows) have none of the table's columns
        t = _whole(t[t[own].notna().any(axis=1)], skip=set(view.digits))
    for c, d in view.digits.items():
        if c in t:
            t[c] = t[c].map(lambda v, d=d: _f(v, d))
    return (view.title, t, [])


def _whole(t: pd.DataFrame, skip: set[str] = frozenset(), only: set[str] | None = None) -> pd.DataFrame:
    """``t`` with its float columns of whole numbers back as integers (a row of another section
    turned an integer column into floats with its blanks)."""
    t = t.copy()
    for c in t.columns:
        if c in skip or (only is not None and c not in only) or t[c].dtype.kind != "f":
            continue
        v = t[c].dropna()
        if len(v) and bool((v == v.round()).all()):
            t[c] = t[c].astype("Int64")
    return t


def _unit(name: str) -> str:
    """A curve panel's column name: ``"<name> %"``, or the name itself when it says ``%`` already
    (a panel that is not an accuracy names its quantity in full, e.g. ``"weights kept ρ %"``)."""
    return name if name.endswith("%") else f"{name} %"


def _curve_sections(df: pd.DataFrame, view: ExperimentCurve) -> list[Section]:
    x, title, group = view.x, view.title, view.group
    df = _whole(df.dropna(subset=[c for c in (x, group) if c in df]), only={x})  # the curve's rows only
    ys = [(col, name) for col, name in view.ys if col in df]
    rows = []
    for (sc, crit, xv), g in df.groupby(["scenario", group, x], sort=False):
        row: dict[str, Any] = {"scenario": sc, group: crit, x: xv, "runs": len(g)}
        for col, name in ys:
            if col in g:
                m, lo, hi = _mean_ci(g[col] * 100)
                row[_unit(name)] = f"{_f(m)} [{_f(lo)}, {_f(hi)}]"
                row[f"_{col}"] = (m, lo, hi)
        rows.append(row)
    table = pd.DataFrame(rows)
    figs = []
    palette = colors(list(dict.fromkeys(df[group])))
    for sc in dict.fromkeys(table["scenario"]):
        fig = Figure(figsize=(5 * len(ys), 3.6))
        for i, (col, name) in enumerate(ys):
            ax = fig.add_subplot(1, len(ys), i + 1)
            for crit, g in table[table["scenario"] == sc].groupby(group, sort=False):
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
            ax.set_ylabel(_unit(name) if name.endswith("%") else f"{name} accuracy %")
            ax.set_title(f"{sc}: {name}")
            ax.legend(fontsize=7)
        fig.tight_layout()
        figs.append((f"{title} — {sc}", f"{x}_{sc}.png", png_bytes(fig)))
    shown = table[[c for c in table.columns if not c.startswith("_")]]
    return [(f"{title} (mean over subsets × seeds, 95 % t-interval)", shown, figs)]


__all__ = ["Section", "experiment_frame", "experiment_sections"]

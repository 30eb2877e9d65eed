"""Report figures (matplotlib, Agg, no global pyplot state): PNG bytes.

- :func:`tradeoff_figure` — per defect: ACC (y) vs DIR (x), one panel per scenario, each method label
  at its mean over seeds, and the Pareto front (low DIR, high ACC) as a line.
- :func:`robustness_figure` — per white-box defect (one with a *Rob*, e.g. PGD-20): ACC (y) vs Rob
  (x), one panel per scenario, and the Pareto front (high Rob, high ACC) — CARTL's trade-off plot.
- :func:`method_bars` — per scenario: bars of ACC and of each defect's DIR (and ASR for backdoors, Rob
  for white-box defects), the mean over seeds.

Error bars are the 95 % interval over seeds and images of
:func:`safereuse.metrics.seed_interval` (asymmetric where it is clipped to [0, 100]), not ± std.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .data import pareto_front

_PALETTE = [
    "#4477AA",
    "#EE6677",
    "#228833",
    "#CCBB44",
    "#66CCEE",
    "#AA3377",
    "#BBBBBB",
    "#000000",
    "#EE7733",
    "#0077BB",
    "#33BBEE",
    "#EE3377",
    "#CC3311",
    "#009988",
]


def colors(labels: Sequence[str]) -> dict[str, str]:
    """A stable colour per method label (Tol's colour-blind-safe palette, cycled)."""
    return {lab: _PALETTE[i % len(_PALETTE)] for i, lab in enumerate(labels)}


def png_bytes(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (110 dpi, tight), drawn with Agg (no pyplot state)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _finite(v: float) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _err(mean: float, lo: float, hi: float) -> tuple[float, float]:
    """(below, above) error-bar lengths of an interval around its mean (0, 0 when undefined)."""
    if not (_finite(mean) and _finite(lo) and _finite(hi)):
        return 0.0, 0.0
    return max(0.0, mean - lo), max(0.0, hi - mean)


def _acc_scatter(
    sub: pd.DataFrame,
    scenarios: Sequence[str],
    palette: dict[str, str],
    x: str,
    higher_is_better: bool,
    xlabel: str,
    title: str,
) -> bytes | None:
    """Per-scenario ACC-vs-``x`` scatter (means, 95 % bars) with the Pareto front: ACC maximised,
    ``x`` minimised (DIR) or maximised (Rob). None when no scenario has a row."""
    panels = [s for s in scenarios if (sub["scenario"] == s).any()]
    if not panels:
        return None
    ncol = min(3, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    labels = list(dict.fromkeys(sub["label"]))
    # many points: no labels in the panels (they overlap) and one legend under the figure, with
    # marker shapes as well as colours (a palette repeats)
    many = len(labels) > 8
    markers = {lab: "osD^vP*Xhp<>"[k % 12] if many else "o" for k, lab in enumerate(labels)}
    legend_rows = math.ceil(len(labels) / 2) if many else 0
    fig = Figure(figsize=(4.6 * ncol, 3.9 * nrow + 0.16 * legend_rows))
    for i, sc in enumerate(panels):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        g = sub[sub["scenario"] == sc].reset_index(drop=True)
        pts = list(zip(g[f"{x}_mean"].astype(float), g["acc_mean"].astype(float), strict=True))
        for j, r in g.iterrows():
            px, py = pts[j]
            if not (_finite(px) and _finite(py)):
                continue
            xe = _err(px, r[f"{x}_ci_low"], r[f"{x}_ci_high"])
            ye = _err(py, r["acc_ci_low"], r["acc_ci_high"])
            ax.errorbar(px, py, xerr=[[xe[0]], [xe[1]]], yerr=[[ye[0]], [ye[1]]], fmt=markers[r["label"]],
                        ms=7, color=palette.get(r["label"], "#444444"), ecolor="#888888", capsize=3,
                        label=r["label"], zorder=3)  # fmt: skip
            if not many:
                ax.annotate(r["label"], (px, py), textcoords="offset points", xytext=(5, 4), fontsize=7)
        # pareto_front minimises x: hand it −x when higher is better, then draw from low to high x
        sign = -1.0 if higher_is_better else 1.0
        front = sorted(pareto_front([(sign * a, b) for a, b in pts]), key=lambda k: pts[k][0])
        if front:
            ax.step([pts[k][0] for k in front], [pts[k][1] for k in front],
                    where="pre" if higher_is_better else "post", color="#222222", lw=1.2, ls="--",
                    zorder=2, label="Pareto front")  # fmt: skip
        ax.set_title(sc, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("student ACC (%)")
        ax.grid(alpha=0.3)
        if i == 0 and not many:
            ax.legend(fontsize=7, loc="best")
    if many:
        handles: dict[str, object] = {}
        for ax in fig.axes:
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(lab, h)
        fig.legend(
            list(handles.values()), list(handles), loc="lower center", ncol=2, fontsize=7, frameon=False
        )
        fig.suptitle(title, fontsize=11)
        fig.tight_layout(rect=(0, (0.15 * legend_rows + 0.2) / fig.get_figheight(), 1, 1))
        return png_bytes(fig)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return png_bytes(fig)


def tradeoff_figure(
    agg: pd.DataFrame, defect: str, scenarios: Sequence[str], palette: dict[str, str]
) -> bytes | None:
    """ACC-vs-DIR scatter with the Pareto front for one defect (None when nothing to draw)."""
    return _acc_scatter(
        agg[agg["defect"] == defect], scenarios, palette, "dir", False,
        f"DIR {defect} (%) — lower is safer",
        f"Accuracy vs inheritance of {defect} (mean over seeds; bars: 95% interval over seeds and images)",
    )  # fmt: skip


def robustness_figure(
    agg: pd.DataFrame, defect: str, scenarios: Sequence[str], palette: dict[str, str]
) -> bytes | None:
    """ACC-vs-Rob scatter with the Pareto front (both maximised) for one white-box defect; None when
    the defect has no robust accuracy (not white-box) or nothing is finished."""
    return _acc_scatter(
        agg[(agg["defect"] == defect) & agg["rob_mean"].notna()], scenarios, palette, "rob", True,
        f"Rob {defect} (%) — higher is more robust",
        f"Accuracy vs robust accuracy under {defect} (mean over seeds; bars: 95% interval over seeds "
        "and images)",
    )  # fmt: skip


def method_bars(
    agg: pd.DataFrame, methods: pd.DataFrame, scenario: str, labels: Sequence[str], palette: dict[str, str]
) -> bytes | None:
    """Per-method bars for one scenario: ACC, each defect's DIR, backdoor ASR (None when empty)."""
    sub = agg[agg["scenario"] == scenario]
    ms = methods[methods["scenario"] == scenario]
    labs = [lab for lab in labels if (ms["label"] == lab).any()]
    if not labs or sub.empty:
        return None
    panels: list[tuple[str, pd.DataFrame, str]] = [("ACC (%)", sub, "acc")]
    for d in dict.fromkeys(sub["defect"]):
        g = sub[sub["defect"] == d]
        panels.append((f"DIR {d} (%)", g, "dir"))
        for name, col in (("ASR", "asr"), ("Rob", "rob")):
            if g[f"{col}_mean"].notna().any():
                panels.append((f"{name} {d} (%)", g, col))
    ncol = min(3, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    width = max(4.2, 0.55 * len(labs) + 1.5)
    fig = Figure(figsize=(width * ncol, 3.6 * nrow))
    for i, (title, g, col) in enumerate(panels):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        if col == "acc":  # one ACC per label (the same for every defect row)
            g = g.drop_duplicates("label")
        g = g.set_index("label")
        xs = list(range(len(labs)))
        vals = [float(g[f"{col}_mean"].get(lab, math.nan)) for lab in labs]
        errs = [
            _err(
                v, float(g[f"{col}_ci_low"].get(lab, math.nan)), float(g[f"{col}_ci_high"].get(lab, math.nan))
            )
            for v, lab in zip(vals, labs, strict=True)
        ]
        ax.bar(
            xs,
            [v if _finite(v) else 0 for v in vals],
            color=[palette.get(lab, "#777") for lab in labs],
            yerr=[[e[0] for e in errs], [e[1] for e in errs]],
            capsize=3,
            ecolor="#333333",
            alpha=0.9,
        )
        ns = [int(g["seeds"].get(lab, 0)) if "seeds" in g.columns else 0 for lab in labs]
        ax.set_xticks(xs)
        ax.set_xticklabels(
            [f"{lab} (n={n})" for lab, n in zip(labs, ns, strict=True)], rotation=35, ha="right", fontsize=7
        )
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        f"{scenario}: mean over seeds (n = seeds; bars: 95% interval over seeds and images)", fontsize=10
    )
    fig.tight_layout()
    return png_bytes(fig)


__all__ = ["colors", "method_bars", "robustness_figure", "tradeoff_figure"]

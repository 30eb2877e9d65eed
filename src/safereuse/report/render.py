"""Write ``report.md``, ``results.csv``, ``comparisons.csv``, ``report.html`` (self-contained) and
``figures/*.png``."""

from __future__ import annotations

import base64
import html
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .. import __version__
from ..errors import SafeReuseError
from ..utils import atomic_path
from .data import (
    ABOVE,
    BELOW,
    MAX_SEEDS,
    REUSE_METHOD,
    SCRATCH_METHOD,
    RunData,
    acc_vs_retrain,
    aggregate,
    comparisons,
    load_run,
    method_summary,
    reuse_gain,
)
from .experiments import experiment_sections  # an experiment spec's tables + curves
from .plots import colors, method_bars, robustness_figure, tradeoff_figure


@dataclass
class ReportFiles:
    """Paths of a written report (``comparisons``: the paired comparisons against fine-tune)."""

    markdown: Path
    html: Path
    csv: Path
    figures: list[Path]
    comparisons: Path | None = None


def _f(v: Any, digits: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{float(v):.{digits}f}"


def _ms(m: Any, s: Any) -> str:
    if m is None or (isinstance(m, float) and not math.isfinite(m)):
        return "-"
    return f"{_f(m)} ± {_f(s)}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _ci(lo: Any, hi: Any) -> str:
    return f" [{_f(lo)}, {_f(hi)}]" if _f(lo) != "-" and _f(hi) != "-" else ""


def summary_frame(data: RunData, agg: pd.DataFrame | None = None, detail: bool = True) -> pd.DataFrame:
    """The summary table: one row per scenario × method; ACC and each defect's DIR (and ASR, Rob) as
    ``mean ± std`` over seeds; when ``detail``, with the 95 % interval over seeds and images
    (:func:`~safereuse.metrics.seed_interval`) and DIR's counts ``k/n`` summed over seeds; and where
    the scenario has a retrain reference, each method's ACC minus retrain's (points, paired seeds,
    :func:`~safereuse.report.data.acc_vs_retrain`) — fine-tune's is what reuse buys."""
    agg = aggregate(data) if agg is None else agg
    ms = method_summary(data)
    vs = acc_vs_retrain(data)
    gain = {(r["scenario"], r["label"]): r for _, r in vs.iterrows()}
    rows = []
    for _, m in ms.iterrows():
        row: dict[str, Any] = {
            "scenario": m["scenario"],
            "method": m["label"],
            "cells": f"{m['done']}" + (f" (+{m['failed']} failed)" if m["failed"] else ""),
            "ACC %": _ms(m["acc_mean"], m["acc_std"])
            + (_ci(m["acc_ci_low"], m["acc_ci_high"]) if detail else ""),
        }
        if not vs.empty:
            gr = gain.get((m["scenario"], m["label"]))
            row[f"ACC − {SCRATCH_METHOD} pt"] = (
                "-"
                if gr is None
                else f"{float(gr['gain_mean']):+.1f} ± {_f(gr['gain_std'])}"
                + (_ci(gr["gain_ci_low"], gr["gain_ci_high"]) if detail else "")
            )
        g = agg[(agg["scenario"] == m["scenario"]) & (agg["label"] == m["label"])] if not agg.empty else agg
        for d in data.defects:
            r = g[g["defect"] == d] if not g.empty else g
            if r.empty:
                continue
            r = r.iloc[0]
            cell = _ms(r["dir_mean"], r["dir_std"])
            if detail and r["n"]:
                cell += f"{_ci(r['dir_ci_low'], r['dir_ci_high'])} {r['k']}/{r['n']}"
            row[f"DIR {d} %"] = cell
            for name, col in (("ASR", "asr"), ("Rob", "rob")):
                if _f(r[f"{col}_mean"]) != "-":
                    row[f"{name} {d} %"] = _ms(r[f"{col}_mean"], r[f"{col}_std"]) + (
                        _ci(r[f"{col}_ci_low"], r[f"{col}_ci_high"]) if detail else ""
                    )
        rows.append(row)
    df = pd.DataFrame(rows)
    return df.fillna("n/a") if not df.empty else df


def reuse_frame(data: RunData) -> pd.DataFrame:
    """What reuse buys, one row per scenario with both references: fine-tune's and retrain's ACC
    (mean over the paired seeds) and their difference, mean ± std over seeds [95 % interval]
    (:func:`~safereuse.report.data.reuse_gain`)."""
    rows = [
        {
            "scenario": r["scenario"],
            f"{REUSE_METHOD} ACC %": _f(r["acc_mean"]),
            f"{SCRATCH_METHOD} ACC %": _f(r["ref_acc_mean"]),
            f"{REUSE_METHOD} − {SCRATCH_METHOD} pt": f"{float(r['gain_mean']):+.1f} ± {_f(r['gain_std'])}"
            + _ci(r["gain_ci_low"], r["gain_ci_high"]),
            "seeds": int(r["seeds"]),
        }
        for _, r in reuse_gain(data).iterrows()
    ]
    return pd.DataFrame(rows)


_REUSE_NOTE = (
    "What reuse buys: fine-tuning the teacher minus training the same architecture from scratch on the "
    "student's data, in test-accuracy points, seed by seed (a seed fixes both students' training "
    "sample), mean ± std over seeds [95% interval: t over the per-seed differences plus both rates' "
    "binomial variance, safereuse.metrics.seed_difference]. A safety method trades some of this gain "
    "for less inheritance; where it is small or negative there is little to trade. The summary's "
    "'ACC − retrain' column gives the same difference for every method."
)


def _signed_ci(lo: Any, hi: Any) -> str:
    ok = _f(lo) != "-" and _f(hi) != "-"
    return f" [{float(lo):+.1f}, {float(hi):+.1f}]" if ok else ""


def comparison_frames(
    data: RunData, comp: pd.DataFrame | None = None
) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """Per scenario, each method minus fine-tune: one row per method label, one column per compared
    figure (``ACC``, ``DIR <defect>``); a cell reads ``mean ± std [low, high] · verdict`` in points
    (:func:`~safereuse.report.data.comparisons`).

    Args:
        data: the run.
        comp: :func:`~safereuse.report.data.comparisons` of ``data`` (computed when None).

    Returns:
        ``(scenario, table, resolved)`` per scenario with a fine-tune reference; ``resolved`` is a
        boolean frame of the table's shape, True in the cells whose interval excludes 0.

    Example:
        >>> import pandas as pd
        >>> recs = pd.DataFrame({"cell_id": list("abcd"), "scenario": "s", "status": "done",
        ...     "method": ["finetune", "finetune", "remos", "remos"], "seed": [0, 1, 0, 1],
        ...     "acc": 80.0, "n_test": 1000, "defect": "pgd", "n": 1000, "dir": [40.0, 44.0, 10.0, 14.0]})
        >>> recs["label"] = recs["method"]
        >>> [(sc, table, resolved)] = comparison_frames(RunData(Path("."), {}, "", [], recs))
        >>> table.iloc[0]["DIR pgd − finetune pt"], resolved.values.tolist()
        ('-30.0 ± 0.0 [-53.7, -6.3] · ▼ resolved', [[False, False, False, True]])
    """
    comp = comparisons(data) if comp is None else comp
    out: list[tuple[str, pd.DataFrame, pd.DataFrame]] = []
    if comp.empty:
        return out
    for sc, g in comp.groupby("scenario", sort=False):
        ref = g["ref_label"].iloc[0]
        figs = list(dict.fromkeys(g["compared"]))
        rows, marks = [], []
        for label, m in g.groupby("label", sort=False):
            row: dict[str, Any] = {"method": label, "seeds": int(m["seeds"].max())}
            mark = {"method": False, "seeds": False}
            for fig in figs:
                col = f"{fig} − {ref} pt"
                r = m[m["compared"] == fig]
                if r.empty:
                    row[col], mark[col] = "-", False
                    continue
                r = r.iloc[0]
                row[col] = (
                    f"{float(r['diff_mean']):+.1f} ± {_f(r['diff_std'])}"
                    f"{_signed_ci(r['diff_ci_low'], r['diff_ci_high'])} · {r['verdict']}"
                )
                mark[col] = bool(r["resolved"])
            rows.append(row)
            marks.append(mark)
        out.append((str(sc), pd.DataFrame(rows), pd.DataFrame(marks)))
    return out


_COMPARE_NOTE = (
    "Each method minus fine-tune (the first fine-tune label of the scenario), in percentage points, "
    "paired by seed (seed s of both students shares the training sample and the test images): mean "
    "± std of the per-seed differences [95% interval: Student's t with S−1 degrees of freedom, its "
    "squared standard error s²/S plus both rates' binomial variance of one seed, not divided by S "
    "because every seed is scored on the same images; safereuse.metrics.seed_difference]. "
    f"{BELOW} resolved: the interval lies wholly below 0 (the method's rate is lower: for DIR, it "
    f"inherits less); {ABOVE} resolved: wholly above 0. Resolved cells are in bold. Otherwise, 'needs "
    "≈ N seeds' is the fewest seeds whose interval would exclude 0 if the mean difference and the "
    "spreads stayed as observed (safereuse.metrics.seeds_to_resolve): at N a repeat resolves it about "
    "half the time, so run a few more; with 2 or 3 seeds the spread is itself a rough estimate. 'Not "
    f"resolvable at this effect size' means more than {MAX_SEEDS} seeds, or an effect no larger than "
    "the test set's own binomial noise, which more seeds do not shrink (more test inputs would). With "
    "one seed there is no seed spread to measure: the interval is 1.96 × the binomial term alone, too "
    "narrow for a decision. Every row is also in comparisons.csv."
)


def comparisons_text(run: str | Path | RunData) -> str:
    """The per-scenario comparisons against fine-tune (:func:`comparison_frames`), for the terminal.

    Args:
        run: a run directory or its loaded :class:`~safereuse.report.data.RunData`.

    Returns:
        One aligned table per scenario, headed by the scenario's name.

    Example:
        >>> import pandas as pd
        >>> recs = pd.DataFrame({"cell_id": list("abcd"), "scenario": "s", "status": "done",
        ...     "method": ["finetune", "finetune", "remos", "remos"], "seed": [0, 1, 0, 1],
        ...     "acc": [80.0, 82.0, 70.0, 72.0], "n_test": 1000, "defect": None, "n": 0, "dir": None})
        >>> recs["label"] = recs["method"]
        >>> print(comparisons_text(RunData(Path("."), {}, "", [], recs)))  # doctest: +NORMALIZE_WHITESPACE
        s
        method  seeds  ACC − finetune pt
        ------  -----  --------------------------------------------
        remos   2      -10.0 ± 0.0 [-34.1, +14.1] · needs ≈ 3 seeds
    """
    data = run if isinstance(run, RunData) else load_run(run)
    parts = [f"{sc}\n{text_table(t)}" for sc, t, _ in comparison_frames(data)]
    return "\n\n".join(parts) if parts else "(no fine-tune reference to compare with)"


def text_table(df: pd.DataFrame) -> str:
    """A plain aligned text table (for the terminal)."""
    if df.empty:
        return "(no results)"
    cols = list(df.columns)
    cells = [[str(v) for v in row] for row in df.itertuples(index=False)]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(out)


def summary_text(rundir: str | Path) -> str:
    """The summary table of a run (mean ± std over seeds), for printing."""
    data = load_run(rundir)
    return text_table(summary_frame(data, detail=False))


def _md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(none)_\n"
    cols = [str(c) for c in df.columns]
    esc = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    out = ["| " + " | ".join(esc(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(out) + "\n"


def _md_marked(df: pd.DataFrame, marked: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the ``marked`` cells in bold (markdown)."""
    return df.where(~marked.astype(bool).to_numpy(), df.map(lambda v: f"**{v}**"))


def _html_table(df: pd.DataFrame, cls: str = "", marked: pd.DataFrame | None = None) -> str:
    if df.empty:
        return "<p><em>(none)</em></p>"
    flags = marked.astype(bool).to_numpy() if marked is not None else None

    def td(i: int, j: int, v: Any) -> str:
        hit = flags is not None and flags[i, j]
        text = html.escape(str(v))
        return f"<td class='resolved'><strong>{text}</strong></td>" if hit else f"<td>{text}</td>"

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(td(i, j, v) for j, v in enumerate(row)) + "</tr>"
        for i, row in enumerate(df.itertuples(index=False))
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def cells_frame(data: RunData) -> pd.DataFrame:
    """Every cell of the spec: id, scenario, method, seed, status, ACC, each defect's DIR, error."""
    rows = []
    recs = data.records
    for c in data.cells:
        r = recs[recs["cell_id"] == c["id"]]
        row: dict[str, Any] = {
            "cell": c["id"],
            "scenario": c["scenario"],
            "method": c["label"],
            "seed": c["seed"],
            "status": c["status"],
            "ACC %": _f(r["acc"].iloc[0]) if len(r) else "-",
        }
        for d in data.defects:  # one cell: its own Wilson interval
            rr = r[r["defect"] == d]
            row[f"DIR {d} %"] = (
                _f(rr["dir"].iloc[0]) + _ci(rr["ci_low"].iloc[0], rr["ci_high"].iloc[0]) if len(rr) else "-"
            )
        row["seconds"] = _f(c["seconds"], 0)
        row["error"] = (c["error"] or "")[:300]
        rows.append(row)
    return pd.DataFrame(rows)


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1150px;
color:#222;background:#fff;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #4477AA;padding-bottom:3px;margin-top:1.6em}
table{border-collapse:collapse;margin:8px 0 16px;font-size:.82em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#eef3f9}tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;border:1px solid #ddd;margin:6px 0 14px}
pre{background:#f6f8fa;border:1px solid #ddd;padding:10px;overflow-x:auto;font-size:.8em}
.meta{color:#555;font-size:.9em}.failed td{background:#fff0f0 !important}
td.resolved{background:#eaf5ea !important}
"""


def build_report(rundir: str | Path, out: str | Path | None = None) -> ReportFiles:
    """Write the report of a run directory.

    Args:
        rundir: the run directory (``safereuse run --out``).
        out: where to write (default: ``rundir``).

    Returns:
        The :class:`ReportFiles`.

    Raises:
        SafeReuseError: not a run directory; the output folder cannot be written.
    """
    data = load_run(rundir)
    out = Path(out) if out is not None else Path(rundir)
    try:
        (out / "figures").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SafeReuseError(
            f"cannot write the report to {out}: {exc.strerror or exc}", fix="pass another --out"
        ) from None
    agg = aggregate(data)
    ms = method_summary(data)
    palette = colors(data.labels)
    figs: list[tuple[str, str, bytes]] = []  # (title, file name, png)
    if not agg.empty:
        for d in data.defects:
            png = tradeoff_figure(agg, d, data.scenarios, palette)
            if png:
                figs.append((f"ACC vs DIR — {d}", f"tradeoff_{_slug(d)}.png", png))
            png = robustness_figure(agg, d, data.scenarios, palette)  # white-box defects only
            if png:
                figs.append((f"ACC vs Rob — {d}", f"robustness_{_slug(d)}.png", png))
        for sc in data.scenarios:
            png = method_bars(agg, ms, sc, data.labels, palette)
            if png:
                figs.append((f"Methods — {sc}", f"methods_{_slug(sc)}.png", png))
    sections = experiment_sections(data.cells)
    for _, _, sec_figs in sections:
        figs.extend(sec_figs)
    fig_paths = []
    for _, name, png in figs:
        p = out / "figures" / name
        with atomic_path(p) as tmp:
            tmp.write_bytes(png)
        fig_paths.append(p)

    summary = summary_frame(data, agg)
    cells = cells_frame(data)
    counts = data.records.drop_duplicates("cell_id")["status"].value_counts().to_dict()
    count_line = ", ".join(
        f"{counts.get(s, 0)} {s}" for s in ("done", "failed", "pending", "running") if counts.get(s)
    )
    name = data.spec.get("name") or "experiment"
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    meta = (
        f"run directory `{data.rundir}` · spec `{data.spec.get('source')}` "
        f"(hash {data.spec.get('spec_hash')}) · "
        f"{len(data.cells)} cells: {count_line or 'none'} · safereuse {__version__} · {when}"
    )
    failed = (
        cells[cells["status"] == "failed"][["cell", "scenario", "method", "seed", "error"]]
        if len(cells)
        else cells
    )
    methods = sorted(set(agg["ci_method"].dropna())) if "ci_method" in agg else []
    notes = (
        "ACC: the student's clean accuracy on its whole test split. DIR: the share of the student's "
        "clean-correct audited inputs on which the defect crafted on (or planted in) the teacher fires "
        "(lower is safer). ASR: backdoor attack success rate on the student; Rob: robust accuracy. "
        "Summary cells are mean ± sample std over seeds, then [low, high]: a 95% interval for the mean "
        "that accounts for both seed and image variation — Student's t with S−1 degrees of freedom "
        "(S seeds) on the per-seed rates, its squared standard error s²/S plus the binomial variance of "
        "one seed's rate (Agresti–Coull), which is not divided by S because every seed is audited on the "
        "same images (safereuse.metrics.seed_interval). With one seed it is that cell's 95% Wilson "
        "interval. Few seeds give wide intervals by necessity (t = 12.7 for 2 seeds, 4.3 for 3). A "
        "Wilson interval of the counts pooled over seeds would be too narrow: the seeds share their "
        "images and differ by more than binomial noise. k/n: DIR counts summed over seeds, for scale. "
        "Single cells (All cells, results.csv ci_low/ci_high) keep their own 95% Wilson interval; "
        "results.csv's seeds_* columns hold the across-seed figures. Interval method in this report: "
        + (", ".join(methods) or "none (no finished cells)")
        + "."
    )
    if (Path(rundir) / "selection.md").is_file():
        notes += (
            " Methods with a parameter sweep were chosen on held-back training images before these "
            "test cells ran (the spec's select: section); the validation table, the rule and the "
            "choice are in selection.md of the run directory."
        )

    # results.csv
    csv_path = out / "results.csv"
    with atomic_path(csv_path) as tmp:
        data.records.to_csv(tmp, index=False)
    comp = comparisons(data)
    comp_path = out / "comparisons.csv"
    with atomic_path(comp_path) as tmp:
        comp.to_csv(tmp, index=False)
    compared = comparison_frames(data, comp)

    # report.md
    md = [f"# safereuse report: {name}\n", meta + "\n", f"\n{notes}\n", "\n## Summary\n", _md_table(summary)]
    if compared:
        md += [f"\n## Against {REUSE_METHOD}: what is resolved\n", f"\n{_COMPARE_NOTE}\n"]
        for sc, table, marked in compared:
            md += [f"\n### {sc}\n\n", _md_table(_md_marked(table, marked))]
    reuse = reuse_frame(data)
    if len(reuse):
        md += ["\n## What reuse buys\n", f"\n{_REUSE_NOTE}\n\n", _md_table(reuse)]
    for title, table, _ in sections:
        md += [f"\n## {title}\n\n", _md_table(table)]
    md.append("\n## Figures\n")
    for (title, fname, _), _p in zip(figs, fig_paths, strict=True):
        md.append(f"\n### {title}\n\n![{title}](figures/{fname})\n")
    if len(failed):
        md += [
            "\n## Failed cells\n",
            _md_table(failed),
            "\nRe-run them with `safereuse run SPEC --out RUNDIR --retry-failed`.\n",
        ]
    md += [
        "\n## All cells\n",
        _md_table(cells),
        "\n## Configuration\n",
        "```yaml\n" + data.spec_text.rstrip() + "\n```\n",
    ]
    md_path = out / "report.md"
    with atomic_path(md_path) as tmp:
        tmp.write_text("".join(md))

    # report.html (self-contained)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>safereuse report: {html.escape(name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>safereuse report: {html.escape(name)}</h1>",
        f"<p class='meta'>{html.escape(meta).replace('`', '')}</p><p>{html.escape(notes)}</p>",
        "<h2>Summary</h2>",
        _html_table(summary, "summary"),
    ]
    if compared:
        parts += [
            f"<h2>Against {REUSE_METHOD}: what is resolved</h2>",
            f"<p>{html.escape(_COMPARE_NOTE)}</p>",
        ]
        for sc, table, marked in compared:
            parts += [f"<h3>{html.escape(sc)}</h3>", _html_table(table, "compare", marked)]
    if len(reuse):
        parts += ["<h2>What reuse buys</h2>", f"<p>{html.escape(_REUSE_NOTE)}</p>"]
        parts.append(_html_table(reuse, "reuse"))
    for title, table, _ in sections:
        parts += [f"<h2>{html.escape(title)}</h2>", _html_table(table, "experiment")]
    parts += [
        "<h2>Figures</h2>",
    ]
    for title, fname, png in figs:
        b64 = base64.b64encode(png).decode()
        parts.append(f"<h3>{html.escape(title)}</h3>")
        parts.append(
            f"<img alt='{html.escape(title)}' data-file='{fname}' src='data:image/png;base64,{b64}'>"
        )
    if not figs:
        parts.append("<p><em>No finished cells to plot yet.</em></p>")
    if len(failed):
        parts += [
            "<h2>Failed cells</h2>",
            _html_table(failed, "failed"),
            "<p>Re-run them with <code>safereuse run SPEC --out RUNDIR --retry-failed</code>.</p>",
        ]
    parts += [
        "<h2>All cells</h2>",
        _html_table(cells, "cells"),
        "<h2>Configuration</h2>",
        f"<pre>{html.escape(data.spec_text)}</pre>",
        "</body></html>",
    ]
    html_path = out / "report.html"
    with atomic_path(html_path) as tmp:
        tmp.write_text("\n".join(parts))
    return ReportFiles(md_path, html_path, csv_path, fig_paths, comp_path)


__all__ = [
    "ReportFiles",
    "build_report",
    "cells_frame",
    "comparison_frames",
    "comparisons_text",
    "reuse_frame",
    "summary_frame",
    "summary_text",
    "text_table",
]

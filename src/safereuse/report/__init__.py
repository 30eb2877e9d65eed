"""Reports of a run directory: ``report.md``, ``results.csv``, ``comparisons.csv`` (each method
minus fine-tune, paired by seed, with what is resolved), self-contained ``report.html``.

>>> from safereuse.report import build_report, summary_text   # doctest: +SKIP
>>> files = build_report("runs/demo")                         # doctest: +SKIP
>>> print(summary_text("runs/demo"))                          # doctest: +SKIP
"""

from __future__ import annotations

from .data import (
    COLUMNS,
    COMPARISON_COLUMNS,
    RunData,
    aggregate,
    comparisons,
    load_run,
    method_summary,
    paired_vs,
    pareto_front,
    reuse_gain,
)
from .render import (
    ReportFiles,
    build_report,
    cells_frame,
    comparison_frames,
    comparisons_text,
    reuse_frame,
    summary_frame,
    summary_text,
    text_table,
)

__all__ = [
    "COLUMNS",
    "COMPARISON_COLUMNS",
    "ReportFiles",
    "RunData",
    "aggregate",
    "build_report",
    "cells_frame",
    "comparison_frames",
    "comparisons",
    "comparisons_text",
    "load_run",
    "method_summary",
    "paired_vs",
    "pareto_front",
    "reuse_frame",
    "reuse_gain",
    "summary_frame",
    "summary_text",
    "text_table",
]

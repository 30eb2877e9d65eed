"""Reports of a run directory: ``report.md``, ``results.csv``, self-contained ``report.html``.

>>> from safereuse.report import build_report, summary_text   # doctest: +SKIP
>>> files = build_report("runs/demo")                         # doctest: +SKIP
>>> print(summary_text("runs/demo"))                          # doctest: +SKIP
"""

from __future__ import annotations

from .data import COLUMNS, RunData, aggregate, load_run, method_summary, pareto_front, reuse_gain
from .render import (
    ReportFiles,
    build_report,
    cells_frame,
    reuse_frame,
    summary_frame,
    summary_text,
    text_table,
)

__all__ = [
    "COLUMNS",
    "ReportFiles",
    "RunData",
    "aggregate",
    "build_report",
    "cells_frame",
    "load_run",
    "method_summary",
    "pareto_front",
    "reuse_frame",
    "reuse_gain",
    "summary_frame",
    "summary_text",
    "text_table",
]

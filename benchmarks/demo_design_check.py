"""Issue 26: check a demo design lever on data the demo's figures never use — images held back from
the training pool (``DataSpec(holdout=N)``, ``DataBundle.holdout``), never the test split.

For every done cell of a run (e.g. ``docs/results/demo-batch16.yaml``), the student artifact is scored
on ``N`` held-back images of its scenario's classes; then, per scenario × label, the mean over seeds
of the held-back accuracy, fine-tune − retrain on it (the scenario design: reuse must pay ≥ 10
points), the penultimate DIR and the seconds per cell. The few-shot samples come from the same pool
without a holdout, so a held-back image may coincide with one of a student's 20–50 training images
(a few in 30,000; negligible, and the same for every label).

Run: ``python benchmarks/demo_design_check.py runs/i26/batch16 [--holdout 1000]``; writes
``benchmarks/results/demo_design_check.json``.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

import torch
from _common import write  # script-local module (benchmarks/_common.py)

from safereuse.artifacts import load_model
from safereuse.data import DataSpec, load_data
from safereuse.metrics import seed_difference
from safereuse.report.data import load_run
from safereuse.train import accuracy_on


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rundir", type=Path)
    ap.add_argument("--holdout", type=int, default=1000, help="held-back images per scenario")
    args = ap.parse_args()
    torch.set_num_threads(2)
    run = load_run(args.rundir)
    cells = run.records.drop_duplicates("cell_id")
    cells = cells[cells["status"] == "done"]
    students = {sc["name"]: sc["student"] for sc in run.spec["spec"]["scenarios"]}
    holdouts = {}
    rows = []
    for _, c in cells.iterrows():
        st = students[c["scenario"]]
        if c["scenario"] not in holdouts:
            classes = st["classes"]
            data = DataSpec(
                st["data"],
                classes=classes,
                train_size=st.get("train_size"),
                per_class=st.get("per_class", False),
                holdout=args.holdout,
            )
            holdouts[c["scenario"]] = load_data(data).holdout
        model = load_model(args.rundir / c["student_dir"], device="cpu").model.eval()
        h = holdouts[c["scenario"]]
        acc = accuracy_on(model, h)
        rows.append(
            {
                "scenario": c["scenario"],
                "label": c["label"],
                "method": c["method"],
                "seed": int(c["seed"]),
                "holdout_acc": 100 * acc,
                "holdout_n": len(h),
                "test_acc": float(c["acc"]),
                "dir_penultimate": float(c["dir"]) if c.get("defect") == "penultimate" else None,
                "seconds": float(c["seconds"]),
            }
        )
    by = defaultdict(list)
    for r in rows:
        by[(r["scenario"], r["label"])].append(r)
    summary = []
    for (sc, label), rs in by.items():
        summary.append(
            {
                "scenario": sc,
                "label": label,
                "seeds": len(rs),
                "holdout_acc": statistics.mean(r["holdout_acc"] for r in rs),
                "test_acc": statistics.mean(r["test_acc"] for r in rs),
                "dir_penultimate": statistics.mean(
                    r["dir_penultimate"] for r in rs if r["dir_penultimate"] is not None
                ),
                "seconds_median": statistics.median(r["seconds"] for r in rs),
            }
        )
    gains = []
    for sc in sorted({r["scenario"] for r in rows}):
        for suffix in sorted({lab.partition("(")[2] for (s, lab) in by if s == sc}):
            ft = {r["seed"]: r for r in by.get((sc, f"finetune({suffix}"), [])}
            rt = {r["seed"]: r for r in by.get((sc, f"retrain({suffix}"), [])}
            seeds = sorted(set(ft) & set(rt))
            if not seeds:
                continue
            d = seed_difference(
                [(round(ft[s]["holdout_acc"] * ft[s]["holdout_n"] / 100), ft[s]["holdout_n"]) for s in seeds],
                [(round(rt[s]["holdout_acc"] * rt[s]["holdout_n"] / 100), rt[s]["holdout_n"]) for s in seeds],
            )
            gains.append(
                {
                    "scenario": sc,
                    "variant": suffix.rstrip(")"),
                    "seeds": d.seeds,
                    "finetune_minus_retrain": d.mean,
                    "ci_low": d.ci_low,
                    "ci_high": d.ci_high,
                }
            )
    for s in summary:
        print(
            f"{s['scenario']:26s} {s['label']:26s} holdout {s['holdout_acc']:5.1f}  "
            f"test {s['test_acc']:5.1f}  "
            f"DIR {s['dir_penultimate']:5.1f}  {s['seconds_median']:5.1f} s/cell ({s['seeds']} seeds)"
        )
    for g in gains:
        print(
            f"{g['scenario']:26s} {g['variant']:16s} finetune − retrain on holdout "
            f"{g['finetune_minus_retrain']:+.1f} "
            f"[{g['ci_low']:+.1f}, {g['ci_high']:+.1f}] ({g['seeds']} seeds)"
        )
    write(
        "demo_design_check",
        {
            "run": str(args.rundir),
            "holdout": args.holdout,
            "cells": rows,
            "summary": summary,
            "reuse_gain_holdout": gains,
        },
    )


if __name__ == "__main__":
    main()

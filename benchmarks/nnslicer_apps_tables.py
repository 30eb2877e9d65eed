"""Markdown tables of ``benchmarks/results/nnslicer_apps_{detect,prune,protect,perf}.json`` (issue 13).

Usage: ``python benchmarks/nnslicer_apps_tables.py [detect|prune|protect|perf|protect_strong ...]``: prints
the tables that docs/results/nnslicer-applications.md shows (whichever results exist).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _f(v: object, d: int = 1) -> str:
    return "–" if v is None else f"{v:.{d}f}"


def _iv(m: dict, d: int = 1, scale: float = 1.0) -> str:
    if m.get("mean") is None:
        return "–"
    s = f"{m['mean'] * scale:.{d}f}"
    if m.get("lo") is not None:
        s += f" [{m['lo'] * scale:.{d}f}, {m['hi'] * scale:.{d}f}]"
    return s


def detect(name: str = "detect") -> None:
    r = json.loads((RESULTS / f"nnslicer_apps_{name}.json").read_text())
    t = r["table"]
    dets = list(t)
    print(f"pool {r['pool']}, n_train {r['n_train']} per seed, seeds {r['seeds']}, n_test {r['n_test']}")
    print("\n| attack | adv. / sources | " + " | ".join(f"{d} R / P / F1 / AUC" for d in dets) + " |")
    print("|---|---|" + "---|" * len(dets))
    for lab, a in r["attacks"].items():
        cells = []
        for d in dets:
            m = t[d][lab]
            cells.append(
                f"{_iv(m['recall'], 0)} / {_iv(m['precision'], 0)} / {_iv(m['f1'], 2)} / {_iv(m['auc'], 2)}"
            )
        print(f"| {lab} | {a['n_success']}/{a['n_sources']} | " + " | ".join(cells) + " |")
    cells = []
    for d in dets:
        mm = t[d]["_mean_over_attacks"]
        cells.append(
            f"{_f(mm['recall'], 0)} / {_f(mm['precision'], 0)} / {_f(mm['f1'], 2)} / {_f(mm['auc'], 2)}"
        )
    print("| **mean over attacks** | | " + " | ".join(cells) + " |")
    print("\n| detector | tree nodes | depth | train agreement | benign test flag rate | tree fit s |")
    print("|---|---|---|---|---|---|")
    for d, rows in r["trees"].items():
        print(
            f"| {d} | {'/'.join(str(x['nodes']) for x in rows)} | "
            f"{'/'.join(str(x['depth']) for x in rows)} | "
            f"{'/'.join(_f(100 * x['train_agreement']) for x in rows)} % | "
            f"{'/'.join(_f(100 * x['benign_flag_rate']) for x in rows)} % | "
            f"{'/'.join(_f(x['seconds_tree'], 0) for x in rows)} |"
        )
    if r.get("skipped_attacks"):
        print(f"\nskipped (deadline): {', '.join(r['skipped_attacks'])}")


def prune(name: str = "prune") -> None:
    r = json.loads((RESULTS / f"nnslicer_apps_{name}.json").read_text())
    print(f"subsets done: {r['subsets_done']}")
    for key in ("acc_pruned", "acc_finetuned"):
        print(f"\n{key} (target-class accuracy %, mean over subsets [95 % t-interval])\n")
        print("| r | " + " | ".join(r["curves"]) + " |")
        print("|---|" + "---|" * len(r["curves"]))
        for ratio in next(iter(r["curves"].values())):
            print(f"| {ratio} | " + " | ".join(_iv(c[ratio][key]) for c in r["curves"].values()) + " |")
    print("\n| paired difference (points, mean over ratios, per subset) | mean [95 % t] | n |")
    print("|---|---|---|")
    for k, v in r["paired_mean_over_ratios"].items():
        print(f"| {k} | {_iv(v)} | {v['n']} |")


def plot_prune(name: str, out_dir: str) -> None:
    """Target-class accuracy vs r with 95 % t-intervals over the subsets (the runner report's figure)."""
    import pandas as pd

    from safereuse.applications.experiments import _curve_sections

    rows = json.loads((RESULTS / f"nnslicer_apps_{name}.json").read_text())["rows"]
    df = pd.DataFrame([{**r, "scenario": "fmnist10-resnet8"} for r in rows])
    ys = [("acc_pruned", "pruned"), ("acc_finetuned", "fine-tuned 1 epoch")]
    for _title, _table, figs in _curve_sections(df, "ratio", ys, "Target-class accuracy vs pruning ratio"):
        for _caption, fname, png in figs:
            path = Path(out_dir) / f"{name}_{fname}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png)
            print(f"wrote {path}")


def protect(name: str = "protect") -> None:
    r = json.loads((RESULTS / f"nnslicer_apps_{name}.json").read_text())
    keys = list(next(iter(r["table"].values())))
    print("| criterion | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for c, row in r["table"].items():
        print(f"| {c} | " + " | ".join(_iv(row[k]) for k in keys) + f" | (n = {row[keys[0]]['n']})")
    print("\n| paired difference (points) | mean [95 % t] | n |")
    print("|---|---|---|")
    for k, v in r["paired"].items():
        print(f"| {k} | {_iv(v)} | {v['n']} |")


def perf(name: str = "perf") -> None:
    print(json.dumps(json.loads((RESULTS / f"nnslicer_apps_{name}.json").read_text()), indent=1))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--plot-prune"]:  # --plot-prune NAME OUT_DIR
        plot_prune(sys.argv[2], sys.argv[3])
        sys.exit(0)
    for part in sys.argv[1:] or ["detect", "prune", "protect", "perf"]:
        if (RESULTS / f"nnslicer_apps_{part}.json").exists():
            print(f"\n## {part}\n")
            globals()[part.split("_")[0]](part)

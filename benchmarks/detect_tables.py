"""Markdown tables of ``benchmarks/detect_study.py``'s results (``docs/results/nnslicer-applications.md``).

Run: ``.venv/bin/python benchmarks/detect_tables.py [claim] [select] [goal] [goal_baselines]``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from safereuse.metrics import seed_interval
from safereuse.metrics.intervals import student_t_quantile

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"detect_{name}.json").read_text())


def t_ci(values: list[float], scale: float = 1.0) -> str:
    v = [x * scale for x in values if x is not None and not math.isnan(x)]
    if not v:
        return "–"
    m = float(np.mean(v))
    if len(v) < 2:
        return f"{m:.1f}" if scale == 100 else f"{m:.3f}"
    h = student_t_quantile(0.975, len(v) - 1) * float(np.std(v, ddof=1)) / math.sqrt(len(v))
    fmt = "{:.1f}" if scale == 100 else "{:.3f}"
    top = 100.0 if scale == 100 else 1.0  # a rate's interval is clipped to its range
    return f"{fmt.format(m)} [{fmt.format(max(m - h, 0.0))}, {fmt.format(min(m + h, top))}]"


def rate(pairs: list[tuple[int, int]]) -> str:
    s = seed_interval(pairs)
    return f"{s.mean:.1f} [{s.ci_low:.1f}, {s.ci_high:.1f}] ({s.k}/{s.n})"


def claim() -> None:
    d = load("claim")
    print("(a) criterion swap: benign test inputs sliced under a random wrong class; the tree answers it\n")
    print("| model | θ | tree outputs the forced class, % (k/n), seeds | tree ≠ model on benign inputs, % |")
    print("|---|---|---|---|")
    for model in sorted({r["model"] for r in d["a"]}):
        for theta in (0.0, 0.3):
            rs = [r for r in d["a"] if r["model"] == model and r["theta"] == theta]
            if rs:
                dis = rate([(round(r["benign_disagreement"] * r["n"]), r["n"]) for r in rs])
                print(f"| {model} | {theta} | {rate([(r['k'], r['n']) for r in rs])}, {len(rs)} | {dis} |")
    print("\n(c) the true label as the criterion (the paper's tree, FGSM 8/255)\n")
    print("| model | θ | seeds | recall % | precision % | benign inputs the model gets wrong: flagged | "
          "benign inputs it gets right: flagged |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for model in sorted({r["model"] for r in d["c"]}):
        for theta in (0.0, 0.3):
            rs = [r for r in d["c"] if r["model"] == model and r["theta"] == theta]
            if rs:
                rec = rate([(r["tp"], r["tp"] + r["fn"]) for r in rs])
                prec = rate([(r["tp"], r["tp"] + r["fp"]) for r in rs])
                w = rate([tuple(r["benign_wrong_flagged"]) for r in rs])
                ok = rate([tuple(r["benign_right_flagged"]) for r in rs])
                print(f"| {model} | {theta} | {len(rs)} | {rec} | {prec} | {w} | {ok} |")
    print(f"\n(b) θ × features, the paper's tree and rule (trees on {d['n_fit_b']} inputs; balanced sets)\n")
    print("| model | θ | features | recall % | precision % | F1 | AUC |")
    print("|---|---|---|---|---|---|---|")
    for r in d["b"]:
        print(f"| {r['model']} s{r['seed']} | {r['theta']} | {r['features']} | {r['recall']['value']:.1f} | "
              f"{r['precision']['value']:.1f} | {r['f1']:.3f} | {r['auc']:.3f} |")  # fmt: skip


def select() -> None:
    d = load("select")
    rows: dict[str, list[dict[str, Any]]] = d["rows"]
    out = []
    for cfg, rs in rows.items():
        for fpr in d["fprs"]:
            sub = [r for r in rs if r["fpr"] == fpr]
            models = sorted({r["model"] for r in sub})
            f1 = float(np.mean([r["f1"] for r in sub]))
            fg = [r for r in sub if r["attack"] == "fgsm-8"]
            out.append((f1, cfg, fpr, len(models), float(np.mean([r["recall"]["value"] for r in fg])),
                        float(np.mean([r["precision"]["value"] for r in fg]))))  # fmt: skip
    out.sort(key=lambda t: -t[0])
    print(
        "| rank | setting | fpr | models | mean validation F1 (attacks × models) | FGSM 8/255 recall % "
        "| precision % |"
    )
    print("|---|---|---|---|---|---|---|")
    for i, (f1, cfg, fpr, n, rec, prec) in enumerate(out[:10]):
        print(f"| {i + 1} | {cfg} | {fpr} | {n} | {f1:.3f} | {rec:.1f} | {prec:.1f} |")
    for fpr in d["fprs"]:
        print(f"- best at fpr {fpr}: {max((t for t in out if t[2] == fpr), key=lambda t: t[0])[0]:.3f}")


def goal(name: str = "goal") -> None:
    d = load(name)
    rows = d["rows"]
    dets = d["detectors"]
    attacks = [a for a in d["attacks"] if any(r["attack"] == a for r in rows)]
    print(f"Seeds per cell: {sorted({(r['model'], r['seed']) for r in rows})}\n")
    print("| attack | " + " | ".join(f"{dn} R / P % · F1 · AUC" for dn in dets) + " |")
    print("|---|" + "---|" * len(dets))
    for atk in attacks:
        cells = []
        for dn in dets:
            rs = [r for r in rows if r["attack"] == atk and r["detector"] == dn]
            if not rs:
                cells.append("–")
                continue
            rec = seed_interval([(r["tp"], r["tp"] + r["fn"]) for r in rs])
            prec = seed_interval([(r["tp"], r["tp"] + r["fp"]) for r in rs])
            cells.append(f"{rec.mean:.0f} [{rec.ci_low:.0f}, {rec.ci_high:.0f}] / {prec.mean:.0f} "
                         f"[{prec.ci_low:.0f}, {prec.ci_high:.0f}] · {t_ci([r['f1'] for r in rs])} · "
                         f"{np.mean([r['auc'] for r in rs]):.3f}")  # fmt: skip
        n_adv = int(np.mean([r["n_adversarial"] for r in rows if r["attack"] == atk]))
        print(f"| {atk} (n≈{n_adv}) | " + " | ".join(cells) + " |")
    print("\nMean over the attacks, per seed, then across seeds (t 95 %):\n")
    print("| detector | recall % | precision % | F1 | AUC |")
    print("|---|---|---|---|---|")
    for dn in dets:
        per: dict[Any, list[dict[str, Any]]] = {}
        for r in rows:
            if r["detector"] == dn:
                per.setdefault((r["model"], r["seed"]), []).append(r)
        m = [{"recall": np.mean([r["recall"]["value"] for r in rs]),
              "precision": np.mean([r["precision"]["value"] for r in rs]),
              "f1": np.mean([r["f1"] for r in rs]), "auc": np.mean([r["auc"] for r in rs])}
             for rs in per.values()]  # fmt: skip
        rec, prec = t_ci([x["recall"] / 100 for x in m], 100), t_ci([x["precision"] / 100 for x in m], 100)
        print(f"| {dn} | {rec} | {prec} | {t_ci([x['f1'] for x in m])} | {t_ci([x['auc'] for x in m])} |")
    print("\n| detector | fit s (mean) | ms per input | benign flag rate | trained on |")
    print("|---|---|---|---|---|")
    for dn in dets:
        f = [x for x in d["fits"] if x["detector"] == dn]
        fit, ms = np.mean([x["fit_s"] for x in f]), np.mean([x["ms_per_input"] for x in f])
        flag = np.mean([x["benign_flag_rate"] for x in f])
        print(f"| {dn} | {fit:.0f} | {ms:.1f} | {flag:.3f} | {f[0]['trained_on']} |")


if __name__ == "__main__":
    for part in sys.argv[1:] or ["claim", "select", "goal"]:
        print(f"\n## {part}\n")
        if part.startswith("goal"):
            goal(part)
        else:
            globals()[part]()

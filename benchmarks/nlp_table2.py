"""ReMoS's NLP table (Table 2 layout) from a run of examples/nlp.yaml: per scenario and method the
student's ACC and the backdoor / word-attack DIRs, per seed (k/n) and across seeds, and ReMoS's ratios
to fine-tune beside the paper's (DIR × 0.50 data poisoning, × 0.39 weight poisoning, ACC × 0.97).

    .venv/bin/safereuse run examples/nlp.yaml -o runs/nlp
    .venv/bin/python benchmarks/nlp_table2.py runs/nlp benchmarks/results/nlp_table2.json > table.md

Intervals: across seeds, :func:`safereuse.metrics.seed_interval` (t over the per-seed rates, widened
by the audited sentences' binomial variance); ReMoS − fine-tune, :func:`safereuse.metrics.seed_difference`
(paired seeds); the ratio of the seed means gets a delta-method interval from those two standard errors
(approximate; a ratio with a near-zero denominator has none).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict
from typing import Any

from safereuse.metrics import seed_difference, seed_interval, student_t_quantile
from safereuse.report.data import load_run

PAPER = {"word-trigger": 0.50, "ripple": 0.39}  # ReMoS DIR ÷ fine-tune DIR, Table 2 averages
PAPER_ACC = 0.97
BACKDOORS = {"word-trigger": "data poisoning", "ripple": "weight poisoning"}
METHODS = ["finetune", "retrain", "mag-prune", "remos"]


def _counts(rows: Any, value: str, n: str) -> dict[int, tuple[int, int]]:
    out = {}
    for _, r in rows.iterrows():
        nn = r[n]
        if nn is None or (isinstance(nn, float) and math.isnan(nn)) or not nn:
            continue
        out[int(r["seed"])] = (round(float(r[value]) * int(nn) / 100), int(nn))
    return out


def _fmt_ci(ci: Any) -> str:
    return f"{ci.mean:.1f} ± {ci.std:.1f} [{ci.ci_low:.1f}, {ci.ci_high:.1f}]"


def _se(ci: Any) -> float:
    if ci.seeds < 2:
        return (ci.ci_high - ci.ci_low) / (2 * 1.96)
    return (ci.ci_high - ci.ci_low) / (2 * student_t_quantile(0.975, ci.seeds - 1))


def _ratio(a: Any, b: Any) -> tuple[float, float, float]:
    """a.mean / b.mean with a delta-method interval (t with min(S) − 1 df)."""
    if b.mean <= 0:
        return math.nan, math.nan, math.nan
    r = a.mean / b.mean
    rel = math.sqrt((_se(a) / a.mean) ** 2 + (_se(b) / b.mean) ** 2) if a.mean > 0 else math.inf
    s = min(a.seeds, b.seeds)
    q = student_t_quantile(0.975, s - 1) if s >= 2 else 1.96
    half = q * r * rel if math.isfinite(rel) else math.nan
    return r, max(0.0, r - half), r + half


def main(rundir: str, out_json: str | None) -> None:
    data = load_run(rundir)
    df = data.records
    df = df[df["status"] == "done"]
    result: dict[str, Any] = {"rundir": rundir, "scenarios": {}}
    print(
        "| scenario | method | seeds | ACC % (k/n per seed) | ACC % mean ± sd [95 %] | defect "
        "| DIR k/n per seed | DIR % mean ± sd [95 %] |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for sc in data.scenarios:
        d_sc = df[df["scenario"] == sc]
        res_sc: dict[str, Any] = {}
        for m in METHODS:
            d_m = d_sc[d_sc["label"] == m]
            if d_m.empty:
                continue
            first = d_m.drop_duplicates("seed")
            acc = _counts(first, "acc", "n_test")
            acc_ci = seed_interval(list(acc.values()))
            res_m: dict[str, Any] = {"acc": {"per_seed": acc, "ci": asdict(acc_ci)}, "defects": {}}
            for defect in sorted(set(d_m["defect"].dropna())):
                rows = d_m[d_m["defect"] == defect]
                c = _counts(rows, "dir", "n")
                ci = seed_interval(list(c.values())) if c else None
                res_m["defects"][defect] = {"per_seed": c, "ci": asdict(ci) if ci else None}
                per = ", ".join(f"{k}/{n}" for _, (k, n) in sorted(c.items()))
                accs = ", ".join(f"{k}/{n}" for _, (k, n) in sorted(acc.items()))
                print(
                    f"| {sc} | {m} | {len(acc)} | {accs} | {_fmt_ci(acc_ci)} | {defect} | {per} | "
                    f"{_fmt_ci(ci) if ci else '-'} |"
                )
            res_sc[m] = res_m
        result["scenarios"][sc] = res_sc
    print()
    print(
        "ReMoS ÷ fine-tune (ratio of the seed means [delta-method 95 %]; difference in points, paired "
        "seeds [95 %]):"
    )
    print()
    print(
        "| scenario | defect | paper DIR ratio | DIR ratio | DIR remos − finetune pt "
        "| ACC ratio (paper 0.97) | ACC remos − finetune pt |"
    )
    print("|---|---|---|---|---|---|---|")
    ratios = []
    for sc, res_sc in result["scenarios"].items():
        if "finetune" not in res_sc or "remos" not in res_sc:
            continue
        ft, rm = res_sc["finetune"], res_sc["remos"]
        seeds = sorted(set(ft["acc"]["per_seed"]) & set(rm["acc"]["per_seed"]))
        acc_a = seed_interval([rm["acc"]["per_seed"][s] for s in seeds])
        acc_b = seed_interval([ft["acc"]["per_seed"][s] for s in seeds])
        acc_r = _ratio(acc_a, acc_b)
        acc_d = seed_difference(
            [rm["acc"]["per_seed"][s] for s in seeds], [ft["acc"]["per_seed"][s] for s in seeds]
        )
        for defect in rm["defects"]:
            if defect not in ft["defects"]:
                continue
            a_c, b_c = rm["defects"][defect]["per_seed"], ft["defects"][defect]["per_seed"]
            ss = sorted(set(a_c) & set(b_c))
            if not ss:
                continue
            a, b = seed_interval([a_c[s] for s in ss]), seed_interval([b_c[s] for s in ss])
            r = _ratio(a, b)
            dif = seed_difference([a_c[s] for s in ss], [b_c[s] for s in ss])
            paper = PAPER.get(defect, "-")
            print(
                f"| {sc} | {defect} | {paper} | {r[0]:.2f} [{r[1]:.2f}, {r[2]:.2f}] | "
                f"{dif.mean:+.1f} [{dif.ci_low:+.1f}, {dif.ci_high:+.1f}] | "
                f"{acc_r[0]:.3f} [{acc_r[1]:.3f}, {acc_r[2]:.3f}] | "
                f"{acc_d.mean:+.1f} [{acc_d.ci_low:+.1f}, {acc_d.ci_high:+.1f}] |"
            )
            ratios.append(
                {
                    "scenario": sc,
                    "defect": defect,
                    "seeds": ss,
                    "dir_ratio": r,
                    "dir_diff": asdict(dif),
                    "acc_ratio": acc_r,
                    "acc_diff": asdict(acc_d),
                }
            )
    result["ratios"] = ratios
    print()
    for bd, what in BACKDOORS.items():
        rs = [x for x in ratios if x["defect"] == bd and math.isfinite(x["dir_ratio"][0])]
        if rs:
            mean_r = sum(x["dir_ratio"][0] for x in rs) / len(rs)
            mean_a = sum(x["acc_ratio"][0] for x in rs) / len(rs)
            print(
                f"- {what} ({bd}): mean over {len(rs)} scenarios of the DIR ratio {mean_r:.2f} "
                f"(paper {PAPER[bd]}), of the ACC ratio {mean_a:.3f} (paper {PAPER_ACC})"
            )
            result[f"mean_{bd}"] = {"dir_ratio": mean_r, "acc_ratio": mean_a, "scenarios": len(rs)}
    if out_json:
        with open(out_json, "w") as f:
            json.dump(result, f, indent=1, default=str)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)

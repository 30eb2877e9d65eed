"""Summarise benchmarks/results/nlp_efficacy.jsonl: ACC / DIR per method, ReMoS ÷ fine-tune ratios.

    .venv/bin/python benchmarks/nlp_efficacy_table.py benchmarks/results/nlp_efficacy.jsonl

Ratios are taken per seed (same seed, same backdoor, same scenario: a paired comparison), then
averaged; the interval is mean ± t(0.975, S−1) · sd/√S over the S seeds.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict

from safereuse.metrics import mean_std, student_t_quantile


def interval(xs: list[float]) -> str:
    ms = mean_std(xs)
    if ms.n == 0:
        return "-"
    if ms.n == 1:
        return f"{ms.mean:.2f} (1 seed)"
    h = student_t_quantile(0.975, ms.n - 1) * ms.std / math.sqrt(ms.n)
    return f"{ms.mean:.2f} ± {ms.std:.2f} [{ms.mean - h:.2f}, {ms.mean + h:.2f}] (n={ms.n})"


def main(path: str) -> None:
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    # one record per teacher / cell (the last, should a file hold a repeated run)
    key = ("scenario", "backdoor", "method", "seed")
    cells = list({tuple(r[k] for k in key): r for r in rows if "method" in r}.values())
    teachers = {r["teacher"]: r for r in rows if "teacher" in r}
    for t in teachers.values():
        print(
            f"teacher {t['teacher']}: clean acc {100 * t['clean_acc']:.1f} % (n={t['clean_samples']}), "
            f"label-flip rate {100 * t['teacher_asr']:.1f} % (n={t['asr_samples']}), {t['seconds']} s"
        )
    by = defaultdict(dict)
    for c in cells:
        by[(c["scenario"], c["backdoor"], c["seed"])][c["method"]] = c
    print("\n| scenario | backdoor | method | seeds | ACC % | DIR % (label flips) | train s | audit s |")
    print("|---|---|---|---|---|---|---|---|")
    groups = defaultdict(list)
    for c in cells:
        groups[(c["scenario"], c["backdoor"], c["method"])].append(c)
    for (sc, bd, m), cs in sorted(groups.items()):
        acc = [100 * c["acc_k"] / c["acc_n"] for c in cs]
        dir_ = [100 * c["dir_k"] / c["dir_n"] for c in cs if c["dir_n"]]
        tr = mean_std([c["train_s"] for c in cs]).mean
        au = mean_std([c["audit_s"] for c in cs]).mean
        print(f"| {sc} | {bd} | {m} | {len(cs)} | {interval(acc)} | {interval(dir_)} | {tr:.0f} | {au:.0f} |")
    print("\n| scenario | backdoor | method | DIR ratio to finetune | ACC ratio to finetune |")
    print("|---|---|---|---|---|")
    ratios = defaultdict(lambda: ([], []))
    for (sc, bd, _seed), ms in by.items():
        ft = ms.get("finetune")
        if ft is None or not ft["dir_n"] or ft["dir_k"] == 0:
            continue
        for m, c in ms.items():
            if m == "finetune" or not c["dir_n"]:
                continue
            d, a = ratios[(sc, bd, m)]
            d.append((c["dir_k"] / c["dir_n"]) / (ft["dir_k"] / ft["dir_n"]))
            a.append((c["acc_k"] / c["acc_n"]) / (ft["acc_k"] / ft["acc_n"]))
    for (sc, bd, m), (d, a) in sorted(ratios.items()):
        print(f"| {sc} | {bd} | {m} | {interval(d)} | {interval(a)} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/nlp_efficacy.jsonl")

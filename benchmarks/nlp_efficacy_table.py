"""Summarise benchmarks/results/nlp_efficacy.jsonl: ACC / DIR per method, each method against fine-tuning.

    .venv/bin/python benchmarks/nlp_efficacy_table.py benchmarks/results/nlp_efficacy.jsonl

ACC / DIR per method: mean ± sd over the seeds [95 % interval, :func:`safereuse.metrics.seed_interval`
on the per-seed counts k/n]. Against fine-tuning (same seed, same backdoor, same scenario: a paired
comparison): the difference in points, mean ± sd [95 % interval,
:func:`safereuse.metrics.seed_difference`], and the per-seed ratio, mean ± sd (no interval: a ratio of
two small rates has no useful symmetric one). Both intervals count the seed spread (Student's t,
S − 1 degrees of freedom) and the binomial error of the audited sentences, which every seed shares.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

from safereuse.metrics import SeedDifference, SeedInterval, mean_std, seed_difference, seed_interval


def _fmt(r: SeedInterval | SeedDifference) -> str:
    """``mean ± sd [lo, hi] (n=seeds)``, ``(1 seed)`` for one, ``-`` for none."""
    if r.seeds == 0:
        return "-"
    if r.seeds == 1:
        return f"{r.mean:.2f} (1 seed)"
    return f"{r.mean:.2f} ± {r.std:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}] (n={r.seeds})"


def _ratio(xs: list[float]) -> str:
    ms = mean_std(xs)
    return "-" if ms.n == 0 else f"{ms.mean:.2f} ± {ms.std:.2f} (n={ms.n})"


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
        acc = seed_interval([(c["acc_k"], c["acc_n"]) for c in cs])
        dir_ = seed_interval([(c["dir_k"], c["dir_n"]) for c in cs])
        tr = mean_std([c["train_s"] for c in cs]).mean
        au = mean_std([c["audit_s"] for c in cs]).mean
        print(f"| {sc} | {bd} | {m} | {len(cs)} | {_fmt(acc)} | {_fmt(dir_)} | {tr:.0f} | {au:.0f} |")
    print(
        "\n| scenario | backdoor | method | DIR − finetune pt | ACC − finetune pt "
        "| DIR ratio to finetune | ACC ratio to finetune |"
    )
    print("|---|---|---|---|---|---|---|")
    ratios = defaultdict(lambda: ([], []))
    pairs = defaultdict(lambda: ([], [], [], []))  # DIR and ACC counts of the method, then fine-tuning
    for (sc, bd, _seed), ms in by.items():
        ft = ms.get("finetune")
        if ft is None or not ft["dir_n"] or ft["dir_k"] == 0:
            continue
        for m, c in ms.items():
            if m == "finetune" or not c["dir_n"]:
                continue
            dm, am, df, af = pairs[(sc, bd, m)]
            dm.append((c["dir_k"], c["dir_n"]))
            df.append((ft["dir_k"], ft["dir_n"]))
            am.append((c["acc_k"], c["acc_n"]))
            af.append((ft["acc_k"], ft["acc_n"]))
            d, a = ratios[(sc, bd, m)]
            d.append((c["dir_k"] / c["dir_n"]) / (ft["dir_k"] / ft["dir_n"]))
            a.append((c["acc_k"] / c["acc_n"]) / (ft["acc_k"] / ft["acc_n"]))
    for (sc, bd, m), (d, a) in sorted(ratios.items()):
        dm, am, df, af = pairs[(sc, bd, m)]
        dd, da = _fmt(seed_difference(dm, df)), _fmt(seed_difference(am, af))
        print(f"| {sc} | {bd} | {m} | {dd} | {da} | {_ratio(d)} | {_ratio(a)} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/nlp_efficacy.jsonl")

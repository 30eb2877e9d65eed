"""Tables of a CARTL grid (issue 14) from the ``results.csv`` that ``safereuse report`` writes.

    .venv/bin/python benchmarks/cartl_tables.py docs/results/cartl-grid.csv > /tmp/cartl-tables.md

Prints, per scenario: each method point's Acc (clean test accuracy), Rob PGD-20 / PGD-100 /
AutoAttack (robust accuracy on the audited images) and DIR PGD-20, as mean ± sd over seeds
[95 % interval, :func:`safereuse.metrics.seed_interval` on the per-seed counts k/n]; then paired
per-seed differences (same seed = same student sample, head and data order) for the comparisons
behind the paper's claims, mean ± sd [95 % interval, :func:`safereuse.metrics.seed_difference`].
Both intervals count the seed-to-seed spread (Student's t, S − 1 degrees of freedom: 4.30 for 3
seeds) *and* the binomial error of the audited images that every seed shares (which does not shrink
with more seeds), clipped to [0, 100] / [−100, +100]: an interval that excludes 0 is a difference
larger than seed and image noise together.
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict

from safereuse.metrics import SeedDifference, SeedInterval, seed_difference, seed_interval

Counts = tuple[int, int]

PGD20 = "pgd(max_samples=None,steps=20)"
PGD100 = "pgd(max_samples=40,steps=100)"
AA = "autoattack"
VANILLA = "finetune-last-k(bn_affine=train,bn_stats=freeze,k=3)"  # the default BatchNorm case
TWIN = "finetune-last-k(bn_affine=freeze,bn_stats=update,k=3)"  # NEFT's own BatchNorm case

UPD_TRAIN = "finetune-last-k(bn_affine=train,bn_stats=update,k=3)"
REUSE_FRZ = "finetune-last-k(bn_affine=freeze,bn_stats=freeze,k=3)"


def _cartl(beta: str, sigma: str = "reshape") -> str:
    return f"cartl(beta={beta},neft_head=True,sigma={sigma})"


# (label of the comparison, minuend, subtrahend)
PAIRS: list[tuple[str, str, str]] = [
    *[(f"CARTL β={b} σ={s} − Vanilla twin", _cartl(b, s), TWIN) for s in ("reshape", "operator")
      for b in ("0.4", "0.6", "0.8", "1.0")],
    *[(f"CARTL β={b} σ=reshape − Vanilla default", _cartl(b), VANILLA) for b in ("0.8", "1.0")],
    *[(f"CARTL β={b}: operator − reshape", _cartl(b, "operator"), _cartl(b)) for b in ("0.4", "1.0")],
    ("CARTL β=0.4 − β=1.0 (reshape)", _cartl("0.4"), _cartl("1.0")),
    ("CARTL β=0.8: free − normalised head", "cartl(beta=0.8,neft_head=False,sigma=reshape)", _cartl("0.8")),
    *[(f"LwF λ={lam} − Vanilla default", f"lwf(feature_weight={lam})", VANILLA)
      for lam in ("0.1", "0.01", "0.001")],
    ("BN: update stats − reuse stats (affine trained)", UPD_TRAIN, VANILLA),
    ("BN: freeze affine − train affine (stats reused)", REUSE_FRZ, VANILLA),
    ("BN: freeze affine − train affine (stats updated)", TWIN, UPD_TRAIN),
    ("Vanilla k=1 − k=3", "finetune-last-k(bn_affine=train,bn_stats=freeze,k=1)", VANILLA),
    ("Vanilla k=2 − k=3", "finetune-last-k(bn_affine=train,bn_stats=freeze,k=2)", VANILLA),
    ("Vanilla k=4 − k=3", "finetune-last-k(bn_affine=train,bn_stats=freeze,k=4)", VANILLA),
]  # fmt: skip


def _fmt(r: SeedInterval | SeedDifference, signed: bool = False) -> str:
    """``mean ± sd [lo, hi]`` of a seed interval or a paired difference (``(1 seed)`` for one)."""
    if r.seeds == 0:
        return "–"
    f = "{:+.1f}" if signed else "{:.1f}"
    if r.seeds == 1:
        return f.format(r.mean) + " (1 seed)"
    return f.format(r.mean) + f" ± {r.std:.1f} [" + f.format(r.ci_low) + ", " + f.format(r.ci_high) + "]"


def _counts(value: str, n: str) -> Counts:
    """``(k, n)`` of a rate the CSV writes in percent over ``n`` (exact: k = value · n / 100)."""
    return round(float(value) * int(n) / 100), int(n)


def load(path: str) -> dict[tuple[str, str, int], dict[str, Counts]]:
    """``(scenario, label, seed) -> {acc, rob20, rob100, robaa, dir20}`` as ``(k, n)`` of the done cells."""
    cells: dict[tuple[str, str, int], dict[str, Counts]] = defaultdict(dict)
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r["status"] != "done":
                continue
            c = cells[(r["scenario"], r["label"], int(r["seed"]))]
            c["acc"] = _counts(r["acc"], r["n_test"])
            key = {PGD20: "20", PGD100: "100", AA: "aa"}.get(r["defect"])
            if key and r["rob"]:
                c["rob" + key] = _counts(r["rob"], r["rob_n"])
                if key == "20" and r["dir"]:
                    c["dir20"] = (int(r["k"]), int(r["n"]))
    return cells


def _label(lab: str) -> str:
    """Spec labels name only swept parameters; normalise ``k=3`` / ``sigma`` spellings for PAIRS."""
    return lab.replace("beta=1,", "beta=1.0,").replace("beta=1)", "beta=1.0)")


def main(path: str) -> None:
    cells = load(path)
    cells = {(s, _label(lab), seed): v for (s, lab, seed), v in cells.items()}
    scen = sorted({s for s, _, _ in cells})
    cols = [("acc", "Acc %"), ("rob20", "Rob PGD-20 %"), ("rob100", "Rob PGD-100 %"), ("robaa", "Rob AA %"),
            ("dir20", "DIR PGD-20 %")]  # fmt: skip
    for s in scen:
        labels = sorted({lab for sc, lab, _ in cells if sc == s})
        print(f"\n### {s}\n")
        print("| method | seeds | " + " | ".join(c[1] for c in cols) + " |")
        print("|---|---|" + "---|" * len(cols))
        for lab in labels:
            vs = [v for (sc, lb, _), v in cells.items() if sc == s and lb == lab]
            print(
                f"| {lab} | {len(vs)} | "
                + " | ".join(_fmt(seed_interval([v[k] for v in vs if k in v])) for k, _ in cols)
                + " |"
            )
        print(f"\nPaired per-seed differences ({s}; points):\n")
        print("| difference | seeds | " + " | ".join(c[1].replace(" %", "") for c in cols) + " |")
        print("|---|---|" + "---|" * len(cols))
        for name, a, b in PAIRS:
            seeds = sorted(
                {sd for sc, lb, sd in cells if sc == s and lb == a}
                & {sd for sc, lb, sd in cells if sc == s and lb == b}
            )
            if not seeds:
                continue
            row = []
            for k, _ in cols:
                pa = [cells[(s, a, sd)].get(k) for sd in seeds]
                pb = [cells[(s, b, sd)].get(k) for sd in seeds]
                row.append(_fmt(seed_difference(pa, pb), signed=True))
            print(f"| {name} | {len(seeds)} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(sys.argv[1])

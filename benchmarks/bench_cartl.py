"""CARTL benchmarks: what robustness costs at training time (source side and transfer side).

1. **Adversarial-training epoch vs a natural epoch.** ``resnet8`` width 16 on Fashion-MNIST classes
   0-4 (``--images`` training images, batch 128, SGD, the same batches: :func:`safereuse.train.fit`
   with the same seed), one epoch of :func:`~safereuse.train.fit` with the default cross-entropy
   against one epoch with :class:`safereuse.objectives.AdversarialTraining` (Madry PGD-7, ε 8/255,
   step 2/255, random start), and with FDM on top (λ 0.64, k 2: one more clean forward pass whose
   features enter the loss). The raw cost of PGD-7 training is 8 forward + backward passes per
   step (7 attack steps w.r.t. the input only, 1 weight update). Target: ≤ 8.5×.
2. **NEFT step vs a plain fine-tuning step.** The same model and data, last ``k`` blocks trained
   (``train_last_k``, k = 2 and 4 of resnet8's 5 blocks); plain last-k fine-tuning against the same
   fit inside :func:`safereuse.methods.cartl.neft` (every Conv / Linear of the last k blocks
   reparameterised as β·W/σ(W), one power iteration per training forward), for ``sigma=reshape``
   and ``sigma=operator``. Timed per epoch of the same batches, reported per step. The one-time
   convergence of σ when NEFT is applied is outside the timed region (it happens once per transfer).
   Target: ≤ 1.3×.

Every variant is timed once per round, round-robin, over ``--rounds`` rounds (the machine may be
shared); ratios use the best round of each (what the machine gives without contention); medians,
all rounds and the load average are stored beside them.

Run: ``.venv/bin/python benchmarks/bench_cartl.py [--rounds 3] [--images 1024]``; writes
``benchmarks/results/cartl.json``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable

import torch
from _common import write  # script-local module (benchmarks/_common.py)

from safereuse.data import DataSpec, load_data
from safereuse.models import create_model
from safereuse.objectives import AdversarialTraining
from safereuse.train import FitConfig, fit

THREADS = 2
BATCH = 128


def _data(images: int):
    data = load_data(DataSpec("fashion-mnist", classes=[0, 1, 2, 3, 4], train_size=images, val_fraction=0.0))
    return data.train


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("resnet8", num_classes=5, width=16)


def _cfg(**kw) -> FitConfig:
    return FitConfig(epochs=1, batch_size=BATCH, lr=0.05, progress=False, device="cpu", seed=0, **kw)


def _rounds(variants: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    for fn in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for k, fn in variants.items():
            times[k].append(fn())
    return times


def _summary(times: dict[str, list[float]], base: str, steps: int) -> dict:
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "steps_per_epoch": steps,
        "best_s": best,
        "median_s": med,
        "all_s": times,
        "best_ms_per_step": {k: 1000 * v / steps for k, v in best.items()},
        "ratio": {k: best[k] / best[base] for k in times if k != base},
        "ratio_median": {k: med[k] / med[base] for k in times if k != base},
    }


def adversarial_epoch(rounds: int, images: int) -> dict:
    train = _data(images)
    model = _model()

    def epoch(at: AdversarialTraining | None) -> float:
        m = copy.deepcopy(model)
        loss_fn = at.loss_fn(m) if at is not None else None
        t = time.perf_counter()
        fit(m, train, None, _cfg(), loss_fn=loss_fn)
        return time.perf_counter() - t

    times = _rounds(
        {
            "natural": lambda: epoch(None),
            "pgd7": lambda: epoch(AdversarialTraining()),
            "pgd7_fdm": lambda: epoch(AdversarialTraining(fdm_lambda=0.64, fdm_k=2)),
        },
        rounds,
    )
    res = {"images": len(train), "batch": BATCH, "threads": THREADS, "target_ratio": 8.5,
           **_summary(times, "natural", -(-len(train) // BATCH))}  # fmt: skip
    res["pass"] = res["ratio"]["pgd7"] <= 8.5
    return res


def neft_step(rounds: int, images: int) -> dict:
    from safereuse.methods.cartl import neft

    train = _data(images)
    model = _model()
    out: dict = {"images": len(train), "batch": BATCH, "threads": THREADS, "target_ratio": 1.3, "beta": 0.5}

    def epoch(k: int, sigma: str | None) -> float:
        m = copy.deepcopy(model)
        if sigma is None:
            t = time.perf_counter()
            fit(m, train, None, _cfg(train_last_k=k))
            return time.perf_counter() - t
        with neft(m, k, beta=0.5, sigma=sigma, generator=torch.Generator().manual_seed(0)):  # type: ignore[arg-type]
            t = time.perf_counter()
            fit(m, train, None, _cfg(train_last_k=k))
            return time.perf_counter() - t

    for k in (2, 4):
        times = _rounds(
            {
                "plain": lambda k=k: epoch(k, None),
                "neft_reshape": lambda k=k: epoch(k, "reshape"),
                "neft_operator": lambda k=k: epoch(k, "operator"),
            },
            rounds,
        )
        out[f"k{k}"] = _summary(times, "plain", -(-len(train) // BATCH))
        out[f"k{k}"]["pass"] = all(v <= 1.3 for v in out[f"k{k}"]["ratio"].values())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=int, default=1024)
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    load0 = os.getloadavg()
    at = adversarial_epoch(args.rounds, args.images)
    r = at["ratio"]
    b = at["best_s"]
    print(f"adversarial epoch: natural {b['natural']:.2f} s, PGD-7 {b['pgd7']:.2f} s "
          f"({r['pgd7']:.2f}×), PGD-7+FDM {b['pgd7_fdm']:.2f} s ({r['pgd7_fdm']:.2f}×)")  # fmt: skip
    nf = neft_step(args.rounds, args.images)
    for k in ("k2", "k4"):
        s = nf[k]
        print(f"NEFT {k}: plain {s['best_ms_per_step']['plain']:.1f} ms/step, reshape "
              f"{s['ratio']['neft_reshape']:.2f}×, operator {s['ratio']['neft_operator']:.2f}×")  # fmt: skip
    load1 = os.getloadavg()
    write("cartl", {"adversarial_epoch": at, "neft_step": nf, "loadavg_start": load0, "loadavg_end": load1})


if __name__ == "__main__":
    main()

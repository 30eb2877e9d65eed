"""ReMoS benchmarks.

1. Slice computation from a given (random) coverage profile on an ImageNet-style ResNet-18
   (``create_model("resnet18", 1000, 3, 224)``: 20 conv layers, 11.2 M conv weights): global stable
   ranking by coverage score and by magnitude, relevance ``S = R_cov − R_mag``, exact selection of
   the ``round(0.1 · N)`` lowest. Target: < 1 s on 2 CPU cores (the published artifact's Python
   loop: 32 s).
2. Profiling cost: the coverage profile (hooks on every conv, input and output, ``nc``) of a
   resnet8 (width 16) over 2,000 Fashion-MNIST images against one plain forward pass over the same
   images in the same mode (eval, no autograd, batch 256), measured alternately in the same run.
   Target: ≤ 1.5×.

Both are reported as the best of several rounds (the machine may be shared), with the median and
the load average beside it, for a process with 2 and with 1 intra-op threads. (``relevant_slice``
itself runs with one thread on the CPU: its sorts are sequential anyway, and on an oversubscribed
machine every 2-thread parallel region can stall for a scheduler slice.)

Run: ``.venv/bin/python benchmarks/bench_remos.py [--rounds 5]``; writes ``benchmarks/results/remos.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from _common import write  # script-local module (benchmarks/_common.py)

from safereuse.data import load_data
from safereuse.models import create_model
from safereuse.slicing import coverage_layers, coverage_profile, relevant_slice, slice_layers


def _timed(fn, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def slice_speed(rounds: int, threads: int, ratio: float = 0.1, samples: int = 5000) -> dict:
    torch.set_num_threads(threads)
    model = create_model("resnet18", 1000, 3, 224)
    layers = slice_layers(model, "conv")
    weights = [m.weight.detach() for _, m in layers]
    gen = torch.Generator().manual_seed(0)
    # a coverage profile as ``samples`` images would give: counts in [0, samples]
    f_in = [torch.randint(0, samples + 1, (w.shape[1],), generator=gen) for w in weights]
    f_out = [torch.randint(0, samples + 1, (w.shape[0],), generator=gen) for w in weights]
    n = sum(w.numel() for w in weights)
    keep: list[torch.Tensor] = []

    def run() -> None:
        nonlocal keep
        keep = relevant_slice(weights, f_in, f_out, ratio)

    run()  # warm-up (allocator, thread pool)
    times = _timed(run, rounds)
    reset = sum(int((~k).sum()) for k in keep)
    assert reset == round(ratio * n)
    res = {"threads": threads, "layers": len(weights), "weights": n, "ratio": ratio, "reset": reset,
           "best_s": min(times), "median_s": statistics.median(times), "all_s": times}  # fmt: skip
    print(f"slice  resnet18 {n:,} conv weights, {threads} thread(s): best {min(times):.3f} s, "
          f"median {statistics.median(times):.3f} s (target < 1 s)")  # fmt: skip
    return res


def profile_cost(rounds: int, threads: int, n_images: int = 2000, batch: int = 256) -> dict:
    torch.set_num_threads(threads)
    data = load_data("fashion-mnist", classes=[5, 6, 7, 8, 9], train_size=n_images, val_fraction=0.0)
    x = data.train.x
    torch.manual_seed(0)
    model = create_model("resnet8", 5, width=16).eval()
    names = [n for n, _ in coverage_layers(model, "conv")]

    @torch.no_grad()
    def forward() -> None:
        for i in range(0, len(x), batch):
            model(x[i : i + batch])

    def profile() -> None:
        coverage_profile(model, x, names, "nc", batch_size=batch)

    forward()
    profile()  # warm-up
    fwd, prof = [], []
    for _ in range(rounds):  # alternate, so both see the same machine load
        fwd += _timed(forward, 1)
        prof += _timed(profile, 1)
    ratio = min(prof) / min(fwd)
    res = {"threads": threads, "images": len(x), "layers": len(names), "batch": batch,
           "forward_best_s": min(fwd), "profile_best_s": min(prof), "ratio": ratio,
           "ratio_median": statistics.median(prof) / statistics.median(fwd),
           "forward_all_s": fwd, "profile_all_s": prof}  # fmt: skip
    print(f"profile resnet8-w16, {len(x)} images, {len(names)} convs, {threads} thread(s): forward "
          f"{min(fwd):.3f} s, profile {min(prof):.3f} s → {ratio:.2f}× (target ≤ 1.5×)")  # fmt: skip
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    load_before = os.getloadavg()
    threads = torch.get_num_threads()
    figures = {
        "slice": slice_speed(args.rounds, 2),
        "slice_1thread": slice_speed(args.rounds, 1),
        "profile": profile_cost(args.rounds, 2),
        "profile_1thread": profile_cost(args.rounds, 1),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    print(f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f} (2 cores)")
    torch.set_num_threads(threads)  # the machine record states the process default, not the last run's
    write("remos", figures)


if __name__ == "__main__":
    main()

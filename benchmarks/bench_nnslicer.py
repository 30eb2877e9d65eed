"""NNSlicer benchmark: the whole slice of a batch against one forward + backward pass of it.

1. ResNet-18 at 32 px, 10 classes, random weights, a batch of 256 random 32×32 images, channel
   granularity, in two layouts: the CIFAR ResNet-18 of NNSlicer's evaluation (``small_input=True``:
   3×3 stride-1 stem, no max-pool; 0.56 G multiply-adds per image forward) and torchvision's ImageNet layout
   (7×7 stride-2 stem + max-pool: its feature maps are 8 px to 1 px, so a forward + backward pass is
   ~16× cheaper while the slice's per-synapse work, ``[N, C_out, C_in]`` per layer, is the same).
   Timed in the same run, alternately: one training-style
   forward + backward pass of the batch (eval mode, cross-entropy on random labels, ``backward()``)
   and the whole slice of the batch (forward analysis + backward analysis, criterion = predicted
   class, θ = 0.3 and θ = 0). Target: slice ≤ 3× forward + backward. The per-input time is stated
   beside the paper's 40 s (ResNet-18, batched; 550 s one by one).
2. Peak memory (resident set, sampled every 5 ms by a thread) of each, above the RSS before.
3. Streaming: a set of ``--stream`` inputs sliced in batches of 256 (sums only; θ =
   ``--stream-theta``, default 0.3; CIFAR layout): the RSS sampled through the run must stay flat
   (the peak of the second half vs the first half).

Run: ``.venv/bin/python benchmarks/bench_nnslicer.py [--rounds 3] [--stream 10000]``; writes
``benchmarks/results/nnslicer.json``. Best of ``--rounds`` with the median and load average beside
it: the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import torch
from _common import write  # script-local module (benchmarks/_common.py)

from safereuse.models import create_model
from safereuse.slicing import Slicer

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


class Peak:
    """Samples the RSS in a thread while the block runs: ``peak`` (MiB) and the ``samples``."""

    def __init__(self, every: float = 0.005) -> None:
        self.every, self.samples, self._stop = every, [], threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), rss_mb()))
            time.sleep(self.every)

    def __enter__(self) -> Peak:
        self.base = rss_mb()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.samples.append((time.perf_counter(), rss_mb()))
        self.peak = max(v for _, v in self.samples)


def ratio_run(rounds: int, batch: int = 256, small_input: bool = True) -> dict:
    torch.manual_seed(0)
    model = create_model("resnet18", 10, 3, 32, small_input=small_input).eval()
    x = torch.rand(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    slicer = {th: Slicer(theta=th) for th in (0.3, 0.0)}
    t = time.perf_counter()
    for s in slicer.values():
        s.profile(model, x, batch_size=batch)  # the profile is once per model: not in the ratio
    profile_s = (time.perf_counter() - t) / 2

    def fwd_bwd() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        model.zero_grad(set_to_none=True)

    fwd_bwd()
    slicer[0.3].slice(model, x, batch_size=batch)  # warm-up
    times: dict[str, list[float]] = {"fwd_bwd": [], "slice_theta0.3": [], "slice_theta0": []}
    peaks: dict[str, float] = {}
    for _ in range(rounds):  # alternate, so all see the same machine load
        for key, fn in (
            ("fwd_bwd", fwd_bwd),
            ("slice_theta0.3", lambda: slicer[0.3].slice(model, x, batch_size=batch)),
            ("slice_theta0", lambda: slicer[0.0].slice(model, x, batch_size=batch)),
        ):
            with Peak() as p:
                t = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t)
            peaks[key] = max(peaks.get(key, 0.0), p.peak - p.base)
    best = {k: min(v) for k, v in times.items()}
    layout = "CIFAR" if small_input else "ImageNet"
    res = {
        "model": f"resnet18, {layout} layout (10 classes, 3×32×32, random weights)",
        "batch": batch,
        "profile_s": profile_s,
        "best_s": best,
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "all_s": times,
        "ratio_theta0.3": best["slice_theta0.3"] / best["fwd_bwd"],
        "ratio_theta0": best["slice_theta0"] / best["fwd_bwd"],
        "ratio_median_theta0.3": statistics.median(times["slice_theta0.3"])
        / statistics.median(times["fwd_bwd"]),
        "per_input_s_theta0.3": best["slice_theta0.3"] / batch,
        "per_input_s_theta0": best["slice_theta0"] / batch,
        "paper_per_input_s": {"batched": 40.0, "one_by_one": 550.0},
        "peak_rss_above_start_mib": peaks,
    }
    print(
        f"resnet18 {layout} layout 32px batch {batch}: fwd+bwd {best['fwd_bwd']:.2f} s, "
        f"slice θ=0.3 {best['slice_theta0.3']:.2f} s "
        f"({res['ratio_theta0.3']:.2f}×), θ=0 {best['slice_theta0']:.2f} s ({res['ratio_theta0']:.2f}×); "
        f"per input {res['per_input_s_theta0.3'] * 1000:.1f} ms (paper: 40 s); peak RSS +MiB {peaks}"
    )
    return res


def stream_run(n: int, theta: float, batch: int = 256) -> dict:
    torch.manual_seed(0)
    model = create_model("resnet18", 10, 3, 32, small_input=True).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, 32, 32, generator=gen)  # the inputs themselves: n · 12 KiB, allocated before
    slicer = Slicer(theta=theta).profile(model, x[:1024], batch_size=batch)
    with Peak(every=0.05) as p:
        t = time.perf_counter()
        r = slicer.slice(model, x, batch_size=batch)
        secs = time.perf_counter() - t
    t0 = p.samples[0][0]
    half = t0 + (p.samples[-1][0] - t0) / 2
    first = max(v for ts, v in p.samples if ts <= half)
    second = max(v for ts, v in p.samples if ts > half)
    res = {
        "inputs": n,
        "theta": theta,
        "batch": batch,
        "count": r.count,
        "seconds": secs,
        "per_input_s": secs / n,
        "rss_start_mib": p.base,
        "peak_first_half_mib": first,
        "peak_second_half_mib": second,
        "growth_mib": second - first,
        "rss_trace_mib": [round(v, 1) for _, v in p.samples[:: max(1, len(p.samples) // 100)]],
    }
    print(
        f"stream {n} inputs in batches of {batch}: {secs:.1f} s; RSS start {p.base:.0f} MiB, peak first half "
        f"{first:.0f} MiB, second half {second:.0f} MiB"
    )
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--stream", type=int, default=10000)
    ap.add_argument("--stream-theta", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    figures = {
        "resnet18_cifar_batch256": ratio_run(args.rounds, small_input=True),
        "resnet18_imagenet_layout_batch256": ratio_run(args.rounds, small_input=False),
    }
    if args.stream:
        figures["stream"] = stream_run(args.stream, args.stream_theta)
    figures.update(loadavg_before=load_before, loadavg_after=os.getloadavg())
    print(f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f} (2 cores)")
    write("nnslicer", figures)


if __name__ == "__main__":
    main()

"""Penultimate-attack crafting speed (``safereuse.defects.Penultimate``).

Crafts the penultimate-layer attack (Rezaei & Liu, ICLR 2020; defaults: L∞ ε = 8/255, 40 iterations,
step ε/10, random start) for 1,000 Fashion-MNIST test images (classes 0-4) on a resnet8 (width 16)
and compares it with ``iterations ×`` one forward+backward pass over the same images and batches —
the same feature loss, gradient w.r.t. the input, eval mode, frozen weights — measured in the same
run. The ratio is the attack's own overhead (random start, sign step, projection, bookkeeping);
target ≤ 1.2×. Timing does not depend on the weights, so the model is untrained.

The machine may be shared, so the two are interleaved batch by batch (alternating which goes first):
for every batch of 256, the attack is timed, and beside it ``--passes`` reference passes on the same
batch; the reference is ``iterations ×`` the mean of those passes (the ratio against the fastest pass,
a pessimistic figure, is reported too). With ``--rounds`` > 1 the best round is reported (all kept).
By default torch runs on one thread: on a shared 2-core machine two OpenMP threads wait on each other
whenever one is descheduled, and single passes then vary by 3-4× (one thread: about ±15 %).

Run: ``.venv/bin/python benchmarks/bench_penultimate.py [--n 1000] [--rounds 1] [--threads 1]``
Writes ``benchmarks/results/penultimate.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import write  # script-local module (benchmarks/_common.py)

from safereuse.data import load_data
from safereuse.defects import Penultimate, craft_batched
from safereuse.defects.attacks import attack_mode, penultimate_loss
from safereuse.device import resolve_device
from safereuse.models import create_model


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def one_pass(model, xb: torch.Tensor, yb: torch.Tensor, dev: torch.device, loss) -> float:
    """Seconds of one forward+backward (gradient w.r.t. the input) over one batch."""
    with attack_mode(model):
        _sync(dev)
        t = time.perf_counter()
        xg = xb.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            torch.autograd.grad(loss(model, xg, yb).sum(), xg)
        _sync(dev)
        return time.perf_counter() - t


def one_round(model, attack, x, y, args, dev, loss, gen, flip: bool) -> dict[str, float | torch.Tensor]:
    """Craft every batch and, right beside it, time ``passes`` reference passes on the same batch.

    Returns:
        ``craft_s``; ``reference_s`` = Σ over batches of ``steps ×`` the mean pass on that batch;
        ``reference_fastest_s`` with the fastest pass instead (a pessimistic ratio); the crafted
        images ``x_adv``.
    """
    craft_s = ref_min = ref_mean = 0.0
    outs = []
    for j, i in enumerate(range(0, len(x), args.batch)):
        xb, yb = x[i : i + args.batch].to(dev), y[i : i + args.batch].to(dev)
        for part in ("ref", "craft") if (j % 2 == 0) ^ flip else ("craft", "ref"):
            if part == "ref":
                times = [one_pass(model, xb, yb, dev, loss) for _ in range(args.passes)]
                ref_min += attack.steps * min(times)
                ref_mean += attack.steps * statistics.mean(times)
            else:
                _sync(dev)
                t = time.perf_counter()
                outs.append(attack.craft(model, xb, yb, gen).cpu())
                _sync(dev)
                craft_s += time.perf_counter() - t
    return {
        "craft_s": craft_s,
        "reference_s": ref_mean,
        "reference_fastest_s": ref_min,
        "ratio": craft_s / ref_mean,
        "ratio_vs_fastest_pass": craft_s / ref_min,
        "x_adv": torch.cat(outs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="test images to attack")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--passes", type=int, default=10, help="reference passes timed per batch")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    dev = resolve_device(args.device)
    data = load_data("fashion-mnist", classes=[0, 1, 2, 3, 4])
    x, y = data.test.x[: args.n], data.test.y[: args.n]
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=5, width=16).to(dev).eval()
    attack = Penultimate()
    loss = penultimate_loss(attack.neuron, attack.target, attack.others)

    craft_batched(Penultimate(steps=2), model, x[: args.batch], y[: args.batch], args.batch)  # warm-up
    one_pass(model, x[: args.batch].to(dev), y[: args.batch].to(dev), dev, loss)

    rounds = []
    for r in range(args.rounds):
        gen = torch.Generator().manual_seed(attack.seed)
        rounds.append(one_round(model, attack, x, y, args, dev, loss, gen, flip=bool(r % 2)))
    x_adv = rounds[-1].pop("x_adv")
    for rd in rounds:
        rd.pop("x_adv", None)
    best = min(rounds, key=lambda d: d["ratio"])
    craft_s, reference = best["craft_s"], best["reference_s"]
    with torch.no_grad():
        f_clean = model.features(x[:256].to(dev))[:, attack.neuron].mean().item()
        f_adv = model.features(x_adv[:256].to(dev))[:, attack.neuron].mean().item()
    figures = {
        "device": str(dev),
        "model": "resnet8 (width 16), untrained",
        "data": "fashion-mnist test, classes 0-4",
        "images": len(x),
        "batch_size": args.batch,
        "attack": attack.config(),
        "seconds": craft_s,
        "images_per_s": len(x) / craft_s,
        "one_pass_s": reference / attack.steps,
        "reference_s": reference,
        "ratio": craft_s / reference,
        "ratio_vs_fastest_pass": best["ratio_vs_fastest_pass"],
        "target_ratio": 1.2,
        "median_ratio": statistics.median(d["ratio"] for d in rounds),
        "rounds": rounds,
        "method": f"per batch, alternating: craft ({attack.steps} iterations) beside {args.passes} "
        f"reference passes; reference = {attack.steps} x the mean pass (ratio) or the fastest pass "
        "(ratio_vs_fastest_pass)",
        "threads": torch.get_num_threads(),
        "feature_mean_clean": f_clean,
        "feature_mean_adv": f_adv,
        "linf": float((x_adv - x).abs().max()),
    }
    print(
        f"penultimate: {len(x)} images in {craft_s:.2f} s ({len(x) / craft_s:.1f} img/s) on {dev}; "
        f"{attack.steps} × forward+backward = {reference:.2f} s; ratio {craft_s / reference:.3f} "
        f"(target ≤ 1.2); f_{attack.neuron}: {f_clean:.3f} → {f_adv:.3f}"
    )
    write("penultimate", figures)


if __name__ == "__main__":
    main()

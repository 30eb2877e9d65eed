"""SeaM benchmarks: what re-engineering buys at inference time, and what the mask search costs.

1. **Channel masks, materialised.** A Fashion-MNIST-sized ``resnet8`` (width 16, 1×28×28, 10
   classes) and a ``resnet18`` at 32 px (3×32×32, 10 classes) get ``channel``-granularity masks that
   switch off 50 % and 75 % of the output channels of every conv (a fixed-seed permutation per
   channel count, so channels coupled by residual adds agree); :func:`safereuse.slicing.materialize`
   removes them with Torch-Pruning. Latency of the dense original and of the materialised model,
   2 threads, batch 1 and 64, measured alternately in the same run (``torch.utils.benchmark``,
   :func:`safereuse.metrics.latency_rounds`); speed-up = dense / materialised median. Target: ≥ 2×.
2. **Weight masks, unstructured.** The same models with 90 % of their conv / linear weights (head
   excluded) zeroed in place, as SeaM's paper-style ``weight`` masks leave them: dense PyTorch does
   not skip zeros, so expect ≈ 1× — reported beside the sparsity-aware FLOP count
   (:func:`safereuse.metrics.sparse_flops`, multiplications at batch 1), which is what the paper's
   −42 % inference time (DeepSparse, end-of-life) rested on.
   ``channel_floor`` keeps **one** channel in every conv (same operators): the speed-up no
   channel-granularity re-engineering of that model can exceed on this machine.
3. **Mask-search epoch vs a plain training epoch.** ``resnet8`` w16 on 2,000 Fashion-MNIST images,
   batch 64, the same batches: one epoch of :func:`safereuse.slicing.maskparam.search_masks` (mask
   + head phase, inside ``mask_scores``, ``weight`` and ``channel`` granularity, with SeaM's
   ``ReLU → Linear`` head; its validation pass runs on 64 images) against one epoch of plain
   training of the same model and head with Adam (BN in train mode as usual; also with BN frozen,
   as the search runs it). Target: ≤ 1.5×.

4. **Saved re-engineered models** (``--saved ORIGINAL REENG...``): the artifacts of
   ``safereuse reengineer`` timed again against their original, round-robin, e.g. on a quiet machine
   after a run measured under load; writes ``benchmarks/results/seam_saved.json``.

Every variant is timed once per round, round-robin, over ``--rounds`` rounds (the machine may be
shared); ratios use the best round of each (what the machine gives without contention), the
medians and all rounds are stored beside them with the load average.

Run: ``.venv/bin/python benchmarks/bench_seam.py [--rounds 5]``;
writes ``benchmarks/results/seam.json`` (``--inference-only``: ``seam_inference.json``).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch
import torch.nn.functional as F
from _common import write  # script-local module (benchmarks/_common.py)
from torch import nn

from safereuse.artifacts import load_model
from safereuse.data import load_data
from safereuse.metrics import latency_rounds, sparse_flops
from safereuse.models import create_model
from safereuse.slicing import apply_reset, materialize
from safereuse.slicing.maskparam import mask_scores, search_masks

THREADS = 2
BATCHES = (1, 64)
MODELS = {
    "resnet8_w16_28px": ("resnet8", dict(num_classes=10, in_channels=1, image_size=28, width=16)),
    "resnet18_32px": ("resnet18", dict(num_classes=10, in_channels=3, image_size=32)),
}


def _build(key: str) -> tuple[nn.Module, torch.Tensor]:
    arch, kwargs = MODELS[key]
    torch.manual_seed(0)
    model = create_model(arch, **kwargs).eval()
    x = torch.rand(1, kwargs["in_channels"], kwargs["image_size"], kwargs["image_size"])
    return model, x


def channel_masks(
    model: nn.Module, drop: float, seed: int = 0, keep: int | None = None
) -> dict[str, torch.Tensor]:
    """Masks that switch off ``drop`` of every conv's output channels (``keep``: all but that many);
    the channels are the first of a fixed permutation per channel count, so layers coupled by a
    residual add drop the same ones."""
    perms: dict[int, torch.Tensor] = {}
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            c = m.out_channels
            if c not in perms:
                perms[c] = torch.randperm(c, generator=gen)
            k = torch.ones_like(m.weight, dtype=torch.bool)
            k[perms[c][: c - keep if keep is not None else round(drop * c)]] = False
            out[f"{name}.weight"] = k
    return out


def weight_masks(model: nn.Module, drop: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """Unstructured masks: ``drop`` of every conv / linear weight (head excluded) at random."""
    gen = torch.Generator().manual_seed(seed)
    return {
        f"{name}.weight": torch.rand(m.weight.shape, generator=gen) >= drop
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not model.head
    }


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _alternate(
    models: dict[str, nn.Module], x: torch.Tensor, rounds: int
) -> dict[str, dict[str, dict[int, float]]]:
    """Best and median ms per batch of each model, measured round-robin so all see the same load."""
    runs = latency_rounds(models, x, BATCHES, threads=THREADS, round_time=0.5, rounds=rounds)
    return {
        k: {
            "best": {b: min(r[b] for r in rs) for b in BATCHES},
            "median": {b: statistics.median(r[b] for r in rs) for b in BATCHES},
            "all": {b: [r[b] for r in rs] for b in BATCHES},
        }
        for k, rs in runs.items()
    }


def inference(key: str, rounds: int) -> dict:
    model, x = _build(key)
    variants: dict[str, nn.Module] = {"dense": model}
    masks: dict[str, dict[str, torch.Tensor]] = {}
    for drop in (0.5, 0.75):
        masks[f"channel{int(drop * 100)}"] = m = channel_masks(model, drop)
        variants[f"channel{int(drop * 100)}"] = materialize(model, m, x)
    # the floor: one channel left in every conv, the same operators — no channel removal can beat it,
    # so ``dense / floor`` bounds the speed-up of any channel-granularity re-engineering of this model
    masks["channel_floor"] = m = channel_masks(model, 0.0, keep=1)
    variants["channel_floor"] = materialize(model, m, x)
    masks["weight90"] = wm = weight_masks(model, 0.9)
    zeroed = copy.deepcopy(model)
    apply_reset(zeroed, wm)  # dense tensors with 90 % zeros: what a weight-masked model runs as
    variants["weight90"] = zeroed
    lat = _alternate(variants, x, rounds)
    dense_flops = sparse_flops(model, x)
    res: dict = {"arch": MODELS[key], "threads": THREADS, "rounds": rounds, "variants": {}}
    for name, m in variants.items():
        fl = sparse_flops(m, x)
        best, dense = lat[name]["best"], lat["dense"]["best"]
        entry = {
            "params": _params(m),
            "mults_batch1": fl,
            "mults_ratio": fl / dense_flops,
            "latency_ms": lat[name],
            "speedup": {b: dense[b] / best[b] for b in BATCHES},  # best of the rounds, each
            "speedup_median": {b: lat["dense"]["median"][b] / lat[name]["median"][b] for b in BATCHES},
        }
        if name.startswith("channel"):  # conv layers that lost output channels
            entry["convs_narrowed"] = sum(
                p.shape[0] != model.get_parameter(n).shape[0]
                for n, p in m.named_parameters()
                if n in masks[name]
            )
        res["variants"][name] = entry
        sp = entry["speedup"]
        print(f"{key:18s} {name:10s} params {entry['params']:>10,}  mults {fl:>12,} "
              f"({entry['mults_ratio']:.3f})  b1 {best[1]:7.3f} ms ({sp[1]:.2f}×)  "
              f"b64 {best[64]:8.2f} ms ({sp[64]:.2f}×)")  # fmt: skip
    return res


def search_epoch_cost(rounds: int, n_images: int = 2000, batch: int = 64) -> dict:
    torch.set_num_threads(THREADS)
    data = load_data("fashion-mnist", train_size=n_images, val_fraction=0.0)
    x, y = data.train.x[:n_images], data.train.y[:n_images]
    val = (x[:64], y[:64])
    torch.manual_seed(0)
    model = create_model("resnet8", 10, width=16)
    torch.manual_seed(1)
    head = nn.Sequential(nn.ReLU(), nn.Linear(10, 10))
    n = len(y)

    def plain(bn_frozen: bool = False) -> float:
        net, h = copy.deepcopy(model).train(), copy.deepcopy(head).train()
        if bn_frozen:  # as the search runs it: BN in eval mode (frozen statistics)
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        opt = torch.optim.Adam([*net.parameters(), *h.parameters()], lr=1e-3)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        t = time.perf_counter()
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            loss = F.cross_entropy(h(net(x[idx])), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return time.perf_counter() - t

    def search(granularity: str) -> float:
        net, h = copy.deepcopy(model), copy.deepcopy(head)
        t = time.perf_counter()
        with mask_scores(net, "all", granularity) as sc:
            search_masks(net, h, (x, y), val, scores_of=lambda: sc, epochs=1, lr_mask=0.05, lr_head=0.1,
                         alpha=1.0, batch_size=batch, head_every=None, progress=False)  # fmt: skip
        return time.perf_counter() - t

    plain(), search("weight"), search("channel")  # warm-up
    times: dict[str, list[float]] = {"plain": [], "plain_bn_frozen": [], "weight": [], "channel": []}
    for _ in range(rounds):
        times["plain"].append(plain())
        times["plain_bn_frozen"].append(plain(bn_frozen=True))
        times["weight"].append(search("weight"))
        times["channel"].append(search("channel"))
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    res = {"images": n, "batch": batch, "threads": THREADS, "best_s": best, "median_s": med, "all_s": times,
           "ratio_weight": best["weight"] / best["plain"],
           "ratio_channel": best["channel"] / best["plain"],
           "ratio_weight_median": med["weight"] / med["plain"],
           "ratio_channel_median": med["channel"] / med["plain"],
           "ratio_weight_vs_bn_frozen": best["weight"] / best["plain_bn_frozen"],
           "ratio_channel_vs_bn_frozen": best["channel"] / best["plain_bn_frozen"]}  # fmt: skip
    print(f"search epoch resnet8-w16, {n} images: plain {best['plain']:.2f} s "
          f"(BN frozen {best['plain_bn_frozen']:.2f} s), weight-mask search "
          f"{best['weight']:.2f} s ({res['ratio_weight']:.2f}×), channel-mask search {best['channel']:.2f} s "
          f"({res['ratio_channel']:.2f}×) (best of {rounds}; target ≤ 1.5×)")  # fmt: skip
    return res


def saved(original_dir: str, reengineered_dirs: list[str], rounds: int) -> dict:
    """The ``safereuse reengineer`` artifacts timed again against their original, round-robin (a
    quiet re-measure of what the run's own ``--json`` latencies measured, perhaps under load), with
    the original's one-channel-per-conv floor in the same rounds."""
    original = load_model(original_dir).model.eval()
    spec = original.input_spec
    x = torch.rand(1, spec.channels, *spec.size)
    models = {"original": original} | {d: load_model(d).model.eval() for d in reengineered_dirs}
    # the same original with one channel left per conv: the bound on any channel re-engineering
    models["floor: one channel per conv"] = materialize(original, channel_masks(original, 0.0, keep=1), x)
    lat = _alternate(models, x, rounds)
    res: dict = {"original": original_dir, "threads": THREADS, "rounds": rounds, "variants": {}}
    for name in models:
        best, dense = lat[name]["best"], lat["original"]["best"]
        res["variants"][name] = {
            "latency_ms": lat[name],
            "speedup": {b: dense[b] / best[b] for b in BATCHES},
            "speedup_median": {b: lat["original"]["median"][b] / lat[name]["median"][b] for b in BATCHES},
        }
        sp = res["variants"][name]["speedup"]
        print(f"{name:32s} b1 {best[1]:7.3f} ms ({sp[1]:.2f}×)  b64 {best[64]:8.2f} ms ({sp[64]:.2f}×)")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--inference-only", action="store_true", help="skip the search-epoch timing")
    ap.add_argument(
        "--saved", nargs="+", metavar="DIR",
        help="time reengineer artifacts instead: the original model's artifact, then the re-engineered ones",
    )  # fmt: skip
    args = ap.parse_args()
    if args.saved:
        figures = {"saved": saved(args.saved[0], args.saved[1:], args.rounds), "loadavg": os.getloadavg()}
        write("seam_saved", figures)
        return
    load_before = os.getloadavg()
    threads = torch.get_num_threads()
    figures = {
        "inference": {key: inference(key, args.rounds) for key in MODELS},
        "search_epoch": None if args.inference_only else search_epoch_cost(args.rounds),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    print(
        f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)"
    )
    torch.set_num_threads(threads)  # the machine record states the process default, not the last run's
    write("seam_inference" if args.inference_only else "seam", figures)


if __name__ == "__main__":
    main()

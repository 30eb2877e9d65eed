"""NNSlicer's applications on a trained model: detection, pruning, protection (timings + efficacy).

Usage::

    python benchmarks/bench_nnslicer_apps.py MODEL_DIR [--n-train 2000] [--n-test 200]
        [--out benchmarks/results/nnslicer_apps.json]

Writes one JSON with the machine's load average beside every timing (the CPU is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--targets", default="1,3")
    ap.add_argument("--out", default="benchmarks/results/nnslicer_apps.json")
    ap.add_argument("--parts", default="detect,prune,protect")
    a = ap.parse_args()
    torch.set_num_threads(2)
    from safereuse.applications.attacks import PAPER_ATTACKS
    from safereuse.applications.detect import SliceDetector
    from safereuse.applications.protect import Protection
    from safereuse.applications.prune import prune_curve
    from safereuse.applications.tasks import evaluate_detection, label_ids, load_task

    art, bundle = load_task(a.model)
    out: dict = {"model": a.model, "model_hash": art.hash, "data": bundle.spec.to_dict(),
                 "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count()}  # fmt: skip
    path = Path(a.out)

    def save() -> None:
        path.write_text(json.dumps(out, indent=2, default=str) + "\n")

    parts = a.parts.split(",")
    if "detect" in parts:
        # per-input detection latency at batch 256 (vectors + tree), per detector
        lat = {}
        for name in ("nnslicer", "featuremap", "effectivepath"):
            det = SliceDetector(name).fit(art.model, bundle.train.x[:500], progress=False)
            x = bundle.test.x[:256]
            t0 = time.perf_counter()
            det.detect(art.model, x)
            lat[name] = {"ms_per_input_batch256": 1000 * (time.perf_counter() - t0) / len(x),
                         "fit_500": det.info, "load_avg": os.getloadavg()[0]}  # fmt: skip
        out["latency"] = lat
        save()
        keep = {"fgsm-8", "pgd-8", "deepfool-l2", "deepfool-linf", "cw-l2", "penultimate", "gaussian-noise",
                "spatial"}  # fmt: skip
        t0 = time.perf_counter()
        out["detection"] = evaluate_detection(
            art.model, bundle, attacks=[p for p in PAPER_ATTACKS if p[0] in keep], n_train=a.n_train,
            n_test=a.n_test, progress=False,
        )  # fmt: skip
        out["detection_seconds"] = time.perf_counter() - t0
        out["detection_load_avg"] = os.getloadavg()[0]
        save()
    targets = label_ids(bundle, [int(c) for c in a.targets.split(",")])
    if "prune" in parts:
        t0 = time.perf_counter()
        out["prune"] = prune_curve(
            art.model, bundle, targets, criteria=["nnslicer", "weight", "channel", "effectivepath"],
            ratios=[0.3, 0.5, 0.7, 0.9], finetune_epochs=1, base={"per_class": 200, "finetune_size": 1000},
        )  # fmt: skip
        out["prune_seconds"] = time.perf_counter() - t0
        save()
    if "protect" in parts:
        rows = []
        for crit in ("nnslicer", "weight", "random", "effectivepath"):
            p = Protection(crit, hide=0.5, per_class=200, attack_size=2000, attack_epochs=1)
            res = p.protect(art.model, bundle, targets)
            p.attack(res, bundle)
            rows.append(res.metrics)
            out["protect"] = rows
            save()


if __name__ == "__main__":
    main()

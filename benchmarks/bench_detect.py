"""The default detector's cost (issue 22, item 5): building it from 10,000 benign inputs (target
≤ 5 min on this 2-core machine) and screening (target ≤ 5 ms per input), each beside a baseline
measured in the same run: one forward pass of the model over the same inputs.

Run: ``.venv/bin/python benchmarks/bench_detect.py [MODEL_DIR] [--n 10000] [--detector slice-knn]``
(without a model: the study's teacher, resnet8 w16 on all ten Fashion-MNIST classes, 12,000 images,
4 epochs, trained into ``runs/bench-detect-teacher`` once); writes
``benchmarks/results/detect_cost_<detector>.json``. Screening is timed at batch 256 (the detector's own
batch) and at batch 1, with ``torch.utils.benchmark`` (median of repeated runs).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from _common import write
from torch.utils import benchmark

from safereuse import api
from safereuse.api._common import as_artifact, load_task
from safereuse.applications.detect import make_detector
from safereuse.data import DataSpec
from safereuse.train import predict_labels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("model", nargs="?", default=None)
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--detector", default="slice-knn")
    a = p.parse_args()
    if a.model is None:
        a.model = "runs/bench-detect-teacher"
        if not Path(a.model, "manifest.json").exists():
            data = DataSpec("fashion-mnist", train_size=12000)
            fit = {"epochs": 4}
            api.train_teacher(
                "resnet8", data, out=a.model, arch_kwargs={"width": 16}, fit_params=fit, progress=False
            )
    art, bundle = load_task(as_artifact(a.model), None)
    model = art.model.eval()
    x = bundle.train.x[: a.n]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    predict_labels(model, x)
    forward_s = time.perf_counter() - t0
    det = make_detector(a.detector)
    t0 = time.perf_counter()
    det.fit(model, x, labels=bundle.train.y[: a.n], progress=False)
    fit_s = time.perf_counter() - t0
    xt = bundle.test.x[:256]
    screen = benchmark.Timer("det.detect(model, xt)", globals={"det": det, "model": model, "xt": xt})
    plain = benchmark.Timer("predict_labels(model, xt)", globals={"predict_labels": predict_labels,
                                                                  "model": model, "xt": xt})  # fmt: skip
    one = benchmark.Timer("det.detect(model, xt[:1])", globals={"det": det, "model": model, "xt": xt})
    s256, f256, s1 = (
        screen.blocked_autorange(min_run_time=3),
        plain.blocked_autorange(min_run_time=3),
        one.blocked_autorange(min_run_time=3),
    )
    out = {
        "model": a.model,
        "detector": det.config(),
        "n_fit": a.n,
        "fit_seconds": fit_s,
        "fit_target_seconds": 300,
        "forward_seconds_same_inputs": forward_s,
        "fit_over_forward": fit_s / forward_s,
        "screen_ms_per_input_batch256": 1000 * s256.median / len(xt),
        "forward_ms_per_input_batch256": 1000 * f256.median / len(xt),
        "screen_over_forward_batch256": s256.median / f256.median,
        "screen_ms_batch1": 1000 * s1.median,
        "screen_target_ms": 5,
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
        "torch_threads": torch.get_num_threads(),
    }
    print({k: v for k, v in out.items() if "seconds" in k or "ms" in k or "over" in k})
    write(f"detect_cost_{a.detector}", out)


if __name__ == "__main__":
    main()

"""Foundation benchmarks.

1. Training-loop overhead: ``safereuse.train.fit`` against a bare PyTorch loop on the same model,
   the same batches and the same optimiser, measured in the same run (alternating, best of rounds).
2. The default teacher (resnet8, width 16, Fashion-MNIST classes 0-4, 6 epochs): wall time and
   test accuracy — target ≥ 90 % within 5 minutes on 2 CPU cores.

Run: ``.venv/bin/python benchmarks/bench_foundation.py [--skip-teacher]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import write  # noqa: I001  (script-local module)

from safereuse import api
from safereuse.data import DataSpec, load_data
from safereuse.models import create_model
from safereuse.train import FitConfig, fit


def bare_loop(model, x, y, epochs: int, batch: int, lr: float, seed: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(seed)
    n = len(y)
    model.train()
    t = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - t


def overhead(n_train: int = 6000, epochs: int = 2, rounds: int = 3) -> dict:
    data = load_data("fashion-mnist", classes=[0, 1, 2, 3, 4], train_size=n_train, val_fraction=0.0)
    x, y = data.train.x, data.train.y
    cfg = FitConfig(epochs=epochs, batch_size=128, lr=0.05, schedule="constant", progress=False, seed=0)
    bare_t, fit_t = [], []
    for _ in range(rounds):
        torch.manual_seed(0)
        m = create_model("resnet8", num_classes=5, width=16)
        bare_t.append(bare_loop(m, x, y, epochs, 128, 0.05, 0))
        torch.manual_seed(0)
        m = create_model("resnet8", num_classes=5, width=16)
        r = fit(m, data.train, None, cfg)
        fit_t.append(r.seconds)
    b, f = min(bare_t), min(fit_t)
    res = {
        "images": len(y),
        "epochs": epochs,
        "bare_s": b,
        "fit_s": f,
        "ratio": f / b,
        "bare_all": bare_t,
        "fit_all": fit_t,
    }
    print(
        f"loop overhead: bare {b:.2f}s, fit {f:.2f}s, ratio {f / b:.3f} ({len(y)} images x {epochs} epochs)"
    )
    return res


def default_teacher() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        man = api.train_teacher(out=Path(tmp) / "t", progress=False)
        secs = time.perf_counter() - t
    acc = man["metrics"]["test_acc"]
    print(f"default teacher: {secs:.1f}s wall, test acc {100 * acc:.2f}% (n={man['metrics']['n_test']})")
    return {
        "arch": man["arch"],
        "arch_kwargs": man["arch_kwargs"],
        "data": man["data"],
        "fit": man["method"]["config"],
        "seconds": secs,
        "test_acc": acc,
        "n_test": man["metrics"]["n_test"],
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-teacher", action="store_true")
    args = ap.parse_args()
    out = {"overhead": overhead()}
    if not args.skip_teacher:
        out["default_teacher"] = default_teacher()
    _ = DataSpec  # re-exported for users copying this script
    write("foundation", out)

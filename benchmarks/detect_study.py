"""Adversarial-input detection from slices: why the paper's detector fails, and the detector we ship
(issue 22). Three parts, each writing ``benchmarks/results/detect_<part>.json``::

    python benchmarks/detect_study.py select MODEL_DIR [MODEL_DIR ...]   # validation only
    python benchmarks/detect_study.py claim  MODEL_DIR [MODEL_DIR ...]   # the paper's detector
    python benchmarks/detect_study.py goal   MODEL_DIR [MODEL_DIR ...]   # every detector, test split

``select`` chooses the default detector's settings on **validation data only**: each model's benign
validation split and attacks crafted on its correctly classified validation images; the detectors learn
from 10,000 benign training images. ``claim`` decides why NNSlicer's detector fails (three experiments:
(a) criterion swap, (b) θ × feature variants, (c) the true label as the criterion). ``goal`` scores every
default detector on the test split. ``claim`` and ``goal`` run seeds 0, 1, 2 per model: seed ``s`` draws
the 10,000 benign training images from the training split and the 500 benign test images (the
adversarial sources) from the test split with ``s``. Adversarial sets are cached under
``runs/detect-study/<model>/`` (safetensors), so a rerun skips crafting.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import write
from safetensors.torch import load_file, save_file

from safereuse.api._common import as_artifact, load_task
from safereuse.applications.detect import (
    PAPER_ATTACKS,
    SLOW_ATTACKS,
    Detection,
    SliceDetector,
    detection_metrics,
    make_detector,
    successful_adversarial,
)
from safereuse.applications.evaluation import DEFAULT_DETECTORS
from safereuse.applications.evaluation import balanced as balanced_sets
from safereuse.applications.features import body_vector
from safereuse.applications.synapses import weighted_layers
from safereuse.applications.tree import TreeArrays
from safereuse.defects.modality import make_attack
from safereuse.metrics import seed_interval
from safereuse.metrics.intervals import student_t_quantile
from safereuse.models.capture import capture
from safereuse.slicing import Slicer
from safereuse.train import predict_labels
from safereuse.utils import analysis_mode

CACHE = Path("runs/detect-study")
#: validation attacks for ``select`` (the fast ones of the zoo)
SELECT_ATTACKS = [
    a for a in PAPER_ATTACKS if a[0] in ("fgsm-4", "fgsm-8", "pgd-8", "penultimate", "gaussian-noise")
]
#: sources per validation attack in ``select`` (ART's spatial attack is left out: about 1 s per image here)
SELECT_SOURCES = 300
#: the zoo of ``goal``: every attack but boundary (about 30 s per image here) and pixel (no success)
GOAL_ATTACKS = [a for a in PAPER_ATTACKS if a[0] not in ("boundary", "pixel")]
SLOW_SOURCES = 40
#: sources of the other zoo attacks in ``goal`` (FGSM 8/255, the headline, uses all of them)
ZOO_SOURCES = 150


def load(path: str) -> tuple[Any, Any]:
    art, bundle = load_task(as_artifact(path), None)
    return art.model.eval(), bundle


def adversarial(
    model: Any,
    tag: str,
    x: torch.Tensor,
    y: torch.Tensor,
    point: tuple[str, str, dict[str, Any]],
    seed: int,
    cap: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Successful adversarial examples crafted from the correctly classified images of ``x`` (cached;
    the slow attacks from the first :data:`SLOW_SOURCES`, the others from the first ``cap``)."""
    label, name, params = point
    path = CACHE / tag / f"{label}.safetensors"
    if path.exists():
        t = load_file(str(path))
        return t["x"], t["y"]
    t0 = time.perf_counter()
    limit = SLOW_SOURCES if name in SLOW_ATTACKS else cap
    xa, ya, n = successful_adversarial(make_attack(name, params, model), model, x, y, limit=limit, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"x": xa.contiguous(), "y": ya.contiguous()}, str(path))
    print(f"  crafted {label}: {len(xa)}/{n} in {time.perf_counter() - t0:.0f} s", flush=True)
    return xa, ya


def seed_split(bundle: Any, seed: int, n_fit: int = 10000, n_test: int = 500) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    fit = torch.randperm(len(bundle.train.x), generator=g)[:n_fit]
    test = torch.randperm(len(bundle.test.x), generator=g)[:n_test]
    return {"x_fit": bundle.train.x[fit], "y_fit": bundle.train.y[fit],
            "x_test": bundle.test.x[test], "y_test": bundle.test.y[test]}  # fmt: skip


def compact(m: dict[str, Any]) -> dict[str, Any]:
    keys = ("tp", "fp", "fn", "tn", "n_adversarial", "n_benign", "f1", "auc")
    return {"recall": m["recall"], "precision": m["precision"], **{k: m[k] for k in keys}}


def balanced(benign: Detection, adv: Detection, seed: int) -> dict[str, Any]:
    """Metrics on balanced sets (:func:`safereuse.applications.evaluation.balanced`)."""
    return compact(detection_metrics(*balanced_sets(benign, adv, seed), n_boot=200, seed=seed))


def t_interval(values: list[float]) -> dict[str, Any]:
    v = [x for x in values if x is not None and not math.isnan(x)]
    if not v:
        return {"mean": None, "ci": [None, None], "n": 0}
    m = float(np.mean(v))
    if len(v) < 2:
        return {"mean": m, "ci": [None, None], "n": 1}
    h = student_t_quantile(0.975, len(v) - 1) * float(np.std(v, ddof=1)) / math.sqrt(len(v))
    return {"mean": m, "ci": [m - h, m + h], "n": len(v)}


def across(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Across seeds (and models): recall and precision by :func:`seed_interval` on the per-seed counts
    (covers seed variation and each seed's binomial error), F1 and AUC by a t-interval."""
    rec = seed_interval([(r["tp"], r["tp"] + r["fn"]) for r in rows])
    prec = seed_interval([(r["tp"], r["tp"] + r["fp"]) for r in rows])
    return {"recall": rec.to_dict(), "precision": prec.to_dict(),
            "f1": t_interval([r["f1"] for r in rows]), "auc": t_interval([r["auc"] for r in rows]),
            "seeds": len(rows)}  # fmt: skip


# -- select ----------------------------------------------------------------------------------------
def part_select(models: list[str]) -> None:
    """Stage A fits the detector for θ × (true labels / the model's classes) at k = 25, 128 components;
    stage B varies k and the number of components on each stage-A fit (the first d components of the
    128 are the d-component projection; calibration scores recomputed), so the slices are computed
    once per θ. Every score is on validation data; the threshold is each fit's own calibration."""
    fprs = (0.05, 0.1, 0.2, 0.3)
    out: dict[str, Any] = {"attacks": [a[0] for a in SELECT_ATTACKS], "fprs": list(fprs), "runs": []}
    rows: dict[str, list[dict[str, Any]]] = {}
    for path in models:
        model, bundle = load(path)
        name = Path(path).name
        x_fit, y_fit = bundle.train.x[:10000], bundle.train.y[:10000]
        attacks = {
            p[0]: adversarial(model, f"{name}/val", bundle.val.x, bundle.val.y, p, 0, SELECT_SOURCES)[0]
            for p in SELECT_ATTACKS
        }
        for theta in (0.0, 0.3):
            for labels in ("true", "model"):
                det = make_detector("slice-knn", {"theta": theta, "k": 25, "dims": 128})
                t0 = time.perf_counter()
                det.fit(model, x_fit, labels=y_fit if labels == "true" else None, progress=False)
                fit_s = time.perf_counter() - t0
                order = torch.randperm(len(x_fit), generator=torch.Generator().manual_seed(det.seed))
                x_cal = x_fit[order[: det.info["n_calibration"]]]
                y_cal = predict_labels(model, x_cal)
                basis, bank = det.basis.clone(), det.bank.clone()
                sets = {"benign": bundle.val.x, **attacks}
                z_val = {key: det._project(model, xs) for key, xs in sets.items()}
                z_cal = det._project(model, x_cal)
                y_val = {key: predict_labels(model, xs) for key, xs in sets.items()}
                for k in (10, 25, 50):
                    for dims in (32, 64, 128):
                        det.k, det.basis, det.bank = k, basis[:, :dims], bank[:, :dims]

                        def scores(
                            z: torch.Tensor, y: torch.Tensor, d: int = dims, det: Any = det
                        ) -> torch.Tensor:
                            # det.score re-slices; the projections are reused here (same arithmetic)
                            dist, idx = torch.cdist(z[:, :d], det.bank).topk(det.k, dim=1, largest=False)
                            m = dist.mean(1)
                            return (det.labels[idx] != y[:, None]).float().sum(1) + m / (1 + m)

                        det.calibration_scores = scores(z_cal, y_cal).double()
                        s_val = {key: scores(z_val[key], y_val[key]) for key in z_val}
                        cfg = f"theta={theta} labels={labels} k={k} dims={dims}"
                        for fpr in fprs:
                            det.retarget(fpr)
                            benign = Detection(s_val["benign"] > det.threshold, s_val["benign"],
                                               y_val["benign"], y_val["benign"])  # fmt: skip
                            for a in attacks:
                                adv = Detection(s_val[a] > det.threshold, s_val[a], y_val[a], y_val[a])
                                m = balanced(benign, adv, 0)
                                rows.setdefault(cfg, []).append({"model": name, "fpr": fpr, "attack": a,
                                                                 **m, "fit_s": fit_s})  # fmt: skip
                print(f"{name} theta={theta} labels={labels}: fitted in {fit_s:.0f} s", flush=True)
        write("detect_select", {**out, "rows": rows})
    for cfg, rs in rows.items():
        by_fpr = {fpr: float(np.mean([r["f1"] for r in rs if r["fpr"] == fpr])) for fpr in fprs}
        best = max(by_fpr, key=by_fpr.get)
        out["runs"].append(
            {"config": cfg, "mean_f1_by_fpr": by_fpr, "best_fpr": best, "best_f1": by_fpr[best]}
        )
    out["runs"].sort(key=lambda r: -r["best_f1"])
    out["chosen"] = out["runs"][0]
    for r in out["runs"][:8]:
        print(r["config"], r["mean_f1_by_fpr"])
    print("chosen:", out["chosen"])
    write("detect_select", {**out, "rows": rows})


# -- claim -----------------------------------------------------------------------------------------
def layer_deltas(model: Any, x: torch.Tensor, ref: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
                 ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:  # fmt: skip
    """Per weighted layer the channel-mean input and output ``[N, C]`` (minus ``ref``'s means), and the
    logits (minus ``ref``'s under the key ``""``): the Δx and Δy the slicer reads."""
    layers = weighted_layers(model, include_head=True)
    red = lambda t: t.flatten(2).mean(2) if t.dim() > 2 else t  # noqa: E731
    ins: dict[str, list[torch.Tensor]] = {n: [] for n, _ in layers}
    outs: dict[str, list[torch.Tensor]] = {n: [] for n, _ in layers}
    logits = []
    with analysis_mode(model), capture(model, layers, inputs=True, reduce=red) as cap:
        for i in range(0, len(x), 512):
            cap.clear()
            logits.append(model(x[i : i + 512]).float())
            for n, _ in layers:
                ins[n].append(cap.inputs(n)[0].float())
                outs[n].append(cap.outputs(n)[0].float())
    d = {n: (torch.cat(ins[n]), torch.cat(outs[n])) for n, _ in layers}
    lg = torch.cat(logits)
    if ref is None:
        return d, lg
    return {n: (a - ref[n][0].mean(0), b - ref[n][1].mean(0)) for n, (a, b) in d.items()}, lg - ref[""][
        0
    ].mean(0)


def variant_vectors(
    model: Any, slicer: Slicer, x: torch.Tensor, crit: Any, ref: Any
) -> dict[str, torch.Tensor]:
    """The three feature variants of experiment (b), output layer left out as in the paper's detector:
    ``signed`` (the synapse entries), ``template-removed`` (``S ⊙ C_k`` = ``[S ≠ 0] · sign(Δy_k) ·
    sign(Δx_i)``) and ``real`` (``CONTRIB_o · Δy_o · w_oi Δx_i`` on the slice's synapses)."""
    r = slicer.slice(model, x, criterion=crit, per_input=True)
    deltas, dlog = layer_deltas(model, x, ref)
    k = crit if isinstance(crit, torch.Tensor) else dlog.argmax(1)
    syk = torch.sign(dlog.gather(1, k.view(-1, 1)))  # [N, 1]
    mods = dict(weighted_layers(model, include_head=True))
    signed, tmpl, real = [], [], []
    for name in r.layers[:-1]:
        s = r.synapse[name].float()  # [N, O, I]
        dx, dy = deltas[name]
        w = mods[name].weight.detach().float()
        w = w.flatten(2).sum(2) if w.dim() > 2 else w
        on = (s != 0).float()
        signed.append(s.flatten(1))
        tmpl.append((on * syk[:, :, None] * torch.sign(dx)[:, None, :]).flatten(1))
        g = r.neuron[name].float()  # CONTRIB_o
        real.append((on * (g * dy)[:, :, None] * w[None] * dx[:, None, :]).flatten(1))
    return {
        "signed": torch.cat(signed, 1),
        "template-removed": torch.cat(tmpl, 1),
        "real": torch.cat(real, 1),
    }


def tree_detection(tree: TreeArrays, v: torch.Tensor, model_class: torch.Tensor) -> Detection:
    return Detection.decide(tree.predict_proba(v), model_class)


def part_claim(models: list[str], seeds: list[int], n_fit: int, n_fit_b: int, b_seeds: list[int],
               resume: bool = False) -> None:  # fmt: skip
    out: dict[str, Any] = {"n_fit": n_fit, "n_fit_b": n_fit_b, "a": [], "b": [], "c": []}
    done_path = Path(__file__).resolve().parent / "results" / "detect_claim.json"
    if resume and done_path.exists():
        old = json.loads(done_path.read_text())
        out.update({k: old[k] for k in ("a", "b", "c")})
    for path in models:
        model, bundle = load(path)
        name = Path(path).name
        for seed in seeds:
            if any(r["model"] == name and r["seed"] == seed for r in out["c"]) and (
                seed not in b_seeds or any(r["model"] == name and r["seed"] == seed for r in out["b"])
            ):
                continue  # done in an earlier run (resume)
            out = {k: ([r for r in v if not (r["model"] == name and r["seed"] == seed)] if isinstance(v, list)
                       else v) for k, v in out.items()}  # fmt: skip
            sp = seed_split(bundle, seed, n_fit=n_fit)
            y_fit_model = predict_labels(model, sp["x_fit"])
            pred_test = predict_labels(model, sp["x_test"])
            fgsm = next(a for a in PAPER_ATTACKS if a[0] == "fgsm-8")
            xa, ya = adversarial(model, f"{name}/test-s{seed}", sp["x_test"], sp["y_test"], fgsm, seed)
            pred_adv = predict_labels(model, xa)
            g = torch.Generator().manual_seed(seed)
            wrong_class = (pred_test + torch.randint(1, 10, (len(pred_test),), generator=g)) % 10
            for theta in (0.0, 0.3):
                # (a) criterion swap: the paper's tree (fitted as published) on benign test inputs
                #     sliced under a random wrong class
                det = SliceDetector({"name": "nnslicer", "theta": theta}, seed=seed)
                det.fit(model, sp["x_fit"], progress=False)
                s = Slicer(theta=theta)
                s.means = det._features.means
                v = body_vector(s.slice(model, sp["x_test"], criterion=wrong_class, per_input=True))
                hit = int((det.tree.predict(v) == wrong_class).sum())
                row = {
                    "model": name,
                    "seed": seed,
                    "theta": theta,
                    "k": hit,
                    "n": len(v),
                    "benign_disagreement": float(det.detect(model, sp["x_test"]).flags.float().mean()),
                }
                out["a"].append(row)
                print("(a)", row, flush=True)
                # (c) the true label as the criterion at test time (tree as published)
                vb = body_vector(s.slice(model, sp["x_test"], criterion=sp["y_test"], per_input=True))
                va = body_vector(s.slice(model, xa, criterion=ya, per_input=True))
                db, da = tree_detection(det.tree, vb, pred_test), tree_detection(det.tree, va, pred_adv)
                wrong = pred_test != sp["y_test"]
                m = compact(detection_metrics(db, da, n_boot=200, seed=seed))
                row = {
                    "model": name,
                    "seed": seed,
                    "theta": theta,
                    **m,
                    "benign_wrong_flagged": [int(db.flags[wrong].sum()), int(wrong.sum())],
                    "benign_right_flagged": [int(db.flags[~wrong].sum()), int((~wrong).sum())],
                }
                out["c"].append(row)
                shown = ("model", "seed", "theta", "recall", "precision", "benign_wrong_flagged")
                print("(c)", {k: row[k] for k in shown}, flush=True)
            if seed not in b_seeds:
                write("detect_claim", out)
                continue
            # (b) θ × features, the paper's detector rule on each variant (n_fit_b training inputs)
            x_b = sp["x_fit"][:n_fit_b]
            ref, ref_log = layer_deltas(model, sp["x_fit"])
            ref[""] = (ref_log, ref_log)
            for theta in (0.0, 0.3, 0.6, 0.9):
                s = Slicer(theta=theta).profile(model, sp["x_fit"])
                vf = variant_vectors(model, s, x_b, "predicted", ref)
                vb = variant_vectors(model, s, sp["x_test"], "predicted", ref)
                va = variant_vectors(model, s, xa, "predicted", ref)
                for feat in vf:
                    tree = TreeArrays.fit(vf[feat], y_fit_model[:n_fit_b], 10, seed=seed)
                    db = tree_detection(tree, vb[feat], pred_test)
                    da = tree_detection(tree, va[feat], pred_adv)
                    row = {"model": name, "seed": seed, "theta": theta, "features": feat,
                           **balanced(db, da, seed)}  # fmt: skip
                    out["b"].append(row)
                    print(
                        "(b)",
                        {k: row[k] for k in ("model", "seed", "theta", "features", "f1", "auc")},
                        f"R {row['recall']['value']:.1f} P {row['precision']['value']:.1f}",
                        flush=True,
                    )
            write("detect_claim", out)
    write("detect_claim", out)


# -- goal ------------------------------------------------------------------------------------------
def part_goal(
    models: list[str], seeds: list[int], detectors: list[str], params: dict[str, Any], tag: str = ""
) -> None:
    out: dict[str, Any] = {"detectors": detectors, "params": params, "attacks": [a[0] for a in GOAL_ATTACKS],
                           "slow_sources": SLOW_SOURCES, "rows": [], "fits": []}  # fmt: skip
    for path in models:
        model, bundle = load(path)
        name = Path(path).name
        for seed in seeds:
            sp = seed_split(bundle, seed)
            dets = {}
            for dn in detectors:
                det = make_detector(dn, {**params.get(dn, {}), "seed": seed})
                t0 = time.perf_counter()
                det.fit(model, sp["x_fit"], labels=sp["y_fit"], progress=False)
                fit_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                benign = det.detect(model, sp["x_test"])
                per = (time.perf_counter() - t0) / len(sp["x_test"])
                dets[dn] = (det, benign)
                out["fits"].append({"model": name, "seed": seed, "detector": dn, "fit_s": fit_s,
                                    "ms_per_input": 1000 * per, "trained_on": det.trained_on,
                                    "benign_flag_rate": float(benign.flags.float().mean())})  # fmt: skip
                print(out["fits"][-1], flush=True)
            for point in GOAL_ATTACKS:
                cap = None if point[0] == "fgsm-8" else SLOW_SOURCES if point[0] == "spatial" else ZOO_SOURCES
                xa, _ = adversarial(
                    model, f"{name}/test-s{seed}", sp["x_test"], sp["y_test"], point, seed, cap
                )
                if len(xa) == 0:
                    continue
                for dn, (det, benign) in dets.items():
                    row = {"model": name, "seed": seed, "attack": point[0], "detector": dn,
                           **balanced(benign, det.detect(model, xa), seed)}  # fmt: skip
                    out["rows"].append(row)
            write(f"detect_goal{tag}", out)
    summary: dict[str, Any] = {}
    for dn in detectors:
        for atk in ["fgsm-8", *[a[0] for a in GOAL_ATTACKS]]:
            rows = [r for r in out["rows"] if r["detector"] == dn and r["attack"] == atk]
            if rows:
                summary.setdefault(dn, {})[atk] = across(rows)
        per_seed = {}
        for r in out["rows"]:
            if r["detector"] == dn:
                per_seed.setdefault((r["model"], r["seed"]), []).append(r)
        means = [{k: float(np.mean([r[k] for r in rs if r[k] is not None])) for k in ("f1", "auc")}
                 | {"recall": float(np.mean([r["recall"]["value"] for rs_ in [rs] for r in rs_])),
                    "precision": float(np.mean([r["precision"]["value"] for r in rs]))}
                 for rs in per_seed.values()]  # fmt: skip
        summary.setdefault(dn, {})["zoo-mean"] = {k: t_interval([m[k] for m in means])
                                                  for k in ("recall", "precision", "f1", "auc")}  # fmt: skip
    out["summary"] = summary
    write(f"detect_goal{tag}", out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["select", "claim", "goal"])
    p.add_argument("models", nargs="+")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--n-fit", type=int, default=10000, help="benign training inputs per seed")
    p.add_argument("--n-fit-b", type=int, default=4000, help="training inputs of experiment (b)'s trees")
    p.add_argument("--b-seeds", default="0,1,2", help="seeds that run experiment (b) (the costly one)")
    p.add_argument("--resume", action="store_true", help="keep the claim rows already written")
    p.add_argument("--detectors", default=",".join(DEFAULT_DETECTORS))
    p.add_argument("--tag", default="", help="suffix of the goal part's result file")
    a = p.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    if a.part == "select":
        part_select(a.models)
    elif a.part == "claim":
        part_claim(a.models, seeds, a.n_fit, a.n_fit_b, [int(x) for x in a.b_seeds.split(",")], a.resume)
    else:
        part_goal(a.models, seeds, a.detectors.split(","), {}, a.tag)


if __name__ == "__main__":
    sys.exit(main())

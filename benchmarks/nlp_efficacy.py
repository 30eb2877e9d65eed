"""Reduced NLP backdoor efficacy (issue 15), public API only; one JSON line per teacher / cell.

Poisoned MiniLM teachers (word-trigger data poisoning, ripple weight poisoning; poison rate 0.2)
fine-tuned on 400 movie-review sentences (3 epochs); students by finetune / remos (then mag-prune)
on 64 sentences of the same domain (movie → movie) or another (movie → amazon); each audited for
its teacher's backdoor (DIR = label-flip rate, ASR = Kurita's LFR over all non-target sentences).
Sized for an oversubscribed 2-core CPU: token ids cut to 32 (re-closed with [SEP]) and 200 test sentences.

    .venv/bin/python benchmarks/nlp_efficacy.py benchmarks/results/nlp_efficacy.jsonl
    .venv/bin/python benchmarks/nlp_efficacy_table.py benchmarks/results/nlp_efficacy.jsonl
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace

import torch

from safereuse.data import load_data
from safereuse.data.core import Split
from safereuse.defects import DEFECTS, audit
from safereuse.methods import METHODS
from safereuse.models import create_model
from safereuse.train import FitConfig

torch.set_num_threads(1)  # the machine is oversubscribed: one thread wastes less
T_TRAIN, S_TRAIN, N_AUDIT, MAXLEN, N_TEST = 400, 64, 150, 32, 200
FIT = dict(optimizer="adam", lr=1e-4, batch_size=32, progress=False, device="cpu", label_smoothing=0.0)
MFIT = dict(epochs=3, optimizer="adam", lr=1e-4, batch_size=16, label_smoothing=0.0, weight_decay=0.0)
POISON_RATE = 0.2  # 0.5 (the spec's) on 360 sentences leaves a majority-class teacher (48.5 % clean acc)
METHOD_PARAMS = {"finetune": {}, "remos": {"ratio": 0.1}, "mag-prune": {"ratio": 0.3}}
SEP = 102  # [SEP] of the MiniLM vocabulary


def shrink(b):
    """Token ids cut to MAXLEN (truncated rows re-closed with [SEP]); test split cut to N_TEST
    evenly spaced sentences."""

    def cut(s, n=None):
        x = s.x[:, :MAXLEN].clone()
        x[(x[:, -1] != 0) & (x[:, -1] != SEP), -1] = SEP
        if n is not None and len(x) > n:
            idx = torch.arange(n) * len(x) // n
            return Split(x[idx], s.y[idx])
        return Split(x, s.y)

    return replace(b, train=cut(b.train), val=cut(b.val), test=cut(b.test, N_TEST))


def log(out, rec):
    with open(out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec), flush=True)


def main(out: str) -> None:
    tdata = shrink(load_data("movie-sentences", train_size=T_TRAIN, seed=0))
    teachers = {}
    for bd_name in ("word-trigger", "ripple"):
        t0 = time.time()
        torch.manual_seed(0)
        t = create_model("minilm", num_classes=2, pretrained=True)
        bd = DEFECTS.create(bd_name, seed=0, poison_rate=POISON_RATE)
        plant = bd.plant(t, tdata, FitConfig(epochs=3, seed=0, **FIT))
        teachers[bd_name] = (t.eval(), plant)
        rec = {k: v for k, v in plant.record.items() if k != "config"}
        log(out, {"teacher": bd_name, "seconds": round(time.time() - t0, 1), **rec})
    plan = (
        ("movie->movie", "movie-sentences", ("finetune", "remos")),
        ("movie->amazon", "amazon-sentences", ("finetune", "remos")),
        ("movie->movie", "movie-sentences", ("mag-prune",)),
    )
    for scen, sname, methods in plan:
        for seed in (0, 1, 2):
            sdata = shrink(load_data(sname, train_size=S_TRAIN, seed=seed))
            for bd_name, (t, plant) in teachers.items():
                for m in methods:
                    t0 = time.time()
                    meth = METHODS.create(m, **MFIT, **METHOD_PARAMS[m])
                    st = meth.transfer(t, sdata, seed=seed, device="cpu", progress=False)
                    t1 = time.time()
                    rep = audit(
                        t, st.model, sdata, [bd_name], teacher_data=tdata.spec, student_data=sdata.spec,
                        backdoor=plant, max_samples=N_AUDIT, batch_size=64, device="cpu",
                    )  # fmt: skip
                    r = rep.rows[0].rates
                    log(out, {
                        "scenario": scen, "backdoor": bd_name, "method": m, "seed": seed,
                        "acc_k": rep.acc.k, "acc_n": rep.acc.n, "dir_k": r["dir"].k, "dir_n": r["dir"].n,
                        "asr_k": r["asr"].k, "asr_n": r["asr"].n,
                        "train_s": round(t1 - t0, 1), "audit_s": round(time.time() - t1, 1),
                    })  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])

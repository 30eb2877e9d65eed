"""Selection on validation data: the holdout split, the ``select:`` section, the two-phase run."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

import pytest
import torch

import safereuse.data as data_mod
from safereuse.data import DataSpec, RawData, build_bundle
from safereuse.errors import SafeReuseError
from safereuse.runner import Ledger, expand, load_spec, run
from safereuse.runner.select import (
    SELECTION_JSON,
    SELECTION_MD,
    chosen_cells,
    select_tag,
    selection_cells,
    validation_table,
)

SPEC = """\
name: tiny-select
scenarios:
  - name: digits-a
    teacher: {arch: smallcnn, arch_kwargs: {width: 4, hidden: 16}, data: digits, classes: 0-4,
              epochs: 1, seed: 0}
    student: {data: digits, classes: 5-9, train_size: 5, per_class: true}
methods:
  - name: finetune
    params: {epochs: 1, lr: [0.01, 0.05]}
  - name: linear-probe
    params: {epochs: 1}
defects:
  - name: penultimate
    params: {steps: 2}
seeds: [0, 1]
audit: {max_samples: 40}
select:
  holdout: 60
  rule: min-dir-within
  defect: penultimate
  within: 3
"""


def spec_file(tmp_path: Path, text: str = SPEC, name: str = "spec.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


# -- the holdout split (data layer) --------------------------------------------------------------------
def _raw_with_ids(sizes: list[int], n_test: int = 12) -> RawData:
    """Every image is one constant value that names it: train i → i, test j → 10_000 + j."""
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    n = len(y)
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone()
    tx = (10_000 + torch.arange(n_test, dtype=torch.float32)).view(n_test, 1, 1, 1).expand(n_test, 1, 2, 2)
    ty = torch.arange(n_test) % len(sizes)
    return RawData(x, y, tx.clone(), ty, [f"c{i}" for i in range(len(sizes))])


def _ids(split) -> set[int]:
    return {int(v) for v in split.x[:, 0, 0, 0]}


def test_holdout_is_disjoint_stratified_and_seed_independent():
    raw = _raw_with_ids([40, 30, 20])
    holdouts = []
    for seed in (0, 1, 2):
        b = build_bundle(raw, DataSpec("syn", train_size=6, per_class=True, seed=seed, holdout=18))
        h, tr, va, te = _ids(b.holdout), _ids(b.train), _ids(b.val), _ids(b.test)
        assert len(h) == len(b.holdout) == 18
        assert not h & tr and not h & va and not h & te  # disjoint from every other split
        assert len(tr) + len(va) == 18  # train_size is still 6 per class, taken from what is left
        # stratified by largest remainder: 18 × 40/90, 18 × 30/90, 18 × 20/90
        assert torch.bincount(b.holdout.y, minlength=3).tolist() == [8, 6, 4]
        # labels travel with their images (class c holds ids of class c)
        assert all(
            int(raw.train_y[i]) == int(lbl)
            for i, lbl in zip(b.holdout.x[:, 0, 0, 0].long(), b.holdout.y, strict=True)
        )
        holdouts.append(h)
    assert holdouts[0] == holdouts[1] == holdouts[2]  # the same images for every seed
    # the view swaps in the holdout as the test split, nothing else
    v = b.holdout_view()
    assert v.test is b.holdout and v.train is b.train and v.val is b.val


def test_holdout_zero_changes_nothing():
    raw = _raw_with_ids([40, 30, 20])
    a = build_bundle(raw, DataSpec("syn", train_size=6, per_class=True, seed=3))
    b = build_bundle(raw, DataSpec("syn", train_size=6, per_class=True, seed=3, holdout=0))
    assert a.holdout is None and b.holdout is None
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.x, b.val.x)
    assert "holdout" not in DataSpec("syn").to_dict()  # so cell ids / teacher keys do not move
    assert DataSpec("syn", holdout=5).to_dict()["holdout"] == 5
    with pytest.raises(SafeReuseError, match="no holdout split"):
        a.holdout_view()
    # a spec without select: has no holdout anywhere in its grid (ids as before the feature)
    loaded = load_spec(text=SPEC.split("select:")[0])
    assert all("holdout" not in c.config["student"]["data"] for c in expand(loaded))


@pytest.mark.parametrize("bad", [-1, "5", 1.5, True, 88])
def test_bad_holdout(bad):
    with pytest.raises(SafeReuseError, match="holdout"):
        build_bundle(_raw_with_ids([40, 30, 20]), DataSpec("syn", holdout=bad))


# -- the rule on hand-made validation numbers ---------------------------------------------------------
THREE = SPEC.replace("lr: [0.01, 0.05]", "lr: [0.01, 0.05, 0.1]")


def _fake_rows(sel, numbers, test_acc=0.5):
    """Ledger rows for ``sel`` from ``numbers[label][seed] = (acc, dir)``; the student's test accuracy
    (which selection must not read) is ``test_acc``."""
    rows = []
    for c in sel:
        acc, dir_ = numbers[c.label][c.seed]
        metrics = {
            "student": {"test_acc": test_acc if not callable(test_acc) else test_acc(c)},
            "audit": {"acc": {"value": acc, "n": 60}, "rows": [{"defect": "penultimate", "dir": dir_}]},
        }
        rows.append({"id": c.id, "status": "done", "metrics": metrics})
    return rows


HAND = {  # label → seed → (validation acc %, validation DIR %)
    "finetune(lr=0.01)": {0: (80.0, 30.0), 1: (82.0, 34.0)},  # mean 81.0 / 32.0 (the best accuracy)
    "finetune(lr=0.05)": {0: (79.0, 10.0), 1: (78.0, 12.0)},  # 78.5 / 11.0: within 3 of 81, lowest DIR
    "finetune(lr=0.1)": {0: (70.0, 0.0), 1: (72.0, 0.0)},  # 71.0 / 0.0: lowest DIR but 10 points down
}


def test_rule_follows_hand_checked_numbers():
    loaded = load_spec(text=THREE)
    cells = expand(loaded)
    sel = selection_cells(loaded, cells)
    assert len(sel) == 3 * 2 and {c.method for c in sel} == {"finetune"}  # linear-probe has one point
    assert all(c.config["audit"]["split"] == "holdout" for c in sel)
    table = validation_table(loaded, sel, _fake_rows(sel, HAND))
    (g,) = table["groups"]
    assert g["chosen"] == "finetune(lr=0.05)"
    pts = {p["label"]: p for p in g["points"]}
    assert pts["finetune(lr=0.01)"]["acc"] == 81.0 and pts["finetune(lr=0.05)"]["dir"]["penultimate"] == 11.0
    assert pts["finetune(lr=0.1)"]["note"].startswith("acc 71.0 < 78.0")
    # a looser tolerance admits lr=0.1, which then wins on DIR
    loose = load_spec(text=THREE.replace("within: 3", "within: 10"))
    assert validation_table(loose, sel, _fake_rows(sel, HAND))["groups"][0]["chosen"] == "finetune(lr=0.1)"
    # max-acc ignores DIR
    maxacc = load_spec(
        text=THREE.replace("rule: min-dir-within\n  defect: penultimate\n  within: 3", "rule: max-acc")
    )
    assert validation_table(maxacc, sel, _fake_rows(sel, HAND))["groups"][0]["chosen"] == "finetune(lr=0.01)"
    # scope: all pools the scenarios too: one group per method (here the same single scenario)
    pooled = load_spec(text=THREE.replace("within: 3", "within: 3\n  scope: all"))
    (gp,) = validation_table(pooled, sel, _fake_rows(sel, HAND))["groups"]
    assert (gp["scenario"], gp["chosen"]) == ("*", "finetune(lr=0.05)")
    # phase 2: the chosen point under the method's name, plus the unswept method; every seed
    test = chosen_cells(loaded, cells, table)
    assert sorted((c.label, c.seed) for c in test) == [
        ("finetune", 0),
        ("finetune", 1),
        ("linear-probe", 0),
        ("linear-probe", 1),
    ]
    assert all(c.config["method"]["config"]["lr"] == 0.05 for c in test if c.method == "finetune")
    assert all("split" not in c.config["audit"] for c in test)


def test_rule_ties_and_incomplete_groups_and_test_accuracy_ignored():
    loaded = load_spec(text=THREE)
    cells = expand(loaded)
    sel = selection_cells(loaded, cells)
    tie = {lbl: {0: (80.0, 5.0), 1: (80.0, 5.0)} for lbl in HAND}
    tie["finetune(lr=0.1)"] = {0: (81.0, 5.0), 1: (81.0, 5.0)}
    assert validation_table(loaded, sel, _fake_rows(sel, tie))["groups"][0]["chosen"] == "finetune(lr=0.1)"
    same = {lbl: {0: (80.0, 5.0), 1: (80.0, 5.0)} for lbl in HAND}
    assert validation_table(loaded, sel, _fake_rows(sel, same))["groups"][0]["chosen"] == "finetune(lr=0.01)"
    # the students' test accuracy sits in the same rows; whatever it says, the table is the same
    a = validation_table(loaded, sel, _fake_rows(sel, HAND, test_acc=0.1))
    b = validation_table(
        loaded, sel, _fake_rows(sel, HAND, test_acc=lambda c: c.config["method"]["config"]["lr"])
    )
    assert a == b
    # a group with a missing cell is not decided, and phase 2 has no cell of it
    rows = _fake_rows(sel, HAND)
    rows[0]["status"] = "failed"
    t = validation_table(loaded, sel, rows)
    assert t["groups"][0]["chosen"] is None
    assert {c.method for c in chosen_cells(loaded, cells, t)} == {"linear-probe"}


# -- spec errors ---------------------------------------------------------------------------------------
BAD_SELECT = [
    ("  within: 3\n", "  within: 3\n  withn: 2\n", "line 22: select.withn", "unknown key"),
    ("holdout: 60", "holdout: 0", "line 18: select.holdout", "greater than or equal to 1"),
    ("rule: min-dir-within", "rule: lowest", "line 19: select.rule", "unknown selection rule 'lowest'"),
    ("defect: penultimate", "defect: badnets", "line 20: select.defect", "not a defect of this spec"),
    ("  defect: penultimate\n", "", "line 19: select.rule", "needs 'defect'"),
    ("rule: min-dir-within", "rule: max-acc", "line 20: select.defect", "has no parameter 'defect'"),
    ("  within: 3\n", "  within: 3\n  defects: [nc-guided]\n", "line 22: select.defects[0]", "not a defect"),
    ("  within: 3\n", "  within: 3\n  scope: world\n", "line 22: select.scope", "'scenario' or 'all'"),
    ("lr: [0.01, 0.05]", "lr: 0.01", "line 17: select", "nothing to select"),
]


@pytest.mark.parametrize("old,new,where,words", BAD_SELECT, ids=[b[3][:24] for b in BAD_SELECT])
def test_bad_select_names_key_and_line(tmp_path, old, new, where, words):
    assert old in SPEC
    p = spec_file(tmp_path, SPEC.replace(old, new))
    with pytest.raises(SafeReuseError) as ei:
        load_spec(p)
    msg = ei.value.one_line()
    assert f"{p} {where}" in msg and words in msg, msg


def test_bad_select_on_the_cli_is_one_line(tmp_path, capsys):
    from cli_helpers import assert_one_line_error
    from cli_helpers import run_cli as cli

    p = spec_file(tmp_path, SPEC.replace("rule: min-dir-within", "rule: lowest"))
    code, _, err = cli(capsys, "run", str(p), "--out", str(tmp_path / "r"), "-q")
    assert_one_line_error(code, err, "select.rule", "line 19", "min-dir-within")
    assert not (tmp_path / "r").exists()


# -- the two-phase run ---------------------------------------------------------------------------------
def _garbled_test_split(real):
    """A loader whose test split is noise with shifted labels: a selection that read it would change."""

    def load_raw(name, data_dir=None, max_len=None):
        raw = real(name, data_dir, max_len)
        gen = torch.Generator().manual_seed(7)
        x = torch.rand(raw.test_x.shape, generator=gen)
        y = (raw.test_y + 1) % len(raw.class_names)
        return RawData(raw.train_x, raw.train_y, x, y, raw.class_names, raw.source)

    return load_raw


def _by_hand(rows):
    """The rule applied by hand to the selection cells' ledger rows (audit ACC and DIR on the holdout)."""
    per: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        a = r["metrics"]["audit"]
        per.setdefault(r["label"], []).append((a["acc"]["value"], a["rows"][0]["dir"]))
    means = {
        lbl: (sum(v[0] for v in vs) / len(vs), sum(v[1] for v in vs) / len(vs)) for lbl, vs in per.items()
    }
    best = max(m[0] for m in means.values())
    ok = [lbl for lbl, m in means.items() if m[0] >= best - 3]
    return min(ok, key=lambda lbl: (means[lbl][1], -means[lbl][0], lbl)), means


@pytest.mark.slow
def test_selection_run_resume_and_test_split_never_read(tmp_path, monkeypatch):
    loaded = load_spec(spec_file(tmp_path))
    out = tmp_path / "run"
    s = run(loaded, out, jobs=1, progress=False)
    assert (
        s.failures == [] and s.total == 8 and s.ran == 8
    )  # 2 points × 2 seeds on the holdout + 4 test cells
    h = loaded.spec.spec_hash()
    with Ledger(out / "ledger.sqlite") as led:
        sel_rows, test_rows = led.rows(select_tag(h)), led.rows(h)
    assert len(sel_rows) == 4 and len(test_rows) == 4
    # phase 1 audited the 60 held-back images, phase 2 the test split
    assert {r["metrics"]["audit"]["n_samples"] for r in sel_rows} == {40}  # max_samples of the 60
    assert all(r["config"]["audit"]["split"] == "holdout" for r in sel_rows)
    assert all("split" not in r["config"]["audit"] for r in test_rows)

    sel = json.loads((out / SELECTION_JSON).read_text())
    chosen, means = _by_hand(sel_rows)
    (g,) = sel["groups"]
    assert g["chosen"] == chosen
    for p in g["points"]:
        assert p["acc"] == pytest.approx(means[p["label"]][0]) and p["seeds"] == [0, 1]
    assert chosen in (out / SELECTION_MD).read_text()
    # phase 2: the chosen point as "finetune", its students reused from phase 1
    chosen_lr = next(p["config"]["lr"] for p in g["points"] if p["label"] == chosen)
    ft = [r for r in test_rows if r["method"] == "finetune"]
    assert {r["label"] for r in test_rows} == {"finetune", "linear-probe"}
    assert all(r["config"]["method"]["config"]["lr"] == chosen_lr for r in ft)
    assert all(r["timings"]["student_cached"] for r in ft)
    from safereuse.report.data import load_run

    assert sorted(load_run(out).labels) == ["finetune", "linear-probe"]  # the report shows phase 2 only
    from safereuse.report import build_report

    build_report(out)
    assert "selection.md" in (out / "report.md").read_text()  # and says where the choice is

    # resume: nothing to do; a selection cell a killed run left `running` is run again, same choice
    assert run(loaded, out, jobs=1, progress=False).ran == 0
    con = sqlite3.connect(out / "ledger.sqlite")
    con.execute("UPDATE cells SET status = 'running' WHERE id = ?", (sel_rows[0]["id"],))
    con.commit()
    con.close()
    (out / SELECTION_JSON).unlink()
    again = run(loaded, out, jobs=1, progress=False)
    assert again.ran == 1 and again.counts["done"] == 8
    assert json.loads((out / SELECTION_JSON).read_text()) == sel

    # the same run with a garbled test split: the validation table and the choice do not move,
    # while the test-split numbers do (so the garbling did reach the run)
    monkeypatch.setattr(data_mod, "load_raw", _garbled_test_split(data_mod.load_raw))
    out2 = tmp_path / "garbled"
    assert run(loaded, out2, jobs=1, progress=False).failures == []
    assert json.loads((out2 / SELECTION_JSON).read_text()) == sel
    with Ledger(out2 / "ledger.sqlite") as led:
        test2 = led.rows(h)
    acc = [r["metrics"]["student"]["test_acc"] for r in test_rows]
    acc2 = [r["metrics"]["student"]["test_acc"] for r in test2]
    assert acc != acc2

"""Specs that mix text and image scenarios: defects scoped to scenarios, method labels per scope."""

from __future__ import annotations

import pytest

from safereuse.errors import SafeReuseError
from safereuse.runner import expand, load_spec

SPEC = """
scenarios:
  - name: img
    teacher: {arch: smallcnn, data: digits, classes: 0-4, seed: 0}
    student: {data: digits, classes: 5-9, train_size: 10}
  - name: txt
    teacher: {arch: minilm, data: movie-sentences, train_size: 50, max_len: 16, backdoor: ripple, seed: 0}
    student: {data: movie-sentences, train_size: 20, max_len: 16}
methods:
  - name: finetune
    scenarios: [img]
  - name: finetune
    params: {optimizer: adam, lr: 3.0e-5}
    scenarios: [txt]
  - name: linear-probe
defects:
  - name: penultimate
    scenarios: [img]
  - name: ripple
  - name: pwws
    params: {max_samples: 10}
    scenarios: [{pwws_scope}]
seeds: [0, 1]
"""


def test_defects_and_methods_run_only_in_their_scenarios():
    cells = expand(load_spec(text=SPEC.replace("{pwws_scope}", "txt")))
    by = {(c.scenario, c.label, c.seed): [d["name"] for d in c.config["defects"]] for c in cells}
    assert sorted(by) == sorted(
        (sc, m, s) for sc in ("img", "txt") for m in ("finetune", "linear-probe") for s in (0, 1)
    )
    assert by[("img", "finetune", 0)] == ["penultimate"]  # not the text backdoor nor the word attack
    assert by[("txt", "finetune", 1)] == ["ripple", "pwws"]
    assert by[("txt", "linear-probe", 0)] == ["ripple", "pwws"]
    # two finetune points in disjoint scenarios keep the bare name; each runs where it is scoped
    ft = {c.scenario: c.config["method"]["config"] for c in cells if c.label == "finetune"}
    assert ft["txt"]["optimizer"] == "adam" and ft["img"]["optimizer"] != "adam"
    pwws = next(d for c in cells if c.scenario == "txt" for d in c.config["defects"] if d["name"] == "pwws")
    assert pwws["params"]["max_samples"] == 10


def test_overlapping_points_are_still_told_apart():
    text = SPEC.replace("{pwws_scope}", "txt")
    text = text.replace("    scenarios: [txt]\n  - name: linear", "  - name: linear")
    labels = {(c.scenario, c.label) for c in expand(load_spec(text=text))}
    # the adam point now runs on both scenarios, so on img two finetune points meet; its label shows
    # what it resolves to on each teacher architecture (a value differing between them as `a/b`)
    adam = {(sc, label) for sc, label in labels if "optimizer=adam" in label}
    assert {sc for sc, _ in adam} == {"img", "txt"} and len({label for _, label in adam}) == 1
    label = next(iter(adam))[1]
    assert "lr=3e-05" in label and "batch_size=16/64" in label  # text student default / image default
    assert ("img", "finetune") not in labels and ("txt", "finetune") not in labels


def test_unknown_scenario_of_a_defect_names_key_and_line():
    with pytest.raises(SafeReuseError) as exc:
        load_spec(text=SPEC.replace("{pwws_scope}", "text"))
    msg = str(exc.value)
    assert "line 22: defects[2].scenarios[0]: no scenario is named 'text'" in msg and "img, txt" in msg

"""`safereuse demo`: the bundled specs, and the quick demo end to end (the CI run of the default job)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safereuse.methods import METHODS
from safereuse.runner import Ledger, bundled_spec, expand, load_spec

REPO = Path(__file__).resolve().parents[1]


def _shape(name: str):
    spec = bundled_spec(name).spec
    return (
        [
            (s.name, s.teacher.data, s.teacher.classes, s.teacher.backdoor, s.student.data, s.student.classes)
            for s in spec.scenarios
        ],
        [(m.name, m.exclude, m.scenarios) for m in spec.methods],
        [(d.name, d.scenarios) for d in spec.defects],
        spec.seeds,
    )


IMAGES = ["fmnist-heldout-fewshot", "fmnist-extend-fewshot", "fmnist-badnets-same-task"]
TEXT = "movie-to-amazon-ripple"  # issue 15: the NLP scenario
TEXT_METHODS = ["finetune", "retrain", "mag-prune", "remos"]


def test_quick_demo_has_the_default_shape():
    assert _shape("quick") == _shape("default")
    scenarios, methods, defects, seeds = _shape("default")
    assert [s[0] for s in scenarios] == [*IMAGES, TEXT]
    assert [s[4] for s in scenarios] == ["fashion-mnist"] * 3 + ["amazon-sentences"]
    assert scenarios[0][5] == [5, 6, 7, 8, 9] and scenarios[2][3] == "badnets"
    # the text scenario: a RIPPLe (weight-poisoned) MiniLM movie-review teacher, Amazon-review student
    assert scenarios[3][1:4] == ("movie-sentences", None, "ripple")
    # few-shot students: where reuse pays (docs/results/reuse-pays.md)
    spec = bundled_spec("default").spec
    assert {(s.student.train_size, s.student.per_class) for s in spec.scenarios[:3]} == {(5, True)}
    assert methods == [("all", [], IMAGES)] + [(m, [], [TEXT]) for m in TEXT_METHODS] and len(seeds) == 2
    assert defects == [
        ("penultimate", IMAGES), ("nc-guided", IMAGES), ("badnets", None), ("ripple", None), ("pwws", [TEXT]),
    ]  # fmt: skip


def test_default_demo_grid_covers_every_method():
    cells = expand(bundled_spec("default"))
    images = [c for c in cells if c.scenario != TEXT]
    assert {c.method for c in images} == set(METHODS.names())
    assert len(images) == 3 * len(METHODS.names()) * 2
    assert len({c.teacher_key for c in images}) == 2  # one clean, one backdoored teacher
    assert all(
        c.config["teacher"]["arch"] == "resnet8" and c.config["teacher"]["arch_kwargs"] == {"width": 16}
        for c in images
    )
    image_defects = {"penultimate", "nc-guided", "badnets"}
    assert all({d["name"] for d in c.config["defects"]} <= image_defects for c in images)
    assert {c.label for c in images} == set(METHODS.names())  # bare names: the text points do not rename them
    # the text scenario: exactly ReMoS's NLP methods × 2 seeds, its backdoor and a word attack
    text = [c for c in cells if c.scenario == TEXT]
    assert sorted((c.label, c.seed) for c in text) == sorted((m, s) for m in TEXT_METHODS for s in (0, 1))
    assert len(cells) == len(images) + len(text)
    assert all([d["name"] for d in c.config["defects"]] == ["ripple", "pwws"] for c in text)
    assert len({c.teacher_key for c in text}) == 1
    t = text[0].config["teacher"]
    assert (t["arch"], t["backdoor"], t["data"]["max_len"]) == ("minilm", "ripple", 32)
    fit = {c.label: c.config["method"]["config"] for c in text}
    assert {f["optimizer"] for f in fit.values()} == {"adam"} and fit["finetune"]["lr"] == 3e-5
    assert fit["mag-prune"]["ratio"] == 0.3


def test_repo_examples_are_the_bundled_specs_and_all_load():
    bundled = sorted(p.name for p in (REPO / "src/safereuse/examples").glob("*.yaml"))
    assert {"default.yaml", "quick.yaml"} <= set(bundled)
    for name in bundled:
        repo_copy = REPO / "examples" / name
        assert repo_copy.read_text() == (REPO / "src/safereuse/examples" / name).read_text()
        assert expand(load_spec(repo_copy))


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "safereuse.cli", "demo", "--quick", "--out", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ},
    )
    seconds = time.monotonic() - t0
    assert res.returncode == 0, res.stderr[-3000:]
    n = 3 * len(METHODS.names()) * 2 + len(TEXT_METHODS) * 2
    assert f"{n} cells: {n} done, 0 failed" in res.stdout
    assert "fmnist-heldout-fewshot" in res.stdout and "DIR badnets" in res.stdout  # the summary table
    assert TEXT in res.stdout and "DIR ripple" in res.stdout and "DIR pwws" in res.stdout
    assert f"report: {out / 'report.html'}" in res.stdout
    assert (
        (out / "report.html").is_file() and (out / "report.md").is_file() and (out / "results.csv").is_file()
    )
    with Ledger(out / "ledger.sqlite", create=False) as led:
        assert led.status_counts() == {"pending": 0, "running": 0, "done": n, "failed": 0}
    # ≤ 3 min on 2 free CPU cores; allow slack for a loaded CI machine
    assert seconds < 3 * 180, f"quick demo took {seconds:.0f} s"
    # a second run reuses everything
    again = subprocess.run(
        [sys.executable, "-m", "safereuse.cli", "demo", "--quick", "--out", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0 and f"(0 run now, {n} reused)" in again.stdout

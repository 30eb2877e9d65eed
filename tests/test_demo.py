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
        [(m.name, m.exclude) for m in spec.methods],
        [d.name for d in spec.defects],
        spec.seeds,
    )


def test_quick_demo_has_the_default_shape():
    assert _shape("quick") == _shape("default")
    scenarios, methods, defects, seeds = _shape("default")
    assert [s[4] for s in scenarios] == ["fashion-mnist"] * 3
    assert scenarios[0][5] == [5, 6, 7, 8, 9] and scenarios[2][3] == "badnets"
    # few-shot students: where reuse pays (docs/results/reuse-pays.md)
    spec = bundled_spec("default").spec
    assert {(s.student.train_size, s.student.per_class) for s in spec.scenarios} == {(5, True)}
    assert methods == [("all", [])] and len(seeds) == 2
    assert defects == ["penultimate", "nc-guided", "badnets"]


def test_default_demo_grid_covers_every_method():
    cells = expand(bundled_spec("default"))
    assert {c.method for c in cells} == set(METHODS.names())
    assert len(cells) == 3 * len(METHODS.names()) * 2
    assert len({c.teacher_key for c in cells}) == 2  # one clean, one backdoored teacher
    assert all(
        c.config["teacher"]["arch"] == "resnet8" and c.config["teacher"]["arch_kwargs"] == {"width": 16}
        for c in cells
    )


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
    n = 3 * len(METHODS.names()) * 2
    assert f"{n} cells: {n} done, 0 failed" in res.stdout
    assert "fmnist-heldout-fewshot" in res.stdout and "DIR badnets" in res.stdout  # the summary table
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

"""SeaM's direct reuse as a library function, the ``seam-reengineer`` experiment kind, its report.

``safereuse reengineer`` (:func:`safereuse.api.reengineer`) only loads, calls
:func:`safereuse.methods.seam.measure_reengineered` and saves; the runner's ``seam-reengineer`` kind calls
the same function once per target × granularity, each in its own cell (issue 24, item 3).
"""

from __future__ import annotations

import json

import pytest

import safereuse.applications  # noqa: F401  (registers the experiment kinds)
from safereuse import api
from safereuse.artifacts import load_model
from safereuse.data import DataSpec, load_data
from safereuse.data.targets import target_problem
from safereuse.errors import SafeReuseError
from safereuse.methods import SeaM
from safereuse.methods.seam import measure_reengineered
from safereuse.report import build_report
from safereuse.runner import expand, load_spec, run

SPEC = """\
name: seam-smoke
experiment:
  kind: seam-reengineer
  params:
    targets: [{classes: 1, binary: true}, {classes: 0-2}]
    granularities: [weight, channel]
    seam: {epochs: 2, lr_mask: 0.2}
    threads: 1
scenarios:
  - name: digits
    teacher: {arch: smallcnn, arch_kwargs: {width: 4, hidden: 16}, data: digits, classes: 0-4,
              epochs: 1, seed: 0}
seeds: [0]
"""

#: latencies are timings: two runs never agree on them
TIMED = {"latency_original_ms", "latency_reengineered_ms"}


def test_the_cli_function_reports_what_the_library_function_measures(digits_teacher_dir, tmp_path):
    params = {"epochs": 2, "lr_mask": 0.2, "granularity": "channel"}
    res = api.reengineer(
        digits_teacher_dir, "1-3", out=tmp_path / "r", params=params, progress=False, threads=1
    )
    art = load_model(digits_teacher_dir)
    problem = target_problem(load_data(DataSpec("digits", classes=[0, 1, 2, 3, 4])), [1, 2, 3])
    lib = measure_reengineered(SeaM(**params), art.model, problem, progress=False, threads=1)
    assert set(res) - {"out", "target_classes", "binary"} == set(lib.metrics)
    for k, v in lib.metrics.items():
        if k in TIMED:
            assert set(res[k]) == set(v) == {"1", "64"}
        else:
            assert res[k] == (pytest.approx(v) if isinstance(v, float) else v), k
    saved = load_model(tmp_path / "r").manifest["metrics"]
    assert {k: v for k, v in saved.items() if k not in TIMED} == json.loads(
        json.dumps({k: v for k, v in res.items() if k in saved and k not in TIMED})
    )


@pytest.mark.parametrize(
    ("change", "msg"),
    [
        ("granularities: [weight, channel]", r"line 2: experiment: .*granularities=\['filter'\] is invalid"),
        ("seam: {epochs: 2, lr_mask: 0.2}", r"line 2: experiment: .*seam: alpha=0 is invalid"),
        (
            "targets: [{classes: 1, binary: true}, {classes: 0-2}]",
            r"line 2: experiment: .*a binary target is one",
        ),
    ],
)
def test_parameters_are_checked_before_any_cell(change, msg):
    bad = {
        "granularities": "granularities: [filter]",
        "seam": "seam: {alpha: 0}",
        "targets": "targets: [{classes: 1-2, binary: true}]",
    }[change.split(":")[0]]
    with pytest.raises(SafeReuseError, match=msg) as err:
        load_spec("seam.yaml", text=SPEC.replace(change, bad))
    assert "\n" not in str(err.value)


def test_one_cell_per_target_and_granularity():
    cells = expand(load_spec("seam.yaml", text=SPEC))
    assert [c.label for c in cells] == [
        "seam 1 binary weight", "seam 1 binary channel", "seam 0,1,2 weight", "seam 0,1,2 channel",
    ]  # fmt: skip
    assert {c.method for c in cells} == {"seam-reengineer"} and len({c.id for c in cells}) == 4
    assert cells[3].config["method"]["params"] == {
        "targets": [{"classes": [0, 1, 2], "binary": False}], "granularities": ["channel"],
        "seam": {"epochs": 2, "lr_mask": 0.2}, "threads": 1,
    }  # fmt: skip


def test_a_tiny_study_runs_resumes_and_reports(tmp_path):
    out = tmp_path / "run"
    summary = run(load_spec("seam.yaml", text=SPEC), out, progress=False)
    assert summary.counts["done"] == 4, summary.failure_text()
    again = run(load_spec("seam.yaml", text=SPEC), out, progress=False)
    assert again.counts["done"] == 4 and again.ran == 0 and again.skipped == 4  # none redone
    files = build_report(out)
    md = files.markdown.read_text()
    assert "SeaM direct reuse per target × granularity" in md
    table = md.split("SeaM direct reuse per target × granularity")[1].split("##")[0]
    rows = [r for r in table.splitlines() if r.startswith("| digits |")]
    assert len(rows) == 4  # the per-epoch rows are the curve's, not the table's
    assert "| 1 | True | weight |" in table and "| 0,1,2 | False | channel |" in table
    assert "/" in rows[0] and "[" in rows[0]  # k / n and the Wilson interval
    curve = md.split("weights kept ρ per epoch (mean")[1].split("##")[0]
    assert "| digits | 0,1,2 channel | 2 | 1 |" in curve  # epoch 2 of the search, one run
    assert [p.name for p in files.figures if p.name.startswith("epoch_")] == ["epoch_digits.png"]

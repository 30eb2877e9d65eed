"""Reports: hand-checked aggregates, files that contain every cell, and report.html rendered in Chromium."""

from __future__ import annotations

import base64
import io
import math
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from safereuse.cli import main
from safereuse.metrics import wilson_interval
from safereuse.report import aggregate, build_report, load_run, pareto_front, summary_text
from safereuse.runner import Ledger, expand, load_spec, run
from safereuse.runner import worker as worker_mod

SPEC = """\
name: report-test
scenarios:
  - name: digits-a
    teacher: &t {arch: smallcnn, arch_kwargs: {width: 4, hidden: 16}, data: digits, classes: 0-4,
                 epochs: 1, seed: 0}
    student: {data: digits, classes: 5-9, train_size: 5, per_class: true}
  - name: digits-b
    teacher: *t
    student: {data: digits, classes: 0-4, train_size: 5, per_class: true}
methods:
  - name: finetune
    params: {epochs: 1}
  - name: linear-probe
    params: {epochs: 1}
defects:
  - name: penultimate
    params: {steps: 2}
  - name: nc-guided
    params: {steps: 2, coverage: [nc, tknc]}
seeds: [0, 1]
audit: {max_samples: 30}
"""


@pytest.fixture(scope="module")
def rundir(tmp_path_factory) -> Path:
    """A finished tiny run (8 cells, one failed on purpose)."""
    tmp = tmp_path_factory.mktemp("report")
    p = tmp / "spec.yaml"
    p.write_text(SPEC)
    loaded = load_spec(p)
    failing = next(
        c for c in expand(loaded) if c.scenario == "digits-b" and c.method == "linear-probe" and c.seed == 1
    )
    real = worker_mod.run_cell

    def run_cell(payload):
        if payload["id"] == failing.id:
            return {"status": "failed", "error": "RuntimeError: injected for the report", "traceback": "tb"}
        return real(payload)

    mp = pytest.MonkeyPatch()
    mp.setitem(worker_mod.TASKS, "cell", run_cell)  # executors dispatch through this table
    try:
        run(loaded, tmp / "run", progress=False)
    finally:
        mp.undo()
    return tmp / "run"


def test_pareto_front():
    assert pareto_front([(10, 80), (20, 90), (15, 70), (30, 85)]) == [0, 1]
    assert pareto_front([(5, 50), (5, 60), (math.nan, 99)]) == [1]
    assert pareto_front([]) == []


def _fake_run(tmp_path: Path, seeds=((0.8, 10.0, 20), (0.9, 30.0, 30))) -> Path:
    """A ledger with hand-made metrics, one seed per ``(acc, DIR %, n)``; by default 2 seeds,
    DIR 10 % (k=2, n=20) and 30 % (k=9, n=30)."""
    text = SPEC.replace("  - name: linear-probe\n    params: {epochs: 1}\n", "")
    text = text.replace("seeds: [0, 1]", f"seeds: {list(range(len(seeds)))}")
    p = tmp_path / "s.yaml"
    p.write_text(text)
    loaded = load_spec(p)
    out = tmp_path / "run"
    cells = [c for c in expand(loaded) if c.scenario == "digits-a"]
    import safereuse.runner.core as core

    core._make_rundir(out)
    core._record_spec(out, loaded, loaded.spec.spec_hash())
    with Ledger(out / "ledger.sqlite") as led:
        led.add_cells(cells, loaded.spec.spec_hash())
        for c, (acc, d, n) in zip(cells, seeds, strict=True):
            led.mark_running(c.id)
            row = {
                "defect": "penultimate",
                "kind": "adversarial",
                "dir": d,
                "n": n,
                "ci_low": 0,
                "ci_high": 50,
                "asr": None,
                "teacher_rate": None,
                "acc": acc * 100,
            }
            metrics = {
                "student": {"test_acc": acc, "n_test": 100},
                "teacher": {"test_acc": 0.95},
                "audit": {"acc": {"value": acc * 100, "n": 30}, "rows": [row]},
            }
            led.finish(c.id, {"status": "done", "metrics": metrics, "artifacts": {}})
    return out


def test_aggregate_numbers_are_hand_checked(tmp_path):
    out = _fake_run(tmp_path)
    agg = aggregate(load_run(out))
    r = agg[agg["defect"] == "penultimate"].iloc[0]
    assert r["seeds"] == 2
    assert r["acc_mean"] == pytest.approx(85.0) and r["acc_std"] == pytest.approx(math.sqrt(50))  # 80, 90
    assert r["dir_mean"] == pytest.approx(20.0) and r["dir_std"] == pytest.approx(math.sqrt(200))  # 10, 30
    assert (r["k"], r["n"]) == (11, 50)  # summed 2/20 + 9/30 (for scale only)
    # 95 % over seeds: 20 ± t₁ · SE, SE² = s²/2 + mean_s p̃(1−p̃)/(n+z²), p̃ = (k + z²/2)/(n + z²).
    # t₁ = 12.706: with 2 seeds the interval is [0, 100] once clipped — two seeds cannot bound a spread.
    z2 = 1.96**2
    v_img = sum(
        (k + z2 / 2) / (n + z2) * (1 - (k + z2 / 2) / (n + z2)) / (n + z2) for k, n in ((2, 20), (9, 30))
    )
    se = math.sqrt(0.02 / 2 + v_img / 2)  # s² = (10² + 10²) / 1 in %², as a fraction 0.02
    assert se == pytest.approx(0.12693, abs=1e-5)
    assert (r["dir_ci_low"], r["dir_ci_high"]) == (0.0, 100.0) and r["ci_method"] == "t-seeds+binomial"
    assert "85.0 ± 7.1" in summary_text(out) and "20.0 ± 14.1" in summary_text(out)


def test_three_seed_interval_in_tables_and_csv(tmp_path):
    """DIR 20 / 25 / 30 % of n = 100: the interval is t₂ · SE wide, not the pooled Wilson of 75/300."""
    out = _fake_run(tmp_path, seeds=((0.8, 20.0, 100), (0.85, 25.0, 100), (0.9, 30.0, 100)))
    r = aggregate(load_run(out)).iloc[0]
    assert r["seeds"] == 3 and r["dir_mean"] == pytest.approx(25.0) and r["dir_std"] == pytest.approx(5.0)
    z2 = 1.96**2
    v_img = sum(
        (k + z2 / 2) / (100 + z2) * (1 - (k + z2 / 2) / (100 + z2)) / (100 + z2) for k in (20, 25, 30)
    )
    half = 100 * 4.3027 * math.sqrt(0.05**2 / 3 + v_img / 3)
    assert half == pytest.approx(22.22, abs=0.01)
    assert r["dir_ci_low"] == pytest.approx(25 - half, abs=0.01)  # 2.78
    assert r["dir_ci_high"] == pytest.approx(25 + half, abs=0.01)  # 47.22
    assert r["dir_ci_high"] - r["dir_ci_low"] > 4 * 9.8  # pooled Wilson of 75/300 is [20.4, 30.2]
    # ACC (80 / 85 / 90 % of 100 test images) gets the same treatment
    t_half = 4.3027 * 5 / math.sqrt(3)  # the t-interval of the 3 accuracies alone
    assert r["acc_ci_low"] < 85 - t_half and r["acc_ci_high"] > 85 + t_half

    files = build_report(out)
    csv = pd.read_csv(files.csv)
    assert {"seeds", "seeds_dir_ci_low", "seeds_dir_ci_high", "seeds_ci_method"} <= set(csv.columns)
    assert list(csv["seeds"]) == [3, 3, 3] and set(csv["seeds_ci_method"]) == {"t-seeds+binomial"}
    assert csv["seeds_dir_ci_low"].tolist() == pytest.approx([25 - half] * 3, abs=0.01)
    assert csv["seeds_dir_mean"].tolist() == pytest.approx([25.0] * 3)
    assert csv["ci_low"].tolist() == [0, 0, 0]  # each cell's own interval is kept as recorded
    md = files.markdown.read_text()
    assert f"25.0 ± 5.0 [{25 - half:.1f}, {25 + half:.1f}]" in md
    assert "Student's t" in md and "Student" in files.html.read_text()


def test_one_seed_falls_back_to_the_cells_wilson_interval(tmp_path):
    out = _fake_run(tmp_path, seeds=((0.8, 30.0, 100),))
    r = aggregate(load_run(out)).iloc[0]
    lo, hi = wilson_interval(30, 100)
    assert r["ci_method"] == "wilson-1-seed" and r["dir_std"] == 0.0
    assert (r["dir_ci_low"], r["dir_ci_high"]) == pytest.approx((100 * lo, 100 * hi))
    md = build_report(out).markdown.read_text()
    assert "wilson-1-seed" in md or "one seed" in md


def test_report_files_contain_every_cell(rundir, capsys):
    code = main(["report", str(rundir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "report.html" in out and "digits-a" in out
    data = load_run(rundir)
    ids = [c["id"] for c in data.cells]
    assert len(ids) == 8
    csv = pd.read_csv(rundir / "results.csv")
    assert set(csv["cell_id"]) == set(ids)
    # 7 done cells × 3 defect points + 1 failed cell (one row, no defect)
    assert len(csv) == 7 * 3 + 1
    assert set(csv["defect"].dropna()) == {
        "penultimate",
        "nc-guided(coverage=nc)",
        "nc-guided(coverage=tknc)",
    }
    failed = csv[csv["status"] == "failed"]
    assert len(failed) == 1 and "injected" in failed["error"].iloc[0]
    md = (rundir / "report.md").read_text()
    page = (rundir / "report.html").read_text()
    for cid in ids:
        assert cid in md and cid in page
    assert "injected for the report" in md and "--retry-failed" in page
    assert "name: report-test" in md and "name: report-test" in page  # the run's configuration
    # figures: one trade-off plot per defect point, one bar chart per scenario, embedded in the HTML
    figs = sorted(p.name for p in (rundir / "figures").glob("*.png"))
    assert len(figs) == 3 + 2, figs
    imgs = re.findall(r"<img [^>]*src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(imgs) == len(figs)
    from PIL import Image

    for b in imgs:
        im = Image.open(io.BytesIO(base64.b64decode(b)))
        assert im.size[0] > 300 and im.size[1] > 200
    assert "src='figures/" not in page and "http" not in page.split("<h2>Configuration</h2>")[0].lower()
    assert "![ACC vs DIR — penultimate](figures/tradeoff_penultimate.png)" in md


def test_report_of_a_running_or_empty_run(tmp_path):
    """A run with no finished cells still gets a report (tables, no figures)."""
    p = tmp_path / "s.yaml"
    p.write_text(SPEC)
    loaded = load_spec(p)
    import safereuse.runner.core as core

    out = tmp_path / "run"
    core._make_rundir(out)
    core._record_spec(out, loaded, loaded.spec.spec_hash())
    with Ledger(out / "ledger.sqlite") as led:
        led.add_cells(expand(loaded), loaded.spec.spec_hash())
    files = build_report(out)
    assert files.figures == [] and "No finished cells" in files.html.read_text()
    assert len(pd.read_csv(files.csv)) == 8


def test_report_bad_input(tmp_path, capsys):
    code = main(["report", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "does not exist" in err
    code = main(["report", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "no results ledger" in err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (./run.sh setup installs it)")
def test_report_html_renders_in_headless_chromium(rundir, tmp_path):
    build_report(rundir)
    shot = tmp_path / "shot.png"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        "--hide-scrollbars",
        (rundir / "report.html").resolve().as_uri(),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), res.stderr[-2000:]
    from PIL import Image

    im = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert im.shape[:2] == (2000, 1200)
    assert im.std() > 10, "the screenshot is blank"
    nonwhite = (im < 235).any(axis=2)
    assert nonwhite.mean() > 0.02, "hardly anything drawn"
    # the figures are rendered: plots have coloured pixels (bars and markers), text alone has none
    r, g, b = im[..., 0], im[..., 1], im[..., 2]
    coloured = (np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)) > 60
    assert coloured.sum() > 2000, "no figure visible in the screenshot"


def test_spec_text_is_kept_verbatim(rundir):
    assert (rundir / "spec.yaml").read_text() == textwrap.dedent(SPEC)


def _fake_records(rows: list[tuple[str, str, int, str, float]]):
    """A RunData from (scenario, method, seed, status, acc %) cells: n_test 100, one penultimate row."""
    from safereuse.report import COLUMNS, RunData

    recs = pd.DataFrame(
        [
            {
                "cell_id": f"c{i}",
                "scenario": sc,
                "method": m,
                "label": m,
                "seed": seed,
                "status": st,
                "acc": acc if st == "done" else math.nan,
                "n_test": 100,
                "defect": "penultimate",
                "kind": "adversarial",
                "dir": 10.0,
                "n": 100,
                "k": 10,
            }
            for i, (sc, m, seed, st, acc) in enumerate(rows)
        ],
        columns=COLUMNS,
    )
    return RunData(Path("."), {}, "", [], recs)


def test_reuse_gain_hand_checked():
    from safereuse.report import reuse_frame, reuse_gain, summary_frame

    data = _fake_records(
        [("a", "finetune", s, "done", acc) for s, acc in enumerate([80.0, 90.0, 70.0])]
        + [("a", "retrain", s, "done", acc) for s, acc in enumerate([60.0, 65.0, 70.0])]
        + [("a", "remos", s, "done", 70.0) for s in range(3)]
        + [("a", "retrain", 3, "done", 10.0), ("a", "finetune", 4, "failed", 0.0)]  # unpaired: ignored
        + [("b", "finetune", 0, "done", 50.0)]  # no retrain reference: no row
    )
    g = reuse_gain(data)
    assert list(g["scenario"]) == ["a"]
    r = g.iloc[0]
    # differences 20, 25, 0 points → mean 15, std √175; SE² = s²/3 + mean of both Agresti–Coull
    # variances (n = 100, z = 1.96): SE = 9.7822; t at Φ(1.96) with 2 df = 4.3028 → [−27.09, 57.09]
    assert r["seeds"] == 3 and r["gain_mean"] == pytest.approx(15.0)
    assert r["gain_std"] == pytest.approx(math.sqrt(175))
    assert (r["gain_ci_low"], r["gain_ci_high"]) == pytest.approx((-27.09, 57.09), abs=0.01)
    assert (r["acc_mean"], r["ref_acc_mean"]) == pytest.approx((80.0, 65.0))
    # the summary shows the same difference for every method with a retrain reference
    s = summary_frame(data, detail=False).set_index(["scenario", "method"])
    assert s.loc[("a", "finetune"), "ACC − retrain pt"] == "+15.0 ± 13.2"
    assert s.loc[("a", "remos"), "ACC − retrain pt"] == "+5.0 ± 5.0"
    assert s.loc[("a", "retrain"), "ACC − retrain pt"] == "-"
    assert s.loc[("b", "finetune"), "ACC − retrain pt"] == "-"
    assert reuse_frame(data).to_dict("records") == [
        {
            "scenario": "a",
            "finetune ACC %": "80.0",
            "retrain ACC %": "65.0",
            "finetune − retrain pt": "+15.0 ± 13.2 [-27.1, 57.1]",
            "seeds": 3,
        }
    ]


def test_seed_difference_edges():
    from safereuse.metrics import seed_difference

    one = seed_difference([(90, 100)], [(50, 100)])  # one seed: z on both binomial variances
    assert one.method == "normal-1-seed" and one.mean == pytest.approx(40.0) and one.std == 0.0
    assert one.ci_low < 40 < one.ci_high
    none = seed_difference([None, (0, 0)], [(1, 2), (1, 2)])
    assert none.seeds == 0 and math.isnan(none.mean)
    clipped = seed_difference([(100, 100), (0, 100)], [(0, 100), (100, 100)])
    assert clipped.ci_low >= -100 and clipped.ci_high <= 100

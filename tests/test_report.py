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


def _empty_run(tmp_path: Path, text: str) -> tuple[Path, object, list]:
    """A run directory for ``text`` with its spec recorded and nothing run: ``(out, loaded spec, the
    digits-a cells)``; the caller fills the ledger with hand-made metrics."""
    p = tmp_path / "s.yaml"
    p.write_text(text)
    loaded = load_spec(p)
    out = tmp_path / "run"
    cells = [c for c in expand(loaded) if c.scenario == "digits-a"]
    import safereuse.runner.core as core

    core._make_rundir(out)
    core._record_spec(out, loaded, loaded.spec.spec_hash())
    return out, loaded, cells


def _fake_run(tmp_path: Path, seeds=((0.8, 10.0, 20), (0.9, 30.0, 30))) -> Path:
    """A ledger with hand-made metrics, one seed per ``(acc, DIR %, n)``; by default 2 seeds,
    DIR 10 % (k=2, n=20) and 30 % (k=9, n=30)."""
    text = SPEC.replace("  - name: linear-probe\n    params: {epochs: 1}\n", "")
    text = text.replace("seeds: [0, 1]", f"seeds: {list(range(len(seeds)))}")
    out, loaded, cells = _empty_run(tmp_path, text)
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


# -- what is resolved: each method minus fine-tune, paired by seed ---------------------------------
def _ac(k: int, n: int) -> float:
    """Agresti–Coull binomial variance of one rate (fraction²), z = 1.96."""
    z2 = 1.96**2
    p = (k + z2 / 2) / (n + z2)
    return p * (1 - p) / (n + z2)


def _half(ds: list[float], pairs: list[tuple[tuple[int, int], tuple[int, int]]]) -> float:
    """The 95 % half-width of seed_difference, by hand: t_{S−1} · √(s²/S + mean of both variances)."""
    from safereuse.metrics import student_t_quantile

    s = len(ds)
    m = sum(ds) / s
    var = sum((d - m) ** 2 for d in ds) / (s - 1) / 1e4
    img = sum(_ac(*a) + _ac(*b) for a, b in pairs) / s
    return 100 * student_t_quantile(0.975, s - 1) * math.sqrt(var / s + img)


def _records(rows: list[tuple[str, str, int, str, float, str, float, int]]):
    """A RunData from (scenario, method, seed, status, acc %, defect, DIR %, DIR n) rows; n_test 1000."""
    from safereuse.report import COLUMNS, RunData

    recs = pd.DataFrame(
        [
            {
                "cell_id": f"{sc}-{m}-{seed}",
                "scenario": sc,
                "method": m,
                "label": m,
                "seed": seed,
                "status": st,
                "acc": acc,
                "n_test": 1000,
                "defect": d,
                "kind": "adversarial",
                "dir": dr,
                "n": n,
                "k": round(dr * n / 100) if math.isfinite(dr) else 0,
            }
            for sc, m, seed, st, acc, d, dr, n in rows
        ],
        columns=COLUMNS,
    )
    return RunData(Path("."), {}, "", [], recs)


def _comparison_data():
    rows = []
    for s in range(3):
        rows += [
            ("a", "finetune", s, "done", 80.0, "pgd", [40.0, 44.0, 48.0][s], 1000),
            ("a", "finetune", s, "done", 80.0, "nc", 30.0, 200),
            ("a", "remos", s, "done", [70.0, 80.0, 75.0][s], "pgd", [10.0, 12.0, 14.0][s], 1000),
            ("a", "remos", s, "done", [70.0, 80.0, 75.0][s], "nc", [30.0, 31.0, 29.0][s], 200),
            ("a", "remos", s, "done", [70.0, 80.0, 75.0][s], "extra", 5.0, 100),  # not on fine-tune
            ("a", "lwf", s, "done", 80.0, "pgd", [60.0, 64.0, 68.0][s], 1000),
            ("a", "lwf", s, "done", 80.0, "nc", 30.0, 200),
        ]
    rows += [
        ("a", "remos", 3, "done", 10.0, "pgd", 0.0, 1000),  # no fine-tune seed 3: unpaired
        ("a", "lwf", 3, "failed", math.nan, None, math.nan, 0),
        ("b", "remos", 0, "done", 50.0, "pgd", 5.0, 100),  # no fine-tune in b: no rows
        ("c", "finetune", 0, "done", 80.0, "pgd", 50.0, 100),
        ("c", "remos", 0, "done", 80.0, "pgd", 10.0, 100),  # one seed
    ]
    return _records(rows)


def test_comparisons_hand_checked():
    from safereuse.metrics import student_t_quantile
    from safereuse.report.data import COMPARISON_COLUMNS, comparisons

    c = comparisons(_comparison_data())
    assert list(c.columns) == COMPARISON_COLUMNS
    assert set(c["scenario"]) == {"a", "c"} and "DIR extra" not in set(c["compared"])
    assert set(c["ref_label"]) == {"finetune"}
    a = c[c["scenario"] == "a"].set_index(["label", "compared"])
    assert list(a.index) == [(m, f) for m in ("remos", "lwf") for f in ("ACC", "DIR pgd", "DIR nc")]
    assert set(a["seeds"]) == {3}  # remos's seed 3 and lwf's failed cell have no partner

    # remos DIR pgd: −30, −32, −34 → −32 ± 2, resolved below 0
    r = a.loc[("remos", "DIR pgd")]
    pairs = [((k, 1000), (kf, 1000)) for k, kf in ((100, 400), (120, 440), (140, 480))]
    h = _half([-30.0, -32.0, -34.0], pairs)
    assert (r["diff_mean"], r["diff_std"]) == pytest.approx((-32.0, 2.0))
    assert h == pytest.approx(9.464, abs=1e-3)  # t at 0.975; seed_difference's at Φ(1.96) = 0.9750021
    assert (r["diff_ci_low"], r["diff_ci_high"]) == pytest.approx((-32 - h, -32 + h), abs=1e-3)
    assert r["resolved"] and r["mark"] == "▼" and r["verdict"] == "▼ resolved"
    # two seeds would already do: t₁ = 12.706 · √(2²/2 + image term) < 32
    img = 1e4 * sum(_ac(*x) + _ac(*y) for x, y in pairs) / 3
    assert r["image_var"] == pytest.approx(img)
    assert 12.7062 * math.sqrt(4 / 2 + img) < 32 and r["seeds_to_resolve"] == 2
    # lwf DIR pgd: +20 each seed, resolved above 0
    r = a.loc[("lwf", "DIR pgd")]
    assert r["diff_mean"] == pytest.approx(20.0) and r["mark"] == "▲" and r["verdict"] == "▲ resolved"
    # remos ACC: 70 / 80 / 75 against 80 → −5 ± 5, not resolved with 3 seeds; 14 would:
    # h(S) = t_{S−1} · √(25/S + v), v the observed image term
    r = a.loc[("remos", "ACC")]
    v = 1e4 * sum(_ac(k, 1000) + _ac(800, 1000) for k in (700, 800, 750)) / 3
    assert r["image_var"] == pytest.approx(v) and v == pytest.approx(3.457, abs=1e-3)
    assert (r["diff_mean"], r["diff_std"]) == pytest.approx((-5.0, 5.0))
    assert not r["resolved"] and r["mark"] == ""
    hs = {s: student_t_quantile(0.975, s - 1) * math.sqrt(25 / s + v) for s in (13, 14)}
    assert hs[13] == pytest.approx(5.054, abs=1e-3) and hs[14] == pytest.approx(4.947, abs=1e-3)
    assert r["seeds_to_resolve"] == 14 and r["verdict"] == "needs ≈ 14 seeds"
    # remos DIR nc: 0, +1, −1 → mean 0: no number of seeds resolves it
    r = a.loc[("remos", "DIR nc")]
    assert r["diff_mean"] == pytest.approx(0.0, abs=1e-9) and r["seeds_to_resolve"] is None
    assert r["verdict"].startswith("not resolvable at this effect size")
    # lwf ACC: 0 exactly, every seed
    assert a.loc[("lwf", "ACC"), "verdict"] == "not resolvable at this effect size (no difference observed)"
    # scenario c: one seed, z on the image term alone; −40 points is resolved even so
    one = c[(c["scenario"] == "c") & (c["compared"] == "DIR pgd")].iloc[0]
    assert one["seeds"] == 1 and one["ci_method"] == "normal-1-seed" and one["resolved"]
    assert one["seeds_to_resolve"] is None
    acc_c = c[(c["scenario"] == "c") & (c["compared"] == "ACC")].iloc[0]
    assert acc_c["verdict"] == "one seed: run ≥ 2 to estimate the seed spread"


def test_comparison_mark_appears_exactly_when_the_interval_excludes_zero():
    from safereuse.report.data import comparisons
    from safereuse.report.render import _html_table, _md_marked, comparison_frames

    data = _comparison_data()
    c = comparisons(data)
    excl = (c["diff_ci_low"] > 0) | (c["diff_ci_high"] < 0)
    assert excl.any() and (~excl).any()
    assert (c["resolved"] == excl).all()
    assert ((c["mark"] != "") == excl).all() and (c["verdict"].str.contains("resolved ") == False).all()  # noqa: E712
    assert (c["verdict"].str.endswith(" resolved") == excl).all()
    frames = dict((sc, (t, m)) for sc, t, m in comparison_frames(data, c))
    table, marked = frames["a"]
    assert list(table.columns) == [
        "method",
        "seeds",
        "ACC − finetune pt",
        "DIR pgd − finetune pt",
        "DIR nc − finetune pt",
    ]
    t = table.set_index("method")
    assert t.loc["remos", "DIR pgd − finetune pt"].startswith("-32.0 ± 2.0 [")
    assert t.loc["remos", "DIR pgd − finetune pt"].endswith("] · ▼ resolved")
    assert t.loc["remos", "ACC − finetune pt"].endswith(" · needs ≈ 14 seeds")
    # the rendered mark: bold in markdown, class='resolved' in HTML, exactly on the resolved cells
    md = _md_marked(table, marked)
    page = _html_table(table, "compare", marked)
    for col in table.columns:
        for i in range(len(table)):
            text = str(table.iloc[i][col])
            hit = bool(marked.iloc[i][col])
            assert hit == ("▼ resolved" in text or "▲ resolved" in text)
            assert (md.iloc[i][col] == f"**{text}**") == hit
    assert page.count("class='resolved'") == int(marked.to_numpy().sum()) == 2


def test_acc_vs_retrain_is_paired_vs_on_acc():
    from safereuse.report.data import acc_vs_retrain, paired_vs

    data = _comparison_data()
    p = paired_vs(data, "finetune", "acc")
    g = acc_vs_retrain(data, "finetune")
    assert (
        g["gain_mean"].tolist() == p["diff_mean"].tolist()
        and g["acc_mean"].tolist() == p["value_mean"].tolist()
    )
    with pytest.raises(Exception, match="cannot compare"):
        paired_vs(data, "finetune", "seconds")


def _fake_pair_run(tmp_path: Path, values: dict[str, list[tuple[float, float]]]) -> Path:
    """A ledger of scenario digits-a with the SPEC's two methods; per method, per seed (acc, DIR %)
    of the penultimate defect over n = 1000 clean-correct inputs, 1000 test images."""
    seeds = len(next(iter(values.values())))
    out, loaded, cells = _empty_run(tmp_path, SPEC.replace("seeds: [0, 1]", f"seeds: {list(range(seeds))}"))
    with Ledger(out / "ledger.sqlite") as led:
        led.add_cells(cells, loaded.spec.spec_hash())
        for c in cells:
            acc, d = values[c.method][c.seed]
            led.mark_running(c.id)
            rows = [
                {"defect": name, "kind": "adversarial", "dir": d, "n": 1000, "ci_low": 0, "ci_high": 100}
                for name in ("penultimate", "nc-guided", "nc-guided")
            ]
            metrics = {
                "student": {"test_acc": acc / 100, "n_test": 1000},
                "teacher": {"test_acc": 0.95},
                "audit": {"acc": {"value": acc, "n": 1000}, "rows": rows},
            }
            led.finish(c.id, {"status": "done", "metrics": metrics, "artifacts": {}})
    return out


def test_report_renders_the_comparisons(tmp_path):
    from safereuse.report.data import COMPARISON_COLUMNS

    out = _fake_pair_run(
        tmp_path,
        {
            "finetune": [(80.0, 40.0), (80.0, 44.0), (80.0, 48.0)],
            "linear-probe": [(70, 10.0), (80, 12.0), (75, 14.0)],
        },
    )
    files = build_report(out)
    assert files.comparisons == out / "comparisons.csv"
    csv = pd.read_csv(files.comparisons)
    assert list(csv.columns) == COMPARISON_COLUMNS
    assert len(csv) == 4 and set(csv["label"]) == {"linear-probe"}  # ACC + 3 defect points
    assert csv["resolved"].tolist() == [False, True, True, True]
    assert csv["mark"].fillna("").tolist() == ["", "▼", "▼", "▼"]
    assert csv["seeds_to_resolve"].tolist() == [14, 2, 2, 2]
    md = files.markdown.read_text()
    assert "## Against finetune: what is resolved" in md and "### digits-a" in md
    assert md.count("▼ resolved**") == 3 and "· needs ≈ 14 seeds |" in md
    assert "seeds_to_resolve" in md and "comparisons.csv" in md  # the legend
    page = files.html.read_text()
    assert page.count("class='resolved'") == 3 and "what is resolved</h2>" in page


def test_a_real_run_renders_its_comparisons(rundir):
    """The tiny real run: linear-probe minus fine-tune in both scenarios; digits-b's seed 1 failed, so
    that scenario is compared on one seed."""
    files = build_report(rundir)
    csv = pd.read_csv(files.comparisons)
    assert len(csv) == 2 * 4 and set(csv["label"]) == {"linear-probe"}
    assert csv.groupby("scenario")["seeds"].max().to_dict() == {"digits-a": 2, "digits-b": 1}
    excl = (csv["diff_ci_low"] > 0) | (csv["diff_ci_high"] < 0)
    assert (csv["resolved"] == excl).all()
    md = files.markdown.read_text()
    assert md.count(" resolved**") == int(excl.sum())
    b = csv[(csv["scenario"] == "digits-b") & ~csv["resolved"]]
    assert (b["verdict"] == "one seed: run ≥ 2 to estimate the seed spread").all()

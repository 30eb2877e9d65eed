"""The experiment runner: spec validation, grid expansion, the ledger, resume, failures, executors."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from cli_helpers import assert_one_line_error
from cli_helpers import run_cli as cli
from safereuse.errors import SafeReuseError
from safereuse.methods import METHODS
from safereuse.runner import Ledger, expand, load_spec, run
from safereuse.runner import worker as worker_mod
from test_methods import BAD_PARAMS

TINY = """\
name: tiny
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
"""


def spec_file(tmp_path: Path, text: str = TINY, name: str = "spec.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


# -- spec and grid -------------------------------------------------------------------------------------
def test_grid_expansion_and_stable_ids(tmp_path):
    loaded = load_spec(spec_file(tmp_path))
    cells = expand(loaded)
    assert len(cells) == 3 * 2  # (2 finetune lr points + linear-probe) × 2 seeds × 1 scenario
    assert len({c.id for c in cells}) == len(cells)
    assert [c.label for c in cells[:3]] == ["finetune(lr=0.01)", "finetune(lr=0.05)", "linear-probe"]
    assert {c.seed for c in cells} == {0, 1}
    # teacher seed is fixed: one teacher for the whole grid; the student data seed is the cell's seed
    assert len({c.teacher_key for c in cells}) == 1
    assert {c.config["student"]["data"]["seed"] for c in cells} == {0, 1}
    assert (
        cells[0].config["method"]["config"]["lr"] == 0.01
        and cells[0].config["method"]["config"]["epochs"] == 1
    )
    assert cells[0].config["defects"] == [
        {"name": "penultimate", "params": cells[0].config["defects"][0]["params"]}
    ]
    assert cells[0].config["defects"][0]["params"]["seed"] == 0  # audit.seed, default 0, filled in

    # same content, different formatting / order / comments: same ids and spec hash
    reformatted = TINY.replace("name: tiny\n", "# a comment\nname: tiny\n").replace(
        "audit: {max_samples: 40}", "audit:\n  max_samples: 40"
    )
    again = load_spec(spec_file(tmp_path, reformatted, "b.yaml"))
    assert [c.id for c in expand(again)] == [c.id for c in cells]
    assert again.spec.spec_hash() == loaded.spec.spec_hash()

    # a changed setting changes exactly the affected cells
    changed = load_spec(
        spec_file(tmp_path, TINY.replace("epochs: 1}\ndefects", "epochs: 2}\ndefects"), "c.yaml")
    )
    new = {c.label: c.id for c in expand(changed) if c.seed == 0}
    old = {c.label: c.id for c in cells if c.seed == 0}
    assert new["finetune(lr=0.01)"] == old["finetune(lr=0.01)"] and new["linear-probe"] != old["linear-probe"]


def test_teacher_seed_follows_cell_seed_when_not_fixed(tmp_path):
    cells = expand(load_spec(spec_file(tmp_path, TINY.replace("epochs: 1, seed: 0}", "epochs: 1}"))))
    assert len({c.teacher_key for c in cells}) == 2
    assert all(c.config["teacher"]["seed"] == c.seed for c in cells)


def test_all_methods_and_backdoor_defects_only_where_planted(tmp_path):
    text = """\
    scenarios:
      - name: clean
        teacher: {arch: smallcnn, data: digits, classes: 0-4, epochs: 1, seed: 0}
        student: {data: digits, classes: 5-9, train_size: 5, per_class: true}
      - name: poisoned
        teacher: {arch: smallcnn, data: digits, classes: 0-4, epochs: 1, seed: 0, backdoor: badnets}
        student: {data: digits, classes: 0-4, train_size: 5, per_class: true}
    methods:
      - name: all
        params: {epochs: 1}
        exclude: [retrain]
    defects:
      - name: penultimate
      - name: badnets
    """
    cells = expand(load_spec(spec_file(tmp_path, text)))
    names = sorted({c.method for c in cells})
    assert names == sorted(n for n in METHODS.names() if n != "retrain")
    assert all(c.config["method"]["config"].get("epochs", 1) == 1 for c in cells)
    assert len({c.teacher_key for c in cells}) == 2
    for c in cells:
        defects = [d["name"] for d in c.config["defects"]]
        assert defects == (["penultimate", "badnets"] if c.scenario == "poisoned" else ["penultimate"])


BAD_SPECS = [
    (
        "methods:\n  - name: finetune",
        "methods:\n  - name: finetuen",
        "line 8",
        "methods[0].name",
        (
            "finetuen",
            "did you mean",
        ),
    ),
    ("- name: penultimate", "- name: penultimat", "line 13", "defects[0].name", ("penultimat",)),
    (
        "data: digits, classes: 5-9",
        "data: digitz, classes: 5-9",
        "line 6",
        "scenarios[0].student.data",
        ("digitz",),
    ),
    ("epochs: 1, seed: 0}", "epochs: many, seed: 0}", "line 5", "scenarios[0].teacher.epochs", ("integer",)),
    ("audit: {max_samples: 40}", "audit: {max_sample: 40}", "line 16", "audit.max_sample", ("unknown key",)),
    (
        "params: {epochs: 1, lr: [0.01, 0.05]}",
        "params: {epochs: 1, lr: [0.01, fast]}",
        "line 9",
        "methods[0].params.lr",
        ("fast",),
    ),
    (
        "params: {epochs: 1}\ndefects",
        "params: {epoch: 1}\ndefects",
        "line 11",
        "methods[1].params.epoch",
        ("no parameter",),
    ),
    ("arch: smallcnn", "arch: bignet", "line 4", "scenarios[0].teacher.arch", ("bignet",)),
    (
        "params: {steps: 2}",
        "params: {steps: 2}\n  - name: badnets",
        "line 15",
        "defects[1].name",
        ("badnets",),
    ),
    ("seeds: [0, 1]", "seeds: [0, 1]\nseeds: [2]", "line 16", "seeds", ("twice",)),
]


@pytest.mark.parametrize("old,new,line,key,words", BAD_SPECS, ids=[b[3] for b in BAD_SPECS])
def test_bad_spec_names_key_and_line(tmp_path, old, new, line, key, words):
    assert old in TINY
    p = spec_file(tmp_path, TINY.replace(old, new, 1))
    with pytest.raises(SafeReuseError) as ei:
        load_spec(p)
    msg = str(ei.value)
    assert f"{p} {line}: {key}" in msg, msg
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize(
    ("name", "key", "value", "problem"), BAD_PARAMS, ids=[f"{c[0]}-{c[1]}" for c in BAD_PARAMS]
)
def test_bad_method_params_in_yaml_give_the_python_message(tmp_path, name, key, value, problem):
    # the table of tests/test_methods.py: the spec adds where (file, line, key), the rest is identical
    with pytest.raises(SafeReuseError) as by_python:
        METHODS.create(name, **{key: value})
    methods = (
        "  - name: finetune\n    params: {epochs: 1, lr: [0.01, 0.05]}\n"
        "  - name: linear-probe\n    params: {epochs: 1}\n"
    )
    assert methods in TINY
    value_yaml = yaml.safe_dump(value).splitlines()[0]
    p = spec_file(tmp_path, TINY.replace(methods, f"  - name: {name}\n    params: {{{key}: {value_yaml}}}\n"))
    with pytest.raises(SafeReuseError) as by_yaml:
        load_spec(p)
    assert by_yaml.value.problem == f"{p} line 9: methods[0].params.{key}: {problem}"
    assert by_yaml.value.fix == by_python.value.fix


def test_bad_teacher_fit_in_yaml_gives_the_cli_message(tmp_path):
    p = spec_file(tmp_path, TINY.replace("epochs: 1, seed: 0}", "epochs: 1, seed: 0, fit: {lr: abc}}"))
    with pytest.raises(SafeReuseError) as ei:
        load_spec(p)
    assert ei.value.problem.endswith(
        "teacher.fit.lr: teacher training: lr='abc' is invalid (expected a number > 0)"
    )
    p = spec_file(tmp_path, TINY.replace("epochs: 1, seed: 0}", "epochs: 1, seed: 0, fit: {seed: 3}}"))
    with pytest.raises(SafeReuseError, match="teacher training has no parameter 'seed'"):
        load_spec(p)  # the runner sets the training seed itself


def test_bad_yaml_and_wrong_shape(tmp_path):
    with pytest.raises(SafeReuseError, match=r"line \d+: invalid YAML"):
        load_spec(spec_file(tmp_path, "name: x\nscenarios:\n  - [unclosed\n"))
    with pytest.raises(SafeReuseError, match="must be a mapping"):
        load_spec(spec_file(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(SafeReuseError, match="cannot read spec"):
        load_spec(tmp_path / "missing.yaml")


# -- running, ledger, resume, failures ------------------------------------------------------------
def test_run_fills_ledger_and_skips_done_cells(tmp_path):
    loaded = load_spec(spec_file(tmp_path))
    out = tmp_path / "run"
    s1 = run(loaded, out, progress=False)
    assert s1.counts["done"] == 6 and s1.ran == 6 and not s1.failures
    with Ledger(out / "ledger.sqlite", create=False) as led:
        rows = led.rows()
        assert {r["id"] for r in rows} == {c.id for c in expand(loaded)}
        r = rows[0]
        assert r["status"] == "done" and r["attempts"] == 1 and r["seconds"] > 0
        assert r["metrics"]["audit"]["rows"][0]["defect"] == "penultimate"
        assert 0 <= r["metrics"]["student"]["test_acc"] <= 1
        assert (out / r["artifacts"]["teacher"] / "manifest.json").is_file()
        assert (out / r["artifacts"]["student"] / "manifest.json").is_file()
        assert led.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert len(list((out / "teachers").iterdir())) == 1  # one teacher, shared by all cells
    assert len(list((out / "students").iterdir())) == 6
    assert any((out / "defects").rglob("*.safetensors"))  # crafted once per teacher × data
    s2 = run(loaded, out, progress=False)
    assert s2.ran == 0 and s2.skipped == 6 and s2.counts["done"] == 6
    with Ledger(out / "ledger.sqlite", create=False) as led:
        assert [r["attempts"] for r in led.rows()] == [1] * 6


def test_failed_cells_are_recorded_and_retried(tmp_path, monkeypatch, capsys):
    # a real train-time failure the spec cannot see: a learning rate so large that training diverges
    text = TINY.replace("{epochs: 1, lr: [0.01, 0.05]}", "{epochs: 2, lr: [0.01, 1.0e+30]}")
    text = text.replace("seeds: [0, 1]", "seeds: [0]")
    p = spec_file(tmp_path, text)
    out = tmp_path / "run"
    code, stdout, err = cli(capsys, "run", str(p), "--out", str(out), "-q")
    assert code == 3, err
    assert "1 cell failed; the first, digits-a/finetune(lr=1e+30)/seed 0" in err and "--retry-failed" in err
    assert "training diverged" in err and "fix: lower the learning rate" in err  # the cause and its fix
    assert "2 done, 1 failed" in stdout
    with Ledger(out / "ledger.sqlite", create=False) as led:
        bad = [r for r in led.rows() if r["status"] == "failed"]
        assert len(bad) == 1 and bad[0]["label"] == "finetune(lr=1e+30)"
        assert "training diverged" in bad[0]["error"] and "Traceback" in bad[0]["traceback"]
    # without --retry-failed the failed cell is left alone; with it, it runs again
    loaded = load_spec(p)
    assert run(loaded, out, progress=False).ran == 0
    s = run(loaded, out, progress=False, retry_failed=True)
    assert s.ran == 1 and s.counts["failed"] == 1
    with Ledger(out / "ledger.sqlite", create=False) as led:
        assert [r["attempts"] for r in led.rows() if r["status"] == "failed"] == [2]


def test_transient_failure_then_retry_succeeds(tmp_path, monkeypatch):
    loaded = load_spec(spec_file(tmp_path, TINY.replace("seeds: [0, 1]", "seeds: [0]")))
    out = tmp_path / "run"
    real = worker_mod.ensure_student

    def flaky(payload, t_dir):
        if payload["config"]["method"]["name"] == "linear-probe":
            raise RuntimeError("injected failure\nsecond line")
        return real(payload, t_dir)

    monkeypatch.setattr(worker_mod, "ensure_student", flaky)
    s = run(loaded, out, progress=False)
    assert s.counts == {"pending": 0, "running": 0, "done": 2, "failed": 1}
    assert s.failures[0][2] == "RuntimeError: injected failure second line"
    monkeypatch.setattr(worker_mod, "ensure_student", real)
    s = run(loaded, out, progress=False, retry_failed=True)
    assert s.ran == 1 and s.counts["done"] == 3 and not s.failures
    with Ledger(out / "ledger.sqlite", create=False) as led:
        assert all(r["error"] is None for r in led.rows())


def test_a_failed_teacher_fails_its_cells_without_running_them(tmp_path):
    text = TINY.replace("classes: 0-4,", "classes: 0-40,").replace("seeds: [0, 1]", "seeds: [0]")
    s = run(load_spec(spec_file(tmp_path, text)), tmp_path / "run", progress=False)
    assert s.counts["failed"] == 3 and s.counts["done"] == 0
    assert all(
        e.startswith("teacher training failed: classes [") and "out of range" in e for _, _, e in s.failures
    )
    assert not (tmp_path / "run" / "students").exists()
    # one cause: the teacher's own error, shared by the 3 cells
    (cause,) = s.causes
    assert cause.teacher and cause.error.startswith("classes [") and "out of range" in cause.error
    labels = ["finetune(lr=0.01)", "finetune(lr=0.05)", "linear-probe"]
    assert [w for _, w in cause.cells] == [f"digits-a/{m}/seed 0" for m in labels]
    text = s.failure_text()
    assert "because training its teacher failed:\n  classes [" in text and "all 3 failed cells" in text


MISSING = """\
name: missing
scenarios:
  - name: no-teacher-data
    teacher: {arch: smallcnn, arch_kwargs: {width: 4, hidden: 16}, data: "imagefolder:/nonexistent/teach",
              epochs: 1, seed: 0}
    student: {data: digits, classes: 5-9, train_size: 5, per_class: true}
  - name: no-student-data
    teacher: {arch: smallcnn, arch_kwargs: {width: 4, hidden: 16}, data: digits, classes: 0-4,
              epochs: 1, seed: 0}
    student: {data: "imagefolder:/nonexistent/stud", train_size: 5, per_class: true}
methods:
  - name: finetune
    params: {epochs: 1}
  - name: linear-probe
    params: {epochs: 1}
defects:
  - name: penultimate
    params: {steps: 2}
seeds: [0]
audit: {max_samples: 20}
"""


def test_failed_run_prints_the_first_cause_and_its_fix(tmp_path, capsys):
    """A missing dataset: the teacher's own error (not "teacher failed") and its fix are printed, once."""
    out, p = tmp_path / "run", spec_file(tmp_path, MISSING)
    first = expand(load_spec(p))[0].id
    code, stdout, err = cli(capsys, "run", str(p), "--out", str(out), "-q")
    assert code == 3 and "0 done, 4 failed" in stdout
    lines = err.splitlines()
    assert lines[0] == (
        f"4 cells failed; the first, no-teacher-data/finetune/seed 0 (cell {first}), "
        "because training its teacher failed:"
    )
    assert (
        lines[1]
        == "  image folder /nonexistent/teach does not exist (fix: check the path after imagefolder:)"
    )
    assert lines[2] == "  (2 of the 4 failed cells have this cause)"
    assert lines[3] == "  2 more for 1 other cause:"
    assert lines[4] == (
        "  - 2 × first no-student-data/finetune/seed 0: image folder /nonexistent/stud does not exist"
        " (fix: check the path after imagefolder:)"
    )
    assert lines[5] == "fix the cause, then rerun with --retry-failed" and len(lines) == 6
    assert "teacher training failed" not in err  # the ledger's prefix is not the cause
    # a rerun without --retry-failed runs nothing and still says why the cells failed
    code, _, err2 = cli(capsys, "run", str(p), "--out", str(out), "-q")
    assert code == 3 and err2 == err


def test_missing_fashion_mnist_names_the_dataset_and_how_to_get_it(tmp_path, capsys, monkeypatch):
    import safereuse.data as D
    import safereuse.data.sources as S

    monkeypatch.setattr(S, "DEBIAN_FASHION_DIR", tmp_path / "none")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SAFEREUSE_DATA", raising=False)
    monkeypatch.setenv("SAFEREUSE_FASHION_MNIST_URL", "http://127.0.0.1:9/")  # discard port: refused at once
    D._RAW_CACHE.clear()
    text = TINY.replace("data: digits, classes: 0-4", "data: fashion-mnist, classes: 0-4")
    try:
        code, _, err = cli(capsys, "run", str(spec_file(tmp_path, text)), "--out", str(tmp_path / "r"), "-q")
    finally:
        D._RAW_CACHE.clear()
    assert code == 3
    assert "6 cells failed" in err and "because training its teacher failed" in err
    assert "Fashion-MNIST was not found" in err and "apt-get install dataset-fashion-mnist" in err
    assert err.count("Fashion-MNIST was not found") == 1 and "all 6 failed cells have this cause" in err


def test_failure_text_groups_causes_and_cuts_the_others():
    from safereuse.runner.core import RunSummary

    long = "ValueError: " + "x" * 400
    fails = [
        ("c1", "a/m/seed 0", "RuntimeError: boom"),
        ("c2", "a/m/seed 1", long),
        ("c3", "b/m/seed 0", "teacher training failed: no data (fix: get it)"),
        ("c4", "b/m/seed 1", "RuntimeError: boom"),
        ("c5", "c/m/seed 0", "E1"),
        ("c6", "d/m/seed 0", "E2"),
    ]
    s = RunSummary(Path("run"), "h", 6, 6, 0, {}, fails)
    assert [(c.error[:12], c.teacher, len(c.cells)) for c in s.causes] == [
        ("RuntimeError", False, 2),
        ("ValueError: ", False, 1),
        ("no data (fix", True, 1),
        ("E1", False, 1),
        ("E2", False, 1),
    ]
    lines = s.failure_text(others=3, width=50).splitlines()
    assert lines[:4] == [
        "6 cells failed; the first, a/m/seed 0 (cell c1), with:",
        "  RuntimeError: boom",
        "  (2 of the 6 failed cells have this cause)",
        "  4 more for 4 other causes:",
    ]
    assert lines[4] == "  - 1 × first a/m/seed 1: ValueError: " + "x" * 37 + "…"
    assert lines[5] == "  - 1 × first b/m/seed 0: its teacher failed: no data (fix: get it)"
    assert lines[6] == "  - 1 × first c/m/seed 0: E1"
    assert lines[7] == "  - … and 1 more (see `safereuse report run`)"
    assert lines[8].startswith("fix the cause") and len(lines) == 9
    assert RunSummary(Path("run"), "h", 1, 1, 0, {}, []).failure_text() == ""


def test_running_cells_of_a_killed_run_are_rerun(tmp_path):
    loaded = load_spec(spec_file(tmp_path, TINY.replace("seeds: [0, 1]", "seeds: [0]")))
    out = tmp_path / "run"
    run(loaded, out, progress=False)
    cells = expand(loaded)
    with Ledger(out / "ledger.sqlite", create=False) as led:
        led.mark_running(cells[1].id)  # as a SIGKILLed run leaves it
    s = run(loaded, out, progress=False)
    assert s.ran == 1 and s.counts["done"] == 3


def test_local_process_pool(tmp_path):
    text = TINY.replace("lr: [0.01, 0.05]", "lr: 0.01").replace("seeds: [0, 1]", "seeds: [0]")
    s = run(load_spec(spec_file(tmp_path, text)), tmp_path / "run", jobs=2, progress=False)
    assert s.counts["done"] == 2 and not s.failures


# -- bad input leaves the ledger untouched ---------------------------------------------------------
def _fingerprint(out: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(out)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in out.rglob("*")
        if p.is_file()
    }


def test_bad_input_one_line_errors_ledger_untouched(tmp_path, capsys):
    p = spec_file(
        tmp_path, TINY.replace("seeds: [0, 1]", "seeds: [0]").replace("lr: [0.01, 0.05]", "lr: 0.01")
    )
    out = tmp_path / "run"
    assert cli(capsys, "run", str(p), "--out", str(out), "-q")[0] == 0
    before = _fingerprint(out)

    other = spec_file(tmp_path, TINY.replace("steps: 2", "steps: 3"), "other.yaml")
    code, _, err = cli(capsys, "run", str(other), "--out", str(out), "-q")
    assert_one_line_error(code, err, "different spec", "--force")
    bad = spec_file(tmp_path, TINY.replace("name: finetune", "name: nosuch"), "bad.yaml")
    code, _, err = cli(capsys, "run", str(bad), "--out", str(out), "-q")
    assert_one_line_error(code, err, "unknown method 'nosuch'", "line 8")
    code, _, err = cli(
        capsys, "run", str(p), "--out", str(out), "--executor", "ray", "--address", "127.0.0.1:9", "-q"
    )
    assert_one_line_error(code, err)
    assert "Ray" in err
    code, _, err = cli(capsys, "run", str(p), "--out", str(out), "--executor", "dask", "-q")
    assert_one_line_error(code, err, "unknown executor")
    assert _fingerprint(out) == before

    # unwritable: a run directory below a regular file; a run directory that is a file
    code, _, err = cli(capsys, "run", str(p), "--out", str(p / "run"), "-q")
    assert_one_line_error(code, err, "not a directory")
    code, _, err = cli(capsys, "run", str(p), "--out", str(p), "-q")
    assert_one_line_error(code, err, "is a file")
    # a non-empty directory that is not a run directory
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    code, _, err = cli(capsys, "run", str(p), "--out", str(tmp_path / "stuff"), "-q")
    assert_one_line_error(code, err, "not a safereuse run directory")
    assert sorted(os.listdir(tmp_path / "stuff")) == ["notes.txt"]


def test_force_adds_a_new_spec_to_a_run_directory(tmp_path, capsys):
    base = TINY.replace("seeds: [0, 1]", "seeds: [0]").replace("lr: [0.01, 0.05]", "lr: 0.01")
    out = tmp_path / "run"
    run(load_spec(spec_file(tmp_path, base)), out, progress=False)
    other = load_spec(spec_file(tmp_path, base.replace("seeds: [0]", "seeds: [0, 1]"), "o.yaml"))
    with pytest.raises(SafeReuseError, match="different spec"):
        run(other, out, progress=False)
    s = run(other, out, progress=False, force=True)
    assert s.ran == 2 and s.skipped == 2  # seed 0's cells are the same cells: reused
    assert json.loads((out / "spec.json").read_text())["spec_hash"] == other.spec.spec_hash()


def test_ray_address_that_does_not_answer_fails_fast(tmp_path, capsys):
    pytest.importorskip("ray")
    p = spec_file(tmp_path)
    t0 = time.monotonic()
    code, _, err = cli(
        capsys,
        "run",
        str(p),
        "--out",
        str(tmp_path / "r"),
        "--executor",
        "ray",
        "--address",
        "127.0.0.1:9",
        "-q",
    )
    assert_one_line_error(code, err, "does not answer", "127.0.0.1:9")
    assert time.monotonic() - t0 < 20
    assert not (tmp_path / "r").exists()


# -- SIGKILL in the middle of a run ----------------------------------------------------------------
KILL_SPEC = (
    TINY.replace("lr: [0.01, 0.05]", "lr: [0.01, 0.02, 0.05]")
    .replace("params: {epochs: 1}\ndefects", "params: {epochs: 3}\ndefects")
    .replace("seeds: [0, 1]", "seeds: [0]")
)  # 4 cells


def _cli_proc(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "safereuse.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _done_rows(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM cells WHERE status = 'done'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0


def _ledger_state(out: Path) -> dict[str, tuple[str, str]]:
    with Ledger(out / "ledger.sqlite", create=False) as led:
        return {
            r["id"]: (r["status"], json.dumps(_strip_timing(r["metrics"]), sort_keys=True))
            for r in led.rows()
        }


def _strip_timing(m):
    if isinstance(m, dict):
        return {k: _strip_timing(v) for k, v in m.items() if k not in ("seconds", "cached")}
    if isinstance(m, list):
        return [_strip_timing(v) for v in m]
    return m


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_uninterrupted_run(tmp_path):
    p = spec_file(tmp_path, KILL_SPEC)
    n_cells = len(expand(load_spec(p)))
    killed, ref = tmp_path / "killed", tmp_path / "ref"

    proc = _cli_proc("run", str(p), "--out", str(killed), "-q")
    deadline = time.monotonic() + 120
    while _done_rows(killed / "ledger.sqlite") < 1:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no cell finished in time"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    con = sqlite3.connect(killed / "ledger.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    statuses = [r[0] for r in con.execute("SELECT status FROM cells")]
    con.close()
    assert len(statuses) == n_cells and 1 <= statuses.count("done") < n_cells, statuses

    resumed = subprocess.run(
        [sys.executable, "-m", "safereuse.cli", "run", str(p), "--out", str(killed), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    uninterrupted = subprocess.run(
        [sys.executable, "-m", "safereuse.cli", "run", str(p), "--out", str(ref), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert uninterrupted.returncode == 0, uninterrupted.stderr

    a, b = _ledger_state(killed), _ledger_state(ref)
    assert len(a) == n_cells  # no duplicate rows (and none missing)
    assert set(a) == set(b) and all(s == "done" for s, _ in a.values())
    assert a == b  # the same metrics for every cell, whether computed before or after the kill
    with Ledger(killed / "ledger.sqlite", create=False) as led:
        attempts = [r["attempts"] for r in led.rows()]
    assert sum(attempts) >= n_cells and max(attempts) <= 2


# -- Ray -------------------------------------------------------------------------------------------
RAY_HEAD = """
import sys, ray
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
ray.shutdown()
"""


@pytest.mark.slow
def test_ray_executor_runs_a_two_cell_grid_on_a_local_instance(tmp_path):
    pytest.importorskip("ray")
    text = TINY.replace("lr: [0.01, 0.05]", "lr: 0.01").replace("seeds: [0, 1]", "seeds: [0]")
    p = spec_file(tmp_path, text)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(
        [sys.executable, "-c", RAY_HEAD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        address = head.stdout.readline().strip()
        assert address, "the Ray head did not start"
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "safereuse.cli",
                "run",
                str(p),
                "--out",
                str(tmp_path / "r"),
                "--executor",
                "ray",
                "--address",
                address,
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=400,
            env=env,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        assert "2 cells: 2 done, 0 failed" in res.stdout
    finally:
        head.stdin.close()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
    with Ledger(tmp_path / "r" / "ledger.sqlite", create=False) as led:
        rows = led.rows()
    assert len(rows) == 2 and all(r["status"] == "done" for r in rows)


def test_ledger_supersedes_cells_a_spec_no_longer_schedules(tmp_path):
    """The same YAML with a method's new defaults gives new cell ids: the report and counts show only
    the current grid, and the old rows (their results) stay in the ledger under another tag."""
    from types import SimpleNamespace

    def cell(i: str) -> SimpleNamespace:
        return SimpleNamespace(id=i, order=0, scenario="s", method="m", label="m", seed=0, config={"i": i})

    with Ledger(tmp_path / "ledger.sqlite") as led:
        led.add_cells([cell("a"), cell("b")], "h")
        led.add_cells([cell("b"), cell("c")], "h")
        assert sorted(r["id"] for r in led.rows("h")) == ["b", "c"]
        assert [r["id"] for r in led.rows("h~superseded")] == ["a"]
        assert led.status_counts("h")["pending"] == 2 and sum(led.status_counts("h").values()) == 2
        led.add_cells([cell("a")], "h")  # scheduled again: back in the grid
        assert [r["id"] for r in led.rows("h")] == ["a"]

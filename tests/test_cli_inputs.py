"""Commands check their inputs before their first expensive step; ``--json`` keeps progress on stderr.

Issue 21, item 7: ``safereuse slice detect --attack nosuch-attack`` used to slice 10,000 benign inputs
and fit a tree before saying the attack was unknown, and offered text attacks for an image model;
``reengineer --json`` ran silently for minutes (``-q`` is the way to silence the bars).
"""

from __future__ import annotations

import importlib
import json
import time

import pytest

from cli_helpers import assert_one_line_error, run_cli
from safereuse.applications import detect as detect_mod
from safereuse.artifacts import load_model
from safereuse.defects.modality import defects_for


@pytest.fixture
def no_fit(monkeypatch):
    """Fail the test if a detector starts fitting (slicing inputs, growing a tree)."""

    def fit(*_a, **_k):
        raise AssertionError("a detector was fitted before the inputs were checked")

    monkeypatch.setattr(detect_mod.SliceDetector, "fit", fit)


def _detect(capsys, model, *args: str) -> tuple[int, str, str]:
    return run_cli(capsys, "slice", "detect", "--model", str(model), *args)


def test_unknown_attack_fails_before_any_slicing(capsys, digits_teacher_dir, no_fit):
    t0 = time.perf_counter()
    code, out, err = _detect(capsys, digits_teacher_dir, "--attack", "nosuch-attack")
    assert time.perf_counter() - t0 < 20
    assert code == 2 and not out
    assert_one_line_error(code, err, "unknown attack 'nosuch-attack'")
    offered = err.split("use one of:")[1]
    assert "fgsm" in offered and "jsma" in offered
    for text_attack in defects_for("text", crafts=True):  # an image model is offered image attacks only
        assert f" {text_attack}," not in offered and not offered.rstrip(")\n").endswith(text_attack)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--attack", "pwws"], "pwws is an attack on text models, not on image models"),
        (["--attack", "badnets"], "'badnets' is not an attack"),
        (["--attack", "fgsm", "-p", "eps=-1"], "eps=-1"),
        (["--attack", "fgsm", "--detector", "nosuch"], "nosuch"),
        (
            ["--attack", "fgsm", "--attack", "paper", "--attack", "nosuch-attack"],
            "unknown attack 'nosuch-attack'",
        ),
    ],
)
def test_bad_detect_inputs_fail_before_any_slicing(capsys, digits_teacher_dir, no_fit, args, needle):
    code, _, err = _detect(capsys, digits_teacher_dir, *args)
    assert code == 2
    assert_one_line_error(code, err, needle)


def test_prune_and_protect_check_their_inputs_before_loading(capsys, tmp_path, digits_teacher_dir):
    for cmd, args, needle in (
        (
            "prune",
            ["--target-classes", "8", "--ratio", "0.5"],
            "target class 8 is outside the model's classes",
        ),
        ("prune", ["--target-classes", "1", "--ratio", "0.5", "--criterion", "nosuch"], "nosuch"),
        ("protect", ["--target-classes", "9"], "target class 9 is outside the model's classes"),
        ("protect", ["--hide", "1.5"], "hide 1.5 is outside (0, 1)"),
    ):
        out = tmp_path / cmd
        code, _, err = run_cli(
            capsys, "slice", cmd, "--model", str(digits_teacher_dir), "--out", str(out), *args
        )
        assert_one_line_error(code, err, needle)
        assert code == 2 and not out.exists()


def test_json_keeps_progress_bars_on_stderr_and_q_silences_them(capsys, tmp_path, digits_teacher_dir):
    base = ["slice", "--model", str(digits_teacher_dir), "--limit", "8", "--json"]
    code, out, err = run_cli(capsys, *base, "--out", str(tmp_path / "a.safetensors"))
    assert code == 0, err
    assert json.loads(out)["count"] == 8  # stdout is the JSON alone
    assert "profile" in err and "slice" in err  # the bars, on stderr
    code, out, err = run_cli(capsys, *base, "--out", str(tmp_path / "b.safetensors"), "-q")
    assert code == 0 and json.loads(out)["count"] == 8
    assert err == ""


def test_reengineer_json_shows_progress_on_stderr(capsys, tmp_path, digits_teacher_dir):
    out = tmp_path / "r"
    code, stdout, err = run_cli(
        capsys, "reengineer", "--model", str(digits_teacher_dir), "--target-classes", "3", "--binary",
        "-p", "epochs=1", "--out", str(out), "--json", "--threads", "1",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["out"] == str(out)
    assert "epoch" in err  # SeaM's search bar
    assert load_model(out).manifest["parent"]["hash"] == load_model(digits_teacher_dir).hash


def test_teacher_train_checks_the_backdoor_before_loading_data(capsys, tmp_path, monkeypatch):
    import safereuse.api.teacher as T

    def no_load(*_a, **_k):
        raise AssertionError("data loaded before the backdoor was checked")

    monkeypatch.setattr(T, "load_data", no_load)
    for args, needle in (
        (["--backdoor", "fgsm"], "'fgsm' is not a backdoor"),
        (["--backdoor", "badnets", "-p", "poison_rate=7"], "poison_rate=7 is invalid"),
        (["-p", "nosuch=1"], "nosuch"),
    ):
        code, _, err = run_cli(
            capsys,
            "teacher",
            "train",
            "--arch",
            "smallcnn",
            "--data",
            "digits",
            "--out",
            str(tmp_path / "t"),
            *args,
        )
        assert_one_line_error(code, err, needle)
        assert code == 2


def test_audit_refuses_a_defect_of_the_other_input_kind_before_loading(
    capsys, digits_teacher_dir, digits_student_dir, monkeypatch
):
    A = importlib.import_module("safereuse.api.audit")  # the module: `api.audit` is the function

    def no_load(*_a, **_k):
        raise AssertionError("data loaded before the defects were checked")

    monkeypatch.setattr(A, "load_data", no_load)
    code, _, err = run_cli(
        capsys, "audit", "--teacher", str(digits_teacher_dir), "--student", str(digits_student_dir),
        "--defect", "pwws",
    )  # fmt: skip
    assert_one_line_error(code, err, "pwws is a defect of text models, but the student takes images")
    assert code == 2 and "fgsm" in err and "greedy-swap" not in err


@pytest.mark.parametrize(
    "argv, needle, where",
    [
        (["reengineer", "--bogus"], "No such option: --bogus", "safereuse reengineer --help"),
        (
            ["reengineer", "--target-classes", "3", "--out", "x"],
            "Missing option '--model'",
            "reengineer --help",
        ),
        (["no-such-command"], "No such command", "'safereuse --help'"),
        (["slice", "detect", "--bogus"], "No such option", "safereuse slice detect --help"),
        (["run", "spec.yaml", "--jobs", "many"], "Invalid value for '--jobs'", "safereuse run --help"),
    ],
)
def test_usage_errors_are_one_line(capsys, argv, needle, where):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert_one_line_error(code, err, needle, where)
    assert "╭" not in err and "Usage:" not in err  # no rich box, no usage block


def test_help_and_success_exit_zero(capsys):
    code, out, err = run_cli(capsys, "--help")
    assert code == 0 and "reengineer" in out and not err
    code, out, err = run_cli(capsys, "list", "methods")
    assert code == 0 and "finetune" in out

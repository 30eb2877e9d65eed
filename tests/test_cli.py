"""The CLI contract: the command forms other work builds on, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli_helpers import assert_one_line_error
from cli_helpers import run_cli as run
from test_methods import BAD_PARAMS


def test_train_transfer_evaluate_round_trip(capsys, tmp_path):
    code, out, err = run(
        capsys,
        "teacher",
        "train",
        "--arch",
        "smallcnn",
        "--data",
        "digits",
        "--classes",
        "0-4",
        "--epochs",
        "1",
        "--seed",
        "1",
        "--out",
        str(tmp_path / "t"),
        "-q",
        "-p",
        "width=8",
    )
    assert code == 0, err
    assert "test acc" in out
    man = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert (
        man["role"] == "teacher"
        and man["arch_kwargs"]["width"] == 8
        and man["data"]["classes"] == [0, 1, 2, 3, 4]
    )
    assert man["seed"] == 1 and man["method"]["config"]["epochs"] == 1 and "safereuse_version" in man
    code, out, err = run(
        capsys,
        "transfer",
        "--teacher",
        str(tmp_path / "t"),
        "--data",
        "digits",
        "--classes",
        "5-9",
        "--train-size",
        "50",
        "--method",
        "finetune-last-k",
        "--param",
        "k=2",
        "--param",
        "epochs=1",
        "--seed",
        "2",
        "--out",
        str(tmp_path / "s"),
        "-q",
    )
    assert code == 0, err
    sman = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert sman["parent"]["hash"] == man["hash"]
    assert sman["method"]["name"] == "finetune-last-k" and sman["method"]["config"]["k"] == 2
    assert sman["data"]["train_size"] == 50 and sman["seed"] == 2
    code, out, err = run(capsys, "evaluate", "--model", str(tmp_path / "s"), "--json")
    res = json.loads(out)
    assert code == 0 and res["n"] == sman["metrics"]["n_test"]
    assert res["acc"] == pytest.approx(sman["metrics"]["test_acc"])
    code, out, err = run(
        capsys, "evaluate", "--model", str(tmp_path / "t"), "--data", "digits", "--classes", "0-4"
    )
    assert code == 0 and out.startswith("acc ")


LISTED = {
    "models": "resnet8", "datasets": "fashion-mnist", "methods": "finetune", "defects": "gaussian-blur",
    "criteria": "nnslicer", "experiments": "slice-detect",
}  # fmt: skip


@pytest.mark.parametrize("what", sorted(LISTED))
def test_list(capsys, what):
    code, out, _ = run(capsys, "list", what)
    assert code == 0
    assert LISTED[what] in out


def test_list_offers_every_registry(capsys):
    code, _, err = run(capsys, "list", "nope")
    assert code == 2 and err.count("\n") == 1
    assert all(w in err for w in LISTED)


def test_bad_inputs_give_one_line_errors(capsys, tmp_path, digits_teacher_dir, digits_student_dir):
    t = str(digits_teacher_dir)
    cases = [
        (["teacher", "train", "--arch", "resnt8", "--out", str(tmp_path / "x")], "unknown model 'resnt8'"),
        (["teacher", "train", "--data", "mnist-foo", "--out", str(tmp_path / "x")], "unknown dataset"),
        (
            [
                "transfer",
                "--teacher",
                t,
                "--data",
                "digits",
                "--method",
                "nope",
                "--out",
                str(tmp_path / "x"),
            ],
            "unknown method",
        ),
        (
            [
                "transfer",
                "--teacher",
                t,
                "--data",
                "digits",
                "--classes",
                "8-12",
                "--out",
                str(tmp_path / "x"),
            ],
            "out of range",
        ),
        (
            [
                "transfer",
                "--teacher",
                t,
                "--data",
                "digits",
                "--classes",
                "a-b",
                "--out",
                str(tmp_path / "x"),
            ],
            "not a class list",
        ),
        (
            ["transfer", "--teacher", t, "--data", "digits", "--out", str(digits_student_dir)],
            "already exists",
        ),
        (
            [
                "transfer",
                "--teacher",
                str(tmp_path / "missing"),
                "--data",
                "digits",
                "--out",
                str(tmp_path / "x"),
            ],
            "does not exist",
        ),
        (
            [
                "transfer",
                "--teacher",
                t,
                "--data",
                "imagefolder:" + str(tmp_path / "nothing"),
                "--out",
                str(tmp_path / "x"),
            ],
            str(tmp_path / "nothing"),
        ),
        (
            ["transfer", "--teacher", t, "--data", "digits", "-p", "lr", "--out", str(tmp_path / "x")],
            "key=value",
        ),
        (["evaluate", "--model", t, "--classes", "0-2"], "classes"),
    ]
    for argv, needle in cases:
        code, out, err = run(capsys, *argv)
        assert_one_line_error(code, err, needle)
    assert not (tmp_path / "x").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no half-written artifacts


@pytest.mark.parametrize(
    ("name", "key", "value", "problem"), BAD_PARAMS, ids=[f"{c[0]}-{c[1]}" for c in BAD_PARAMS]
)
def test_bad_method_params_give_the_python_message(
    capsys, tmp_path, digits_teacher_dir, name, key, value, problem
):
    # the same table as the Python paths (tests/test_methods.py): the same problem, word for word
    from safereuse.errors import SafeReuseError
    from safereuse.methods import METHODS

    with pytest.raises(SafeReuseError) as ei:
        METHODS.create(name, **{key: value})
    argv = ["transfer", "--teacher", str(digits_teacher_dir), "--data", "digits", "--classes", "5-9"]
    code, _, err = run(
        capsys, *argv, "--method", name, "--param", f"{key}={value}", "--out", str(tmp_path / "s")
    )
    assert code == 2
    assert_one_line_error(code, err, f"error: {problem} (fix: {ei.value.fix})")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("param", "problem"),
    [
        ("lr=abc", "teacher training: lr='abc' is invalid (expected a number > 0)"),
        ("epochs=0", "teacher training: epochs=0 is invalid (expected an integer ≥ 1)"),
        ("optimizer=rmsprop", "teacher training: optimizer='rmsprop' is invalid (expected one of sgd, adam)"),
        ("width=wide", "model 'smallcnn': width='wide' is invalid (expected an integer)"),
        ("lrr=0.1", "teacher training has no parameter 'lrr' (fix: did you mean 'lr'?"),
    ],
)
def test_bad_teacher_params_are_one_line_errors(capsys, tmp_path, param, problem):
    argv = ["teacher", "train", "--arch", "smallcnn", "--data", "digits", "--classes", "0-4"]
    code, _, err = run(capsys, *argv, "--param", param, "--out", str(tmp_path / "t"), "-q")
    assert code == 2
    assert_one_line_error(code, err, f"error: {problem}")
    assert not (tmp_path / "t").exists()


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_corrupt_pickled_and_mismatched_checkpoints(capsys, tmp_path, digits_student_dir):
    bad = _copy(digits_student_dir, tmp_path / "trunc")
    f = bad / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    assert_one_line_error(*run(capsys, "evaluate", "--model", str(bad))[::2], "not a valid safetensors")

    pick = _copy(digits_student_dir, tmp_path / "pickle")
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"fc.weight": Evil()}, pick / "model.safetensors")
    assert_one_line_error(*run(capsys, "evaluate", "--model", str(pick))[::2], "pickle")
    assert not marker.exists()

    mis = _copy(digits_student_dir, tmp_path / "mismatch")
    man = json.loads((mis / "manifest.json").read_text())
    man["arch_kwargs"]["hidden"] = 32
    (mis / "manifest.json").write_text(json.dumps(man))
    assert_one_line_error(*run(capsys, "evaluate", "--model", str(mis))[::2], "does not fit smallcnn")


def test_missing_fashion_mnist_is_a_one_line_error(capsys, tmp_path, monkeypatch):
    import safereuse.data as D
    import safereuse.data.sources as S

    monkeypatch.setattr(S, "DEBIAN_FASHION_DIR", tmp_path / "none")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SAFEREUSE_DATA", raising=False)
    monkeypatch.setenv("SAFEREUSE_FASHION_MNIST_URL", "http://127.0.0.1:9/")  # discard port: refused at once
    D._RAW_CACHE.clear()
    code, _, err = run(capsys, "teacher", "train", "--data", "fashion-mnist", "--out", str(tmp_path / "t"))
    assert_one_line_error(code, err, "dataset-fashion-mnist")
    D._RAW_CACHE.clear()
    assert not (tmp_path / "t").exists()


def test_nan_in_inputs_is_refused():
    from safereuse.data import RawData, build_bundle
    from safereuse.data.core import DataSpec
    from safereuse.errors import SafeReuseError

    x = torch.rand(20, 1, 8, 8)
    x[3, 0, 2, 2] = float("nan")
    raw = RawData(x, torch.arange(20) % 2, torch.rand(4, 1, 8, 8), torch.arange(4) % 2, ["a", "b"])
    with pytest.raises(SafeReuseError, match="NaN"):
        build_bundle(raw, DataSpec("toy"))


def test_console_script_prints_no_traceback(tmp_path):
    exe = Path(sys.executable).with_name("safereuse")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "safereuse.cli"]
    r = subprocess.run([*cmd, "evaluate", "--model", str(tmp_path / "nope")], capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.startswith("error:")


def test_audit_command_table_json_and_errors(capsys, digits_teacher_dir, digits_student_dir):
    t, s = str(digits_teacher_dir), str(digits_student_dir)
    code, out, err = run(
        capsys,
        "audit",
        "--teacher",
        t,
        "--student",
        s,
        "--defect",
        "penultimate",
        "--defect",
        "fgsm",
        "-p",
        "penultimate.steps=3",
        "--max-samples",
        "40",
        "--json",
    )
    assert code == 0, err
    rep = json.loads(out)
    rows = {r["defect"]: r for r in rep["rows"]}
    assert set(rows) == {"penultimate", "fgsm"}
    assert rows["penultimate"]["params"]["steps"] == 3
    for r in rows.values():
        assert {"defect", "acc", "dir", "n"} <= set(r)
        assert r["n"] <= 40
    code, out, err = run(
        capsys, "audit", "--teacher", t, "--student", s, "--defect", "fgsm", "--max-samples", "20"
    )
    assert code == 0 and "fgsm" in out and "DIR" in out
    assert_one_line_error(
        *run(capsys, "audit", "--teacher", t, "--student", s, "--defect", "badnets")[::2],
        "no planted backdoor",
    )
    assert_one_line_error(
        *run(capsys, "audit", "--teacher", t, "--student", s, "--defect", "nope")[::2], "unknown defect"
    )
    assert_one_line_error(*run(capsys, "audit", "--teacher", t, "--student", s, "-p", "eps=3")[::2], "eps=3")
    assert_one_line_error(*run(capsys, "audit", "--teacher", t, "--student", s, "-p", "zzz=1")[::2], "zzz")


def test_backdoor_planted_through_cli_is_stored_and_audited(capsys, tmp_path):
    bd, st = str(tmp_path / "bd"), str(tmp_path / "st")
    code, out, err = run(
        capsys,
        "teacher",
        "train",
        "--arch",
        "smallcnn",
        "--data",
        "digits",
        "--classes",
        "0-4",
        "--epochs",
        "2",
        "--backdoor",
        "badnets",
        "-p",
        "poison_rate=0.2",
        "-p",
        "target=3",
        "-p",
        "width=8",
        "--out",
        bd,
        "-q",
    )
    assert code == 0, err
    assert "ASR" in out
    man = json.loads((tmp_path / "bd" / "manifest.json").read_text())
    assert man["backdoor"]["name"] == "badnets" and man["backdoor"]["target"] == 3
    assert man["arch_kwargs"]["width"] == 8
    assert set(man["extras"]) >= {"backdoor.trigger", "backdoor.mask"}
    code, _, err = run(
        capsys,
        "transfer",
        "--teacher",
        bd,
        "--data",
        "digits",
        "--classes",
        "0-4",
        "--train-size",
        "10",
        "--per-class",
        "-p",
        "epochs=1",
        "--out",
        st,
        "-q",
    )
    assert code == 0, err
    code, out, err = run(capsys, "audit", "--teacher", bd, "--student", st, "--json")
    assert code == 0, err
    rows = {r["defect"]: r for r in json.loads(out)["rows"]}
    assert set(rows) == {"penultimate", "nc-guided", "badnets"}  # the planted backdoor joins the defaults
    assert rows["badnets"]["asr"] is not None and rows["badnets"]["target"] is not None
    code, _, err = run(
        capsys, "teacher", "train", "--data", "digits", "-p", "poison_rate=0.2", "--out", str(tmp_path / "x")
    )
    assert_one_line_error(code, err, "poison_rate")

"""The Python API: manifests are complete recipes; interrupted training resumes."""

from __future__ import annotations

import os

import pytest

from safereuse import api
from safereuse.data import DataSpec


def test_interrupted_teacher_training_resumes(tmp_path, monkeypatch):
    import safereuse.train as T

    spec = DataSpec("digits", classes=[0, 1, 2], train_size=120)
    real = T._lr_factor
    calls = {"n": 0}

    def interrupt_in_epoch_2(cfg, step, steps_per_epoch):
        calls["n"] += 1
        if step == steps_per_epoch + 1:
            raise KeyboardInterrupt
        return real(cfg, step, steps_per_epoch)

    monkeypatch.setattr(T, "_lr_factor", interrupt_in_epoch_2)
    kwargs = dict(out=tmp_path / "t", fit_params={"epochs": 3, "batch_size": 32}, progress=False)
    with pytest.raises(KeyboardInterrupt):
        api.train_teacher("smallcnn", spec, **kwargs)
    assert not (tmp_path / "t").exists()
    partial = [p for p in os.listdir(tmp_path) if p.endswith(".partial")]
    assert len(partial) == 1
    monkeypatch.setattr(T, "_lr_factor", real)
    man = api.train_teacher("smallcnn", spec, **kwargs)
    assert man["fit_result"]["resumed_from"] == 1 and man["fit_result"]["epochs_run"] == 3
    assert os.listdir(tmp_path) == ["t"]  # the partial state is cleaned up


def test_student_manifest_is_a_recipe(digits_teacher_dir, digits_student_dir):
    from safereuse.artifacts import load_model

    t = load_model(digits_teacher_dir).manifest
    s = load_model(digits_student_dir).manifest
    assert s["parent"]["hash"] == t["hash"]
    for key in (
        "arch",
        "arch_kwargs",
        "input",
        "class_names",
        "data",
        "seed",
        "method",
        "metrics",
        "safereuse_version",
        "hash",
    ):
        assert key in s, key
    assert s["class_names"] == ["5", "6", "7", "8", "9"]
    assert s["method"]["config"]["method"] == "finetune"
    assert 0.0 <= s["metrics"]["test_acc"] <= 1.0 and s["metrics"]["n_test"] > 0
    ev = api.evaluate(digits_student_dir)
    assert ev["acc"] == pytest.approx(s["metrics"]["test_acc"])
    lo, hi = ev["ci"]
    assert lo <= ev["acc"] <= hi

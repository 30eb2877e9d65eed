"""The Python API: manifests are complete recipes; interrupted training resumes."""

from __future__ import annotations

import os

import pytest

from safereuse import api
from safereuse.artifacts import load_model
from safereuse.data import DataSpec


def test_interrupted_teacher_training_resumes(tmp_path, monkeypatch):
    import safereuse.train as T

    spec = DataSpec("digits", classes=[0, 1, 2], train_size=120)
    real = T.lr_factor
    calls = {"n": 0}

    def interrupt_in_epoch_2(cfg, step, steps_per_epoch):
        calls["n"] += 1
        if step == steps_per_epoch + 1:
            raise KeyboardInterrupt
        return real(cfg, step, steps_per_epoch)

    monkeypatch.setattr(T, "lr_factor", interrupt_in_epoch_2)
    kwargs = dict(out=tmp_path / "t", fit_params={"epochs": 3, "batch_size": 32}, progress=False)
    with pytest.raises(KeyboardInterrupt):
        api.train_teacher("smallcnn", spec, **kwargs)
    assert not (tmp_path / "t").exists()
    partial = [p for p in os.listdir(tmp_path) if p.endswith(".partial")]
    assert len(partial) == 1
    monkeypatch.setattr(T, "lr_factor", real)
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


def _rows(report):
    return [{k: v for k, v in r.to_dict().items() if k != "seconds"} for r in report.rows]


def test_audit_of_models_built_in_python_equals_audit_of_their_artifacts(tmp_path):
    """The audit needs no files: a contract model plus its metadata as arguments gives the very rows
    that its saved artifact gives (manifest + extras as the metadata source)."""
    import copy

    import torch

    from safereuse.artifacts import save_model
    from safereuse.data import load_data
    from safereuse.defects.backdoors import BadNets, backdoor_from_record
    from safereuse.models import create_model
    from safereuse.train import FitConfig, fit

    data = load_data("digits", classes=[0, 1, 2], train_size=90)
    torch.manual_seed(0)
    teacher = create_model("smallcnn", num_classes=3, width=8, hidden=32)
    plant = BadNets(poison_rate=0.2).plant(teacher, data, FitConfig(epochs=2, progress=False, lr=0.05))
    student = copy.deepcopy(teacher)
    fit(student, data.train, data.val, FitConfig(epochs=1, progress=False, lr=0.05))
    meta = {"data": data.spec.to_dict(), "class_names": data.class_names}
    save_model(teacher, tmp_path / "t", {**meta, "backdoor": plant.record}, plant.extras)
    save_model(student, tmp_path / "s", meta)

    kw = dict(max_samples=24, batch_size=16, device="cpu", seed=1)
    names = ["penultimate", "nc-guided", "fgsm", "badnets"]
    steps = {"steps": 2}
    from_files = api.audit(tmp_path / "t", tmp_path / "s", None, names, params=steps, **kw)
    in_memory = api.audit(
        teacher, student, data, names, params=steps, teacher_data=data.spec, backdoor=plant, **kw
    )
    assert _rows(in_memory) == _rows(from_files)
    assert [r.defect for r in in_memory.rows] == names
    # the teacher's task came from teacher_data: same task, so every row has its teacher reference
    assert all(r.teacher_rate is not None for r in in_memory.rows)
    assert in_memory.teacher["backdoor"] == from_files.teacher["backdoor"] == plant.record
    assert in_memory.teacher["path"] is None and from_files.teacher["hash"]
    # the planted Backdoor itself is metadata enough (its trigger and resolved target)
    planted = backdoor_from_record(plant.record, plant.extras)
    bd = api.audit(teacher, student, data, ["badnets"], teacher_data=data.spec, backdoor=planted, **kw)
    assert _rows(bd) == _rows(from_files)[3:]


def test_audit_defaults_and_parameter_routing(digits_teacher_dir, digits_student_dir):
    from safereuse.errors import SafeReuseError

    assert api.audit_defects(None) == [("penultimate", {}), ("nc-guided", {})]
    assert api.audit_defects([], {"eps": 0.1, "nc-guided.k": 5}, backdoor="blend") == [
        ("penultimate", {"eps": 0.1}),
        ("nc-guided", {"eps": 0.1, "k": 5}),
        ("blend", {}),  # eps is not a blend parameter
    ]
    # "-" arrives as "_" from --param parsing; a pair's own params win over routed ones
    assert api.audit_defects([("nc-guided", {"k": 2}), "pgd"], {"nc_guided.steps": 3, "k": 9}) == [
        ("nc-guided", {"steps": 3, "k": 2}),
        ("pgd", {}),
    ]
    with pytest.raises(SafeReuseError, match="'mimic' is not among the audited defects"):
        api.audit_defects(["pgd"], {"mimic.steps": 2})
    with pytest.raises(SafeReuseError, match="no audited defect has a parameter 'zzz'"):
        api.audit_defects(None, {"zzz": 1})
    with pytest.raises(SafeReuseError, match="unknown defect"):
        api.audit_defects(["penultimat"])

    rep = api.audit(digits_teacher_dir, digits_student_dir, max_samples=8, params={"steps": 1}, device="cpu")
    assert [r.defect for r in rep.rows] == ["penultimate", "nc-guided"]  # the defaults, on the student's data
    assert rep.data["classes"] == [5, 6, 7, 8, 9] and rep.n_samples == 8
    from safereuse.models import create_model

    with pytest.raises(SafeReuseError, match="records no dataset"):
        api.audit(create_model("smallcnn", 5), create_model("smallcnn", 5), defects=["fgsm"])


def test_every_derived_manifest_names_its_parent_the_same_way(
    tmp_path, digits_teacher_dir, digits_student_dir
):
    from safereuse.artifacts import parent_record

    teacher = load_model(digits_teacher_dir)
    want = parent_record(teacher)
    pruned = api.prune_model(digits_teacher_dir, [1, 3], out=tmp_path / "p", ratio=0.5, criterion="channel",
                             params={"finetune_epochs": 0}, progress=False)  # fmt: skip
    for path in (digits_student_dir, pruned["out"]):
        man = load_model(path).manifest
        assert man["parent"] == want, path
        assert man["role"] in ("student", "pruned") and "fit_result" in man and "backdoor" in man

"""The inheritance audit on tiny teacher/student artifacts: schema, hand re-computation, errors."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, replace
from typing import ClassVar

import pytest
import torch

from safereuse.artifacts import load_model, save_model
from safereuse.data import Split, load_data
from safereuse.defects import DEFECTS, Defect, ProbeResult, audit, craft_batched
from safereuse.defects.backdoors import BadNets
from safereuse.defects.probe import AuditedModel, target_label
from safereuse.errors import SafeReuseError
from safereuse.metrics import dir_adversarial, dir_nc
from safereuse.models import create_model
from safereuse.train import FitConfig, fit, predict

FAST = dict(progress=False, batch_size=32, lr=0.05)
N = 24


def _manifest(data, role, **extra):
    return {"role": role, "data": data.spec.to_dict(), "class_names": data.class_names, **extra}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A BadNets teacher on digits 0-2, a clean copy of it, and two students (same / other task)."""
    root = tmp_path_factory.mktemp("audit")
    torch.manual_seed(0)
    t_data = load_data("digits", classes=[0, 1, 2])  # ~400 images: enough steps for the backdoor to take
    teacher = create_model("smallcnn", num_classes=3, width=8, hidden=32)
    bd = BadNets(poison_rate=0.2)
    res = bd.plant(teacher, t_data, FitConfig(epochs=10, **FAST))
    assert res.record["teacher_asr"] > 0.9, res.record  # the fixture itself must hold a working backdoor
    save_model(teacher, root / "teacher", _manifest(t_data, "teacher", backdoor=res.record), res.extras)
    save_model(teacher, root / "clean_teacher", _manifest(t_data, "teacher"))

    same = copy.deepcopy(teacher)
    fit(same, t_data.train, t_data.val, FitConfig(epochs=1, **FAST))
    save_model(same, root / "student_same", _manifest(t_data, "student"))

    s_data = load_data("digits", classes=[3, 0, 4], train_size=90)
    other = copy.deepcopy(teacher)
    other.reset_head(3, seed=0)
    fit(other, s_data.train, s_data.val, FitConfig(epochs=3, **FAST))
    save_model(other, root / "student_other", _manifest(s_data, "student"))
    return root, t_data, s_data


DEFECT_LIST = [
    ("penultimate", {"steps": 3}),
    ("nc-guided", {"steps": 2, "strategy": "dlfuzz"}),
    ("pgd", {"steps": 3}),
    ("badnets", {}),
]


def test_audit_same_task_rows_schema_and_recomputation(setup, assert_no_trace):
    root, t_data, _ = setup
    teacher, student = load_model(root / "teacher"), load_model(root / "student_same")
    # models left as found: on the CPU, eval mode, no hooks, no grads, weights bit-identical
    with assert_no_trace(teacher.model, student.model, state=True):
        rep = audit(teacher, student, t_data, DEFECT_LIST, max_samples=N, batch_size=16, device="cpu", seed=3)
    assert [r.defect for r in rep.rows] == ["penultimate", "nc-guided", "pgd", "badnets"]
    assert [r.kind for r in rep.rows] == ["adversarial", "nc-guided", "whitebox", "backdoor"]
    assert rep.n_samples == N and rep.seed == 3

    # hand re-computation of ACC, |C| and the penultimate / nc-guided DIR on the same images
    idx = torch.arange(N) * len(t_data.test) // N
    x, y = t_data.test.x[idx], t_data.test.y[idx]
    s_clean = predict(student.model, x).argmax(1)
    c = int((s_clean == y).sum())
    assert rep.acc.k == c and rep.acc.n == N
    for row, form in zip(rep.rows[:2], (dir_adversarial, dir_nc), strict=True):
        d = DEFECTS.create(row.defect, **row.params)
        assert d.seed == 3  # the audit's seed reaches defects that take one
        x_adv = craft_batched(d, teacher.model, x, y, batch_size=16)
        expect = form(y, s_clean, predict(student.model, x_adv).argmax(1))
        assert (row.dir, row.n, row.ci_low, row.ci_high) == pytest.approx(
            (expect.value, expect.n, expect.ci_low, expect.ci_high)
        )
        assert row.n == c and row.teacher_rate is not None  # same task → teacher reference

    pgd = rep.rows[2]
    assert pgd.crafted_on == "student" and pgd.rob is not None and pgd.rates["rob"].n == N
    assert pgd.params["eps"] == pytest.approx(8 / 255) and pgd.params["steps"] == 3

    bd = rep.rows[3]
    assert bd.crafted_on == "trigger" and bd.target == {"class": 0, "label": 0}
    assert bd.asr is not None and bd.rates["asr"].n == int((y != 0).sum())
    assert bd.teacher_rate is not None and bd.teacher_rate > 50  # the planted backdoor fires on the teacher
    for a in (teacher, student):
        assert not a.model.training and all(p.grad is None and p.requires_grad for p in a.model.parameters())


def test_audit_json_and_table(setup):
    root, t_data, s_data = setup
    teacher, student = load_model(root / "teacher"), load_model(root / "student_other")
    rep = audit(teacher, student, s_data, [("penultimate", {"steps": 2}), ("badnets", {})], max_samples=16)
    doc = json.loads(rep.to_json(root / "report.json"))
    assert json.loads((root / "report.json").read_text()) == doc
    assert doc["schema"] == "safereuse-audit/1" and doc["seed"] == 0
    assert doc["teacher"]["hash"] == teacher.hash and doc["student"]["hash"] == student.hash
    assert doc["data"]["name"] == "digits" and doc["data"]["classes"] == [3, 0, 4]
    assert doc["teacher"]["backdoor"]["name"] == "badnets"
    row = doc["rows"][0]
    keys = ("defect", "params", "kind", "teacher_rate", "acc", "dir", "asr", "rob", "n", "ci_low", "ci_high")
    assert all(key in row for key in keys)
    assert row["teacher_rate"] is None  # different task: no teacher reference
    assert row["asr"] is None and row["rob"] is None
    assert 0 <= row["n"] <= 16 and row["params"]["neuron"] == 0
    # BadNets target: original class 0, which is label 1 of the student's task [3, 0, 4]
    assert doc["rows"][1]["target"] == {"class": 0, "label": 1} and doc["rows"][1]["asr_n"] is not None
    table = rep.table()
    assert "penultimate(steps=2)" in table and "badnets" in table and "DIR" in table


def test_backdoor_target_mapping_into_the_student_label_space(setup):
    root, t_data, s_data = setup
    teacher = AuditedModel.from_artifact(load_model(root / "teacher"))
    student = AuditedModel.from_artifact(load_model(root / "student_other"))
    spec = s_data.spec.to_dict()
    assert target_label(0, teacher, student, spec) == 1
    assert target_label(1, teacher, student, spec) is None  # class 1 is not in the student's task
    student.data["name"] = "fashion-mnist"  # another dataset's class ids mean nothing here
    assert target_label(0, teacher, student, spec) is None


def test_cache_makes_the_second_audit_a_hit(setup, tmp_path):
    root, t_data, _ = setup
    teacher, student = load_model(root / "clean_teacher"), load_model(root / "student_same")
    spec = [("penultimate", {"steps": 2})]
    a = audit(teacher, student, t_data, spec, max_samples=12, cache_dir=tmp_path)
    b = audit(teacher, student, t_data, spec, max_samples=12, cache_dir=tmp_path)
    assert (a.rows[0].cached, b.rows[0].cached) == (False, True)
    assert a.rows[0].dir == b.rows[0].dir or (math.isnan(a.rows[0].dir) and math.isnan(b.rows[0].dir))
    assert len(list(tmp_path.rglob("*.safetensors"))) == 1


def test_audit_errors(setup, tmp_path):
    root, t_data, s_data = setup
    teacher, clean = load_model(root / "teacher"), load_model(root / "clean_teacher")
    student = load_model(root / "student_same")

    with pytest.raises(SafeReuseError, match="no planted backdoor"):
        audit(clean, student, t_data, [("badnets", {})], max_samples=4)
    with pytest.raises(SafeReuseError, match="carries a 'badnets' backdoor"):
        audit(teacher, student, t_data, [("blend", {})], max_samples=4)
    with pytest.raises(SafeReuseError, match="unknown defect"):
        audit(teacher, student, t_data, [("penultimat", {})], max_samples=4)
    for eps in (-0.1, 1.5):
        with pytest.raises(SafeReuseError, match="eps"):
            audit(teacher, student, t_data, [("penultimate", {"eps": eps})], max_samples=4)
    with pytest.raises(SafeReuseError, match="no defects"):
        audit(teacher, student, t_data, [], max_samples=4)
    empty = replace(t_data, test=Split(t_data.test.x[:0], t_data.test.y[:0]))
    with pytest.raises(SafeReuseError, match="empty"):
        audit(teacher, student, empty, [("penultimate", {})])
    with pytest.raises(SafeReuseError, match="not the student's task"):
        audit(teacher, student, s_data, [("penultimate", {})], max_samples=4)
    with pytest.raises(SafeReuseError, match="max_samples"):
        audit(teacher, student, t_data, [("penultimate", {})], max_samples=0)

    wide = create_model("smallcnn", num_classes=3, image_size=32, width=8, hidden=32)
    save_model(wide, tmp_path / "wide", {"role": "student"})
    with pytest.raises(SafeReuseError, match="inputs"):
        audit(teacher, load_model(tmp_path / "wide"), t_data, [("penultimate", {})], max_samples=4)
    with pytest.raises(SafeReuseError, match="Artifact"):  # a bare module lacks the model contract
        audit(teacher.model.head, student, t_data, [("penultimate", {})])  # type: ignore[arg-type]


def test_a_new_kind_of_defect_is_one_class_with_a_probe(setup):
    """The audit asks no defect what kind it is: a class with its own probe is audited as it is."""

    @dataclass
    class Invert(Defect):  # not registered: an instance is audited directly
        kind: ClassVar[str] = "photometric"
        scale: float = 1.0

        def probe(self, ctx):
            s_inv = ctx.predict(ctx.student.model, self.scale - ctx.x)
            return ProbeResult({"dir": dir_nc(ctx.y, ctx.student_clean, s_inv)}, crafted_on="student")

    root, t_data, _ = setup
    teacher, student = load_model(root / "teacher"), load_model(root / "student_same")
    rep = audit(teacher, student, t_data, [Invert(scale=1.0)], max_samples=N)
    (row,) = rep.rows
    idx = torch.arange(N) * len(t_data.test) // N
    x, y = t_data.test.x[idx], t_data.test.y[idx]
    expect = dir_nc(y, predict(student.model, x).argmax(1), predict(student.model, 1.0 - x).argmax(1))
    assert (row.kind, row.params, row.crafted_on) == ("photometric", {"scale": 1.0}, "student")
    assert (row.dir, row.n) == (expect.value, expect.n) and row.to_dict()["kind"] == "photometric"

    @dataclass
    class Mute(Defect):
        def probe(self, ctx):
            return ProbeResult({}, crafted_on="student")

    with pytest.raises(SafeReuseError, match="no DIR"):
        audit(teacher, student, t_data, [Mute()], max_samples=4)

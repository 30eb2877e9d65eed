"""Transfer methods: a declarative table drives the contract tests (a new method is a new row)."""

from __future__ import annotations

import pytest
import torch

from safereuse.artifacts import load_model
from safereuse.data import load_data
from safereuse.errors import SafeReuseError
from safereuse.methods import METHODS
from safereuse.models import create_model

FAST = {"epochs": 1, "batch_size": 16}

# method name → (kwargs, parameter-name prefixes that must stay bit-identical to the teacher)
TABLE = {
    "finetune": ({}, []),
    "finetune-last-k": ({"k": 2}, ["conv1.", "bn1.", "conv2.", "bn2."]),
    "linear-probe": ({}, ["conv1.", "bn1.", "conv2.", "bn2.", "fc1."]),
    "retrain": ({}, []),
    "remos": ({"ratio": 0.1}, []),
    "mag-prune": ({"ratio": 0.5}, []),
    "delta": ({}, []),
    "delta-r": ({}, []),
    "renofeation": ({}, []),
}


def test_every_registered_method_has_a_row():
    basic = {"finetune", "finetune-last-k", "linear-probe", "retrain"}
    assert basic <= set(METHODS.names())
    assert basic <= set(TABLE)


@pytest.fixture(scope="module")
def student_data():
    return load_data("digits", classes=[5, 6, 7], train_size=10, per_class=True)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_method_contract(name, digits_teacher_dir, student_data):
    teacher = load_model(digits_teacher_dir).model
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    kwargs, frozen = TABLE[name]
    student = METHODS.create(name, **FAST, **kwargs).transfer(teacher, student_data, seed=0, progress=False)
    # the teacher is never modified
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    m = student.model
    assert m.num_classes == 3
    assert m(student_data.test.x[:2]).shape == (2, 3)
    assert student.config["method"] == name and student.fit is not None
    sd = m.state_dict()
    for k, v in before.items():
        if any(k.startswith(p) for p in frozen):
            assert torch.equal(v, sd[k]), f"{name}: {k} should be frozen"
    if name == "finetune":
        assert not torch.equal(sd["conv1.weight"], before["conv1.weight"])
    if name == "retrain":
        # re-initialised, not derived from the teacher
        corr = torch.corrcoef(torch.stack([sd["conv1.weight"].flatten(), before["conv1.weight"].flatten()]))[
            0, 1
        ]
        assert abs(float(corr)) < 0.5
        assert m.input_spec.mean == pytest.approx(student_data.mean)
    assert all(not mod._forward_hooks for mod in m.modules())


def test_same_seed_same_student(digits_teacher_dir, student_data):
    teacher = load_model(digits_teacher_dir).model
    a = METHODS.create("finetune", **FAST).transfer(teacher, student_data, seed=3, progress=False).model
    b = METHODS.create("finetune", **FAST).transfer(teacher, student_data, seed=3, progress=False).model
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_input_shape_mismatch_is_refused(student_data):
    rgb = create_model("smallcnn", num_classes=5, in_channels=3, image_size=32)
    with pytest.raises(SafeReuseError, match="expects 3×32×32"):
        METHODS.create("finetune", **FAST).transfer(rgb, student_data, progress=False)


def test_unknown_parameter_is_a_clear_error():
    with pytest.raises(SafeReuseError, match="has no parameter 'ratio'"):
        METHODS.create("finetune", ratio=0.1)


def test_retrain_works_on_an_adapted_foreign_model(student_data):
    from torch import nn

    from safereuse.models import InputSpec, adapt

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 16), nn.ReLU(), nn.Linear(16, 5))
    teacher = adapt(net, InputSpec(1, (28, 28), (0.5,), (0.5,)), head="3")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = METHODS.create("retrain", **FAST).transfer(teacher, student_data, seed=0, progress=False).model
    assert student.num_classes == 3
    w = torch.stack([student.state_dict()["module.1.weight"].flatten(), before["module.1.weight"].flatten()])
    assert abs(float(torch.corrcoef(w)[0, 1])) < 0.5  # re-initialised, not fine-tuned from the teacher
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())  # teacher untouched
    assert student.input_spec.mean == pytest.approx(student_data.mean)

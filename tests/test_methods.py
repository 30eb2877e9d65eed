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
    "nnslicer": ({"ratio": 0.1, "criterion": "predicted"}, []),
    "mag-prune": ({"ratio": 0.5}, []),
    "delta": ({}, []),
    "delta-r": ({}, []),
    "renofeation": ({}, []),
    "seam": ({"head_epochs": 1, "mask_epochs": 3}, []),
    "cartl": ({"k": 2, "beta": 0.5, "bn_stats": "freeze"}, ["conv1.", "bn1.", "conv2.", "bn2."]),
    "lwf": ({"feature_weight": 0.01}, []),
}


def test_the_table_is_exactly_the_registry():
    # a registered method without a row (or a row without a method) fails here, not silently
    assert sorted(TABLE) == METHODS.names()


@pytest.fixture(scope="module")
def student_data():
    return load_data("digits", classes=[5, 6, 7], train_size=10, per_class=True)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_method_contract(name, digits_teacher_dir, student_data, assert_no_trace):
    teacher = load_model(digits_teacher_dir).model
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    kwargs, frozen = TABLE[name]
    with assert_no_trace(teacher, state=True):  # the teacher is never modified, in any way
        student = METHODS.create(name, **FAST, **kwargs).transfer(
            teacher, student_data, seed=0, progress=False
        )
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
    assert not assert_no_trace.hooks(m)
    # freezing is fit's business while it runs: the student comes back trainable and without gradients
    assert all(p.grad is None and p.requires_grad for p in m.parameters())


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


# (method, parameter, value, the one-line problem every path reports). tests/test_cli.py and
# tests/test_runner.py reuse this table for the CLI and YAML paths.
BAD_PARAMS = [
    ("remos", "ratio", "abc", "method 'remos': ratio='abc' is invalid (expected a number in [0, 1])"),
    ("remos", "ratio", 2, "method 'remos': ratio=2 is invalid (expected a number in [0, 1])"),
    (
        "remos",
        "criterion",
        "kmnc",
        "method 'remos': criterion='kmnc' is invalid (expected one of nc, tknc, snac)",
    ),
    ("remos", "keep_mask", "maybe", "method 'remos': keep_mask='maybe' is invalid (expected true or false)"),
    (
        "remos",
        "max_profile_samples",
        0,
        "method 'remos': max_profile_samples=0 is invalid (expected an integer ≥ 1 or None)",
    ),
    ("finetune", "epochs", 0, "method 'finetune': epochs=0 is invalid (expected an integer ≥ 1)"),
    ("finetune", "epochs", 1.5, "method 'finetune': epochs=1.5 is invalid (expected an integer ≥ 1)"),
    ("finetune", "lr", -1, "method 'finetune': lr=-1 is invalid (expected a number > 0)"),
    (
        "finetune",
        "batch_size",
        True,
        "method 'finetune': batch_size=True is invalid (expected an integer ≥ 1)",
    ),
    ("finetune-last-k", "k", 0, "method 'finetune-last-k': k=0 is invalid (expected an integer ≥ 1)"),
    ("mag-prune", "ratio", -0.1, "method 'mag-prune': ratio=-0.1 is invalid (expected a number in [0, 1])"),
    ("delta", "sp_weight", -1, "method 'delta': sp_weight=-1 is invalid (expected a number ≥ 0)"),
    ("renofeation", "dropout", 1, "method 'renofeation': dropout=1 is invalid (expected a number in [0, 1))"),
    ("finetune", "ratio", 0.1, "method 'finetune' has no parameter 'ratio'"),
    ("remos", "ration", 0.1, "method 'remos' has no parameter 'ration'"),
]


@pytest.mark.parametrize(
    ("name", "key", "value", "problem"), BAD_PARAMS, ids=[f"{c[0]}-{c[1]}" for c in BAD_PARAMS]
)
def test_bad_parameters_give_one_message_on_every_python_path(name, key, value, problem):
    with pytest.raises(SafeReuseError) as by_registry:
        METHODS.create(name, **{key: value})
    with pytest.raises((SafeReuseError, TypeError)) as by_class:
        METHODS.get(name)(**{key: value})  # an unknown keyword is Python's own TypeError here
    assert by_registry.value.problem == problem
    assert by_registry.value.fix
    if by_class.type is SafeReuseError:
        assert by_class.value.problem == problem and by_class.value.fix == by_registry.value.fix
    else:
        assert "has no parameter" in problem
    if "has no parameter" in problem and key == "ration":
        assert by_registry.value.fix.startswith("did you mean 'ratio'?")


def test_yaml_style_values_are_coerced_the_same_on_every_path():
    cls = METHODS.get("remos")
    a = METHODS.create("remos", lr="1e-3", epochs="3", keep_mask="true", ratio=1)
    b = cls(lr="1e-3", epochs="3", keep_mask="true", ratio=1)
    assert a == b and (a.lr, a.epochs, a.keep_mask) == (0.001, 3, True)
    assert type(a.ratio) is int  # an int stays an int for a float field: the recorded config is unchanged


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

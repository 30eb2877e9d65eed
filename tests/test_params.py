"""The one validation engine (:mod:`safereuse.params`, on pydantic): lax YAML coercion, ranges declared
on the fields, and the same one-line message for defects, criteria and detectors on every path
(the methods' table is ``BAD_PARAMS`` in tests/test_methods.py)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import pytest
import yaml
from pydantic import Field

from cli_helpers import assert_one_line_error
from cli_helpers import run_cli as run
from safereuse.applications.criteria import CRITERIA, make_criterion
from safereuse.applications.detect import SliceDetector
from safereuse.defects import DEFECTS
from safereuse.errors import SafeReuseError
from safereuse.params import Validated, check_value, is_list_type, param_hints, validate_params
from safereuse.runner import load_spec
from safereuse.train import FitConfig

# (defect, parameter, value, the one-line problem every path reports)
BAD_DEFECT_PARAMS = [
    ("pgd", "steps", 0, "defect 'pgd': steps=0 is invalid (expected an integer ≥ 1)"),
    ("pgd", "steps", 2.5, "defect 'pgd': steps=2.5 is invalid (expected an integer ≥ 1)"),
    ("pgd", "norm", "l3", "defect 'pgd': norm='l3' is invalid (expected one of linf, l2)"),
    ("pgd", "max_samples", 0, "defect 'pgd': max_samples=0 is invalid (expected an integer ≥ 1 or None)"),
    (
        "pgd",
        "random_start",
        "maybe",
        "defect 'pgd': random_start='maybe' is invalid (expected true or false)",
    ),
    ("fgsm", "eps", "big", "defect 'fgsm': eps='big' is invalid (expected a number or None)"),
    ("penultimate", "steps", 0, "defect 'penultimate': steps=0 is invalid (expected an integer ≥ 1)"),
    ("nc-guided", "top_k", 0, "defect 'nc-guided': top_k=0 is invalid (expected an integer ≥ 1)"),
    ("badnets", "poison_rate", 0, "defect 'badnets': poison_rate=0 is invalid (expected a number in (0, 1])"),
    ("badnets", "size", 0, "defect 'badnets': size=0 is invalid (expected an integer ≥ 1)"),
    ("badnets", "target", -1, "defect 'badnets': target=-1 is invalid (expected an integer ≥ 0 or None)"),
    ("blend", "alpha", 2, "defect 'blend': alpha=2 is invalid (expected a number in (0, 1])"),
    ("latent", "trigger_lr", 0, "defect 'latent': trigger_lr=0 is invalid (expected a number > 0)"),
    ("weight-poison", "lam", -1, "defect 'weight-poison': lam=-1 is invalid (expected a number ≥ 0)"),
    ("pgd", "stepz", 3, "defect 'pgd' has no parameter 'stepz'"),
]

# (criterion, parameter, value, problem)
BAD_CRITERION_PARAMS = [
    ("nnslicer", "theta", 1, "criterion 'nnslicer': theta=1 is invalid (expected a number in [0, 1))"),
    (
        "nnslicer",
        "theta",
        "abc",
        "criterion 'nnslicer': theta='abc' is invalid (expected a number in [0, 1))",
    ),
    (
        "effectivepath",
        "path_share",
        0,
        "criterion 'effectivepath': path_share=0 is invalid (expected a number in (0, 1])",
    ),
]


def _ids(table: list[tuple]) -> list[str]:
    return [f"{c[0]}-{c[1]}-{c[2]}" for c in table]


def _registered(registry, names: set[str]) -> None:
    missing = names - set(registry.names())
    if missing:
        pytest.skip(f"not registered here: {sorted(missing)}")


@pytest.mark.parametrize(("name", "key", "value", "problem"), BAD_DEFECT_PARAMS, ids=_ids(BAD_DEFECT_PARAMS))
def test_bad_defect_parameters_give_one_message_on_every_python_path(name, key, value, problem):
    _registered(DEFECTS, {name})
    with pytest.raises(SafeReuseError) as by_registry:
        DEFECTS.create(name, **{key: value})
    assert by_registry.value.problem == problem
    assert by_registry.value.fix
    if "has no parameter" in problem:
        assert by_registry.value.fix.startswith("did you mean 'steps'?")
        return
    with pytest.raises(SafeReuseError) as by_class:  # the dataclass itself checks its fields
        DEFECTS.get(name)(**{key: value})
    assert (by_class.value.problem, by_class.value.fix) == (problem, by_registry.value.fix)


TINY = """\
name: tiny
scenarios:
  - name: digits-a
    teacher: {arch: smallcnn, data: digits, classes: 0-4, epochs: 1, seed: 0}
    student: {data: digits, classes: 5-9, train_size: 5, per_class: true}
methods:
  - name: finetune
    params: {epochs: 1}
defects:
  - name: DEFECT
    params: {KEY: VALUE}
seeds: [0]
"""


@pytest.mark.parametrize(("name", "key", "value", "problem"), BAD_DEFECT_PARAMS, ids=_ids(BAD_DEFECT_PARAMS))
def test_bad_defect_parameters_in_yaml_give_the_python_message(tmp_path, name, key, value, problem):
    _registered(DEFECTS, {name})
    with pytest.raises(SafeReuseError) as by_python:
        DEFECTS.create(name, **{key: value})
    value_yaml = yaml.safe_dump(value).splitlines()[0]
    text = TINY.replace("DEFECT", name).replace("KEY", key).replace("VALUE", value_yaml)
    if name in ("badnets", "blend", "latent", "weight-poison"):  # a planted defect goes on the teacher
        text = text.replace("epochs: 1, seed: 0}", f"epochs: 1, seed: 0, backdoor: {name}}}")
    p = tmp_path / "spec.yaml"
    p.write_text(textwrap.dedent(text))
    with pytest.raises(SafeReuseError) as by_yaml:
        load_spec(p)
    assert by_yaml.value.problem.endswith(f": {problem}"), by_yaml.value.problem
    assert f"{key}: {problem}" in by_yaml.value.problem
    assert by_yaml.value.fix == by_python.value.fix


@pytest.mark.parametrize(
    ("name", "key", "value", "problem"), BAD_DEFECT_PARAMS[:3], ids=_ids(BAD_DEFECT_PARAMS[:3])
)
def test_bad_defect_parameters_on_the_cli_give_the_python_message(
    capsys, digits_teacher_dir, digits_student_dir, name, key, value, problem
):
    with pytest.raises(SafeReuseError) as by_python:
        DEFECTS.create(name, **{key: value})
    code, _, err = run(
        capsys, "audit", "--teacher", str(digits_teacher_dir), "--student", str(digits_student_dir),
        "--defect", name, "--param", f"{key}={value}", "--max-samples", "10",
    )  # fmt: skip
    assert code == 2
    assert_one_line_error(code, err, f"error: {problem} (fix: {by_python.value.fix})")


@pytest.mark.parametrize(
    ("name", "key", "value", "problem"), BAD_CRITERION_PARAMS, ids=_ids(BAD_CRITERION_PARAMS)
)
def test_bad_criterion_parameters_give_one_message_on_every_path(name, key, value, problem):
    with pytest.raises(SafeReuseError) as by_registry:
        CRITERIA.create(name, **{key: value})
    with pytest.raises(SafeReuseError) as by_class:
        CRITERIA.get(name)(**{key: value})
    with pytest.raises(SafeReuseError) as by_mapping:  # YAML's `criterion: {name: nnslicer, theta: 1}`
        make_criterion({"name": name, key: value})
    for e in (by_registry, by_class, by_mapping):
        assert e.value.problem == problem
        assert e.value.fix == by_registry.value.fix


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("max_depth", 0, "detector: max_depth=0 is invalid (expected an integer ≥ 1 or None)"),
        ("min_samples_leaf", "x", "detector: min_samples_leaf='x' is invalid (expected an integer ≥ 1)"),
        ("batch_size", 0, "detector: batch_size=0 is invalid (expected an integer ≥ 1)"),
    ],
)
def test_bad_detector_parameters_give_one_message(key, value, problem):
    with pytest.raises(SafeReuseError) as by_class:
        SliceDetector(**{key: value})
    with pytest.raises(SafeReuseError) as by_params:
        validate_params(SliceDetector, {key: value}, "detector")
    assert by_class.value.problem == by_params.value.problem == problem
    assert by_class.value.fix == by_params.value.fix


# -- the engine --------------------------------------------------------------------------------------
@dataclass
class Knobs(Validated):
    rate: Annotated[float, Field(gt=0, le=1)] = 0.5
    count: Annotated[int, Field(ge=1)] | None = None
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    rates: list[Annotated[float, Field(ge=0, le=1)]] | None = None
    shape: tuple[int, ...] = (1,)
    loose: int | float | str | None = None
    free: float = 0.0


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("rate", "1e-3", 0.001),  # YAML 1.1 reads 1e-3 as a string
        ("rate", 1, 1),  # an int stays an int for a float field (the recorded config is unchanged)
        ("rate", np.float32(0.5), 0.5),
        ("count", 4.0, 4),
        ("count", "4", 4),
        ("count", "4.0", 4),
        ("count", np.int64(3), 3),
        ("flag", "yes", True),
        ("flag", " On ", True),
        ("flag", "off", False),
        ("rates", (0.5, 1), [0.5, 1]),
        ("shape", [3, "4"], (3, 4)),
        ("loose", 1.0, 1.0),  # a union takes the value as given first: sklearn's max_features=1.0 ≠ 1
        ("loose", "4", "4"),
        ("free", float("inf"), float("inf")),  # only ranged numbers must be finite
    ],
)
def test_lax_coercion(key, value, expected):
    out = check_value(Knobs, key, value, "knobs")
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("rate", 0, "a number in (0, 1]"),
        ("rate", float("nan"), "a number in (0, 1]"),
        ("rate", True, "a number in (0, 1]"),
        ("count", 1.5, "an integer ≥ 1 or None"),
        ("count", True, "an integer ≥ 1 or None"),
        ("flag", 1, "true or false"),
        ("flag", "maybe", "true or false"),
        ("mode", "c", "one of a, b"),
        ("rates", [0.5, 2], "a list of numbers in [0, 1] or None"),
        ("rates", "0.5", "a list of numbers in [0, 1] or None"),
        ("shape", 3, "a list of integers"),
    ],
)
def test_invalid_values_name_what_is_expected(key, value, expected):
    with pytest.raises(SafeReuseError) as ei:
        check_value(Knobs, key, value, "knobs")
    assert ei.value.problem == f"knobs: {key}={value!r} is invalid (expected {expected})"


def test_validated_checks_fields_before_a_subclass_post_init():
    seen = []

    @dataclass
    class Child(Knobs):
        def __post_init__(self) -> None:
            seen.append(self.count)  # already coerced

    assert Child(count="3").count == 3 and seen == [3]
    with pytest.raises(SafeReuseError, match=r"^'Child': rate=2 is invalid"):
        Child(rate=2)


def test_hints_keep_the_declared_ranges():
    assert is_list_type(param_hints(Knobs)["rates"]) and not is_list_type(param_hints(Knobs)["count"])
    assert FitConfig(lr="1e-3", epochs=2.0).lr == 0.001
    with pytest.raises(
        SafeReuseError, match=r"training: momentum=2 is invalid \(expected a number in \[0, 1\]\)"
    ):
        FitConfig(momentum=2)

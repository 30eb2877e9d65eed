"""Student (transfer-method) defaults per architecture: method < teacher architecture < user, the same on
the CLI, in a spec and in Python (issue 25 item 3).

Text encoders (``minilm``, ``mpnet``, ``hf-encoder``) give their students the NLP settings of
:data:`safereuse.models.hf_encoder.TEXT_STUDENT_FIT` (+ per-method ones); image models give none, so
they resolve exactly as the method's own defaults. Teachers are tiny untrained artifacts (no teacher
training); students train one step on 20 sentences / 25 digits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from safereuse import api
from safereuse.artifacts import Manifest, save_model
from safereuse.cli import main
from safereuse.config import arch_student_fit, student_params
from safereuse.data import DataSpec
from safereuse.errors import SafeReuseError
from safereuse.methods import METHODS
from safereuse.models import create_model
from safereuse.models.hf_encoder import TEXT_STUDENT_FIT, TEXT_STUDENT_METHODS
from safereuse.runner import expand, load_spec
from safereuse.runner.spec import bundled_spec
from safereuse.runner.worker import ensure_student

TINY = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32}
VOCAB = {**TINY, "vocab_size": 30522}  # the shared vocabulary: real sentences fit
TEXT_ARCHS = {
    "minilm": {"pretrained": False, "config": VOCAB},
    "mpnet": {"pretrained": False, "config": VOCAB},
    "hf-encoder": {"pretrained": False, "model_type": "roberta", "config": VOCAB},
}
#: what every path must do cheaply: one optimiser step (the resolution, not the training, is tested)
QUICK = {"epochs": 1, "min_steps_per_epoch": 1}

#: The demo's and examples/nlp.yaml's hand-set NLP settings before they became minilm's defaults: the
#: resolved configs of their text cells must stay these values (so their figures do not change).
HAND_SET = {"epochs": 3, "optimizer": "adam", "lr": 3e-5, "batch_size": 16, "label_smoothing": 0.0,
            "weight_decay": 0.0}  # fmt: skip
HAND_SET_METHODS = {
    "finetune": HAND_SET,
    "retrain": {**HAND_SET, "lr": 1e-4},
    "mag-prune": {**HAND_SET, "ratio": 0.3},
    "remos": {**HAND_SET, "ratio": 0.1},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _teacher(out: Path, arch: str) -> Path:
    """An untrained teacher artifact of ``arch`` (text: on tweets; resnet8: on digits 0-4)."""
    torch.manual_seed(0)
    if arch == "resnet8":
        model = create_model("resnet8", num_classes=5, in_channels=1, image_size=28, width=4)
        data = DataSpec("digits", classes=[0, 1, 2, 3, 4])
    else:
        model = create_model(arch, num_classes=2, image_size=16, **TEXT_ARCHS[arch])
        data = DataSpec("tweets", train_size=20, max_len=16)
    save_model(model, out, Manifest("teacher", data=data.to_dict()))
    return out


def _student_data(arch: str) -> DataSpec:
    if arch == "resnet8":
        return DataSpec("digits", classes=[5, 6, 7, 8, 9], train_size=5, per_class=True)
    return DataSpec("amazon-sentences", train_size=20, max_len=16)


def _recorded(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())["method"]["config"]


# -- the resolution order --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", METHODS.names())
def test_image_models_resolve_exactly_as_the_methods_own_defaults(name: str) -> None:
    cls = METHODS.get(name)
    assert arch_student_fit("resnet8", name) == {} and arch_student_fit(None, name) == {}
    assert student_params("resnet8", name, {"epochs": 2}, cls) == {"epochs": 2}
    assert METHODS.create(name, **student_params("resnet8", name, None, cls)).config() == cls().config()


@pytest.mark.parametrize("arch", sorted(TEXT_ARCHS))
@pytest.mark.parametrize("name", METHODS.names())
def test_text_encoders_give_every_method_the_text_defaults(arch: str, name: str) -> None:
    cls = METHODS.get(name)
    own = TEXT_STUDENT_METHODS.get(name, {})
    cfg = METHODS.create(name, **student_params(arch, name, None, cls)).config()
    expected = {k: v for k, v in {**TEXT_STUDENT_FIT, **own}.items() if k in cfg}
    assert {k: cfg[k] for k in expected} == expected
    default = cls().config()  # everything the architecture does not set stays the method's
    assert {k: v for k, v in cfg.items() if k not in expected} == {
        k: v for k, v in default.items() if k not in expected
    }
    if "lr" in cfg:  # a TransferMethod: the image recipe's SGD at lr 0.01 is gone
        assert cfg["optimizer"] == "adam" and cfg["lr"] < default["lr"]


def test_the_users_value_always_wins_and_keys_a_method_lacks_are_left_out() -> None:
    remos = METHODS.get("remos")
    p = student_params("minilm", "remos", {"lr": 1e-3, "ratio": 0.5}, remos)
    assert p["lr"] == 1e-3 and p["ratio"] == 0.5 and p["optimizer"] == "adam"
    assert "ratio" not in student_params("minilm", "finetune", None, METHODS.get("finetune"))
    assert student_params("minilm", "retrain", None, METHODS.get("retrain"))["lr"] == 1e-4
    # a user value outside the range is the method's own error, not silently replaced by a default
    with pytest.raises(SafeReuseError, match="lr"):
        METHODS.create("remos", **student_params("minilm", "remos", {"lr": -1.0}, remos))


# -- CLI == YAML == Python -------------------------------------------------------------------------------
ROWS = [  # (teacher arch, method, user params, what the resolved config must hold)
    ("minilm", "remos", {}, {**TEXT_STUDENT_FIT, "ratio": 0.1, "criterion": "tknc"}),
    ("minilm", "retrain", {"lr": 2e-4}, {**TEXT_STUDENT_FIT, "lr": 2e-4, "head_lr_mult": 1.0}),
    ("resnet8", "remos", {}, {"optimizer": "sgd", "lr": 0.01, "ratio": 0.2, "label_smoothing": 0.1}),
    ("resnet8", "finetune", {"lr": 0.05}, {"optimizer": "sgd", "lr": 0.05, "epochs": 20}),
]


@pytest.mark.parametrize(("arch", "method", "user", "expected"), ROWS, ids=lambda v: str(v)[:20])
def test_cli_yaml_and_python_resolve_the_same_student_params(
    tmp_path: Path, arch: str, method: str, user: dict[str, Any], expected: dict[str, Any]
) -> None:
    teacher = _teacher(tmp_path / "t", arch)
    data = _student_data(arch)
    given = {**QUICK, **user}
    want = {**expected, **QUICK}
    # Python
    py = api.transfer(teacher, data, method, given, out=tmp_path / "py", progress=False)["method"]
    assert py["params"] == given  # the manifest keeps what was given next to what it resolved to
    # CLI
    argv = ["transfer", "--teacher", str(teacher), "--data", data.name, "--method", method,
            "--train-size", str(data.train_size), "--out", str(tmp_path / "cli"), "-q"]  # fmt: skip
    if data.classes:
        argv += ["--classes", ",".join(map(str, data.classes)), "--per-class"]
    if data.max_len:
        argv += ["--max-len", str(data.max_len)]
    for k, v in given.items():
        argv += ["-p", f"{k}={v}"]
    assert main(argv) == 0
    # YAML: the spec's cell config (what the ledger, selection and the student cache key record) and
    # the student the runner's worker makes from it
    student = {"data": data.name, "train_size": data.train_size, "max_len": data.max_len}
    if data.classes:
        student.update(classes=data.classes, per_class=True)
    teacher_cfg = {"arch": arch, "data": "digits" if arch == "resnet8" else "tweets"}
    spec = {
        "scenarios": [{"name": "s", "teacher": teacher_cfg,
                       "student": {k: v for k, v in student.items() if v is not None}}],
        "methods": [{"name": method, "params": given}],
        "defects": [{"name": "penultimate" if arch == "resnet8" else "pwws"}],
    }  # fmt: skip
    (cell,) = expand(load_spec(text=json.dumps(spec)))
    out, cached = ensure_student({"config": cell.config, "rundir": str(tmp_path / "run")}, teacher)
    assert not cached
    configs = {
        "python": py["config"],
        "cli": _recorded(tmp_path / "cli"),
        "yaml cell": cell.config["method"]["config"],
        "yaml student": _recorded(out),
    }
    assert all(c == configs["python"] for c in configs.values()), configs
    assert {k: configs["python"][k] for k in want} == want


@pytest.mark.parametrize("arch", ["mpnet", "hf-encoder"])
def test_mpnet_and_hf_encoder_students_get_the_text_defaults(tmp_path: Path, arch: str) -> None:
    teacher = _teacher(tmp_path / "t", arch)
    m = api.transfer(teacher, _student_data(arch), "mag-prune", QUICK, out=tmp_path / "s", progress=False)
    cfg = m["method"]["config"]
    assert m["arch"] == arch and {k: cfg[k] for k in TEXT_STUDENT_FIT if k != "epochs"} == {
        k: v for k, v in TEXT_STUDENT_FIT.items() if k != "epochs"
    }
    assert cfg["ratio"] == 0.3 and cfg["epochs"] == 1


# -- the bundled specs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["default", "nlp"])
def test_bundled_text_scenarios_resolve_to_their_former_hand_set_values(name: str) -> None:
    """``examples/nlp.yaml`` and the demo's text scenario no longer restate the NLP settings; their
    cells resolve to the same values they set by hand, so their figures do not change."""
    cells = [c for c in expand(bundled_spec(name)) if c.config["teacher"]["arch"] == "minilm"]
    assert cells and {c.method for c in cells} == set(HAND_SET_METHODS)
    for c in cells:
        assert c.config["method"]["params"] == {}  # nothing restated
        cfg = c.config["method"]["config"]
        want = HAND_SET_METHODS[c.method]
        assert {k: cfg[k] for k in want} == want, (c.scenario, c.method)
        # the rest is the method's own default (e.g. head ×10 for finetune, ×1 for retrain)
        default = METHODS.get(c.method)().config()
        assert {k: v for k, v in cfg.items() if k not in want} == {
            k: v for k, v in default.items() if k not in want
        }


def test_a_point_of_all_and_an_explicit_entry_run_on_both_their_scenarios() -> None:
    """The demo's shape: ``all`` scoped to the image scenarios and ``finetune`` (same params) scoped to
    the text one are one point that runs on both (it used to drop the text scenario's cells)."""
    spec = """
scenarios:
  - name: img
    teacher: {arch: smallcnn, data: digits, classes: 0-4}
    student: {data: digits, classes: 5-9, train_size: 5, per_class: true}
  - name: txt
    teacher: {arch: minilm, data: tweets}
    student: {data: amazon-sentences, train_size: 20}
methods:
  - name: all
    scenarios: [img]
  - name: finetune
    scenarios: [txt]
defects:
  - name: penultimate
    scenarios: [img]
  - name: pwws
    scenarios: [txt]
"""
    cells = expand(load_spec(text=spec))
    ft = {c.scenario: c.config["method"]["config"] for c in cells if c.method == "finetune"}
    assert set(ft) == {"img", "txt"}
    assert ft["img"]["optimizer"] == "sgd" and ft["txt"]["optimizer"] == "adam"
    assert {c.scenario for c in cells if c.method == "remos"} == {"img"}

"""One teacher recipe for the CLI, YAML and Python; specs refuse defects their scenarios cannot take."""

from __future__ import annotations

import json

import pytest

from safereuse import api
from safereuse.cli import main
from safereuse.config import TEACHER_FIT, teacher_fit
from safereuse.data import DataSpec
from safereuse.errors import SafeReuseError
from safereuse.models.minilm import TEXT_FIT
from safereuse.runner import expand, load_spec

TINY = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32}


def _fit_keys(fit: dict) -> dict:
    """The recipe's fit, without what each path sets itself (seed, device, progress)."""
    return {k: v for k, v in fit.items() if k not in {"seed", "device", "progress"}}


def test_resolution_order_is_global_then_architecture_then_user():
    assert teacher_fit("resnet8") == TEACHER_FIT
    minilm = teacher_fit("minilm")
    assert minilm == {**TEACHER_FIT, **TEXT_FIT}  # TEXT_FIT wins over the global defaults...
    assert minilm["weight_decay"] == TEXT_FIT["weight_decay"] != TEACHER_FIT["weight_decay"]
    assert teacher_fit("minilm", {"weight_decay": 0.5})["weight_decay"] == 0.5  # ... and the user over both


def test_a_minilm_teacher_gets_the_same_fit_from_the_cli_yaml_and_python(tmp_path):
    """The bug this guards: a YAML ``minilm`` teacher got TEACHER_FIT over TEXT_FIT (weight decay,
    warm-up, head lr), while the CLI kept TEXT_FIT."""
    user = {"epochs": 1, "lr": 1e-4}
    cfg = {**TINY, "vocab_size": 30522}
    spec = f"""
scenarios:
  - name: t
    teacher: {{arch: minilm, arch_kwargs: {{pretrained: false, config: {json.dumps(cfg)}}}, data: tweets,
               train_size: 40, fit: {{lr: 0.0001}}, epochs: 1, seed: 0}}
    student: {{data: tweets, train_size: 40}}
methods: [{{name: finetune}}]
defects: [{{name: pwws}}]
"""
    yaml_fit = expand(load_spec(text=spec))[0].config["teacher"]["fit"]
    # Python
    m = api.train_teacher(
        "minilm", DataSpec("tweets", train_size=40), out=tmp_path / "py",
        arch_kwargs={"pretrained": False, "config": cfg}, fit_params=user, progress=False,
    )  # fmt: skip
    py_fit = _fit_keys(m["method"]["config"])  # the manifest records the resolved FitConfig
    # CLI
    code = main([
        "teacher", "train", "--arch", "minilm", "--data", "tweets", "--train-size", "40", "--epochs", "1",
        "-p", "lr=0.0001", "-p", "pretrained=false", "-p", f"config={json.dumps(cfg)}",
        "--out", str(tmp_path / "cli"), "-q",
    ])  # fmt: skip
    assert code == 0
    cli_fit = _fit_keys(json.loads((tmp_path / "cli" / "manifest.json").read_text())["method"]["config"])
    assert py_fit == cli_fit
    assert {k: py_fit[k] for k in yaml_fit} == yaml_fit == teacher_fit("minilm", user)
    assert yaml_fit["weight_decay"] == TEXT_FIT["weight_decay"] and yaml_fit["optimizer"] == "adam"


_GRID = """
scenarios:
  - name: img
    teacher: {arch: smallcnn, data: digits, classes: 0-4, epochs: 1}
    student: {data: digits, classes: 5-9, train_size: 5, per_class: true}
methods: [{name: finetune}]
defects:
  - name: penultimate
  - name: DEFECT
"""


@pytest.mark.parametrize("defect", ["pwws", "word-trigger"])
def test_a_text_defect_on_an_image_scenario_is_refused_at_load_naming_its_line(defect):
    text = _GRID.replace("DEFECT", defect)
    if defect == "word-trigger":  # a backdoor: the teacher must plant it
        text = text.replace("epochs: 1}", "epochs: 1, backdoor: word-trigger}")
    with pytest.raises(SafeReuseError) as err:
        load_spec("grid.yaml", text=text)
    msg = err.value.one_line()
    assert f"'{defect}' takes text inputs" in msg and "holds images" in msg
    assert msg.startswith("grid.yaml line 4: scenarios[0].teacher.backdoor" if defect == "word-trigger"
                          else "grid.yaml line 9: defects[1].name")  # fmt: skip
    offered = msg.split("fix: use one of: ")[1]  # only what fits images
    assert ("badnets" if defect == "word-trigger" else "fgsm") in offered and "pwws" not in offered


def test_an_image_defect_on_a_text_scenario_is_refused_and_a_scope_allows_it():
    two = _GRID.replace(
        "methods:",
        "  - name: txt\n    teacher: {arch: minilm, data: tweets, epochs: 1}\n"
        "    student: {data: tweets, train_size: 40}\nmethods:",
    ).replace("  - name: penultimate\n", "")
    msg = (
        r"^grid.yaml line 11: defects\[0\]\.name: defect 'fgsm' takes image inputs, but scenario 'txt' "
        r"holds text \(tweets\) \(fix: use one of: .*pwws"
    )
    with pytest.raises(SafeReuseError, match=msg):
        load_spec("grid.yaml", text=two.replace("DEFECT", "fgsm"))
    scoped = two.replace("DEFECT", "fgsm\n    scenarios: [img]")  # fgsm only where the inputs are images
    cells = expand(load_spec(text=scoped + "  - name: pwws\n    scenarios: [txt]\n"))
    audited = {(c.scenario, d["name"]) for c in cells for d in c.config["defects"]}
    assert audited == {("img", "fgsm"), ("txt", "pwws")}


def test_the_audit_options_are_declared_once_and_checked_on_every_path(tmp_path, capsys):
    """``AuditConfig`` holds the audit's options: Python, the API, the CLI and a spec's ``audit:`` block
    all refuse ``max_samples=0`` from its one declaration (the spec in its own schema wording)."""
    from safereuse.data import load_data
    from safereuse.defects import AuditConfig, audit
    from safereuse.models import create_model
    from safereuse.runner.spec import AuditCfg

    expected = "audit: max_samples=0 is invalid (expected an integer ≥ 1 or None)"
    with pytest.raises(SafeReuseError, match=r"max_samples=0 is invalid") as direct:
        AuditConfig(max_samples=0)
    assert str(direct.value).startswith(expected)
    data = load_data("digits", classes=[0, 1, 2])
    net = create_model("smallcnn", 3)
    with pytest.raises(SafeReuseError) as lib:
        audit(net, net, data, ["fgsm"], max_samples=0)
    assert str(lib.value) == str(direct.value)
    with pytest.raises(SafeReuseError) as via_api:
        api.audit(net, net, data, ["fgsm"], max_samples=0, teacher_data=DataSpec("digits", classes=[0, 1, 2]))
    assert str(via_api.value) == str(direct.value)
    spec = """
scenarios:
  - name: s
    teacher: {arch: smallcnn, data: digits, classes: 0-2}
    student: {data: digits, classes: 0-2, train_size: 5, per_class: true}
methods: [{name: finetune}]
audit: {max_samples: 0}
"""
    with pytest.raises(SafeReuseError, match=r"line 7: audit\.max_samples: .*greater than or equal to 1"):
        load_spec(text=spec)
    # the grid keeps its own defaults (500 images, a per-cell seed allowed) over the same fields
    assert AuditCfg().max_samples == 500 and AuditCfg(seed="cell").seed == "cell"
    assert AuditCfg().batch_size == AuditConfig().batch_size

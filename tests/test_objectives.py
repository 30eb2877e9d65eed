"""Adversarial training and FDM as injected fit() objectives (CARTL's source side), the teacher API,
CLI and runner plumbing, and the Rob ordering of the white-box attacks."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from cli_helpers import assert_one_line_error, run_cli
from safereuse import api
from safereuse.data import DataSpec, load_data
from safereuse.defects.attacks import FGSM, PGD, craft_batched
from safereuse.errors import SafeReuseError
from safereuse.models import create_model
from safereuse.models.capture import capture
from safereuse.objectives import AdversarialTraining, fdm_site, fdm_term, robust_accuracy_on
from safereuse.train import FitConfig, fit, predict
from safereuse.utils import seed_everything

EPS = 0.1  # a budget at which a natural digits model is clearly fragile


@pytest.fixture(scope="module")
def digits3():
    return load_data("digits", classes=[0, 1, 2])


def _train(data, adversarial: bool):
    seed_everything(0)
    m = create_model("smallcnn", num_classes=3, width=8, hidden=32)
    at = AdversarialTraining(at_eps=EPS, at_alpha=EPS / 2, at_steps=2) if adversarial else None
    cfg = FitConfig(epochs=3, lr=0.05, batch_size=32, progress=False, device="cpu")
    fit(m, data.train, None, cfg, loss_fn=at.loss_fn(m) if at else None)
    return m


@pytest.fixture(scope="module")
def natural(digits3):
    return _train(digits3, False)


# -- FDM -------------------------------------------------------------------------------------------
def test_fdm_term_by_hand():
    a = torch.zeros(3, 2, 2)
    b = torch.ones(3, 2, 2)  # ‖Δ‖₂ = 2 per sample, d = 4 → (λ/2)·2 = λ
    assert float(fdm_term(a, b, 0.7)) == pytest.approx(0.7)
    assert float(fdm_term(a, a, 5.0)) == 0.0
    # per-sample mean: one sample's distance counts 1/N
    c = b.clone()
    c[1:] = 0
    assert float(fdm_term(a, c, 1.0)) == pytest.approx(1 / 3)


def test_fdm_is_zero_when_the_adversary_is_the_input(digits3):
    """ε = 0 → x' = x: the FDM loss equals plain CE, in train mode, both passes seeing the same batch."""
    m = create_model("smallcnn", num_classes=3)
    m.train()
    x, y = digits3.train.x[:16], digits3.train.y[:16]
    at = AdversarialTraining(at_eps=0.0, at_steps=1, fdm_lambda=3.0, fdm_k=2)
    loss = at.loss_fn(m)(m, x, y)
    assert float(loss.detach()) == pytest.approx(float(F.cross_entropy(m(x), y).detach()), abs=1e-6)


def test_fdm_site_is_the_input_of_block_L_minus_k_plus_1():
    m = create_model("resnet8", num_classes=5)  # blocks: conv1+bn1, layer1.0, layer2.0, layer3.0, fc
    assert [fdm_site(m, k)[0] for k in (1, 2, 3, 4)] == ["fc", "layer3.0", "layer2.0", "layer1.0"]
    # φ for k = 2 is what the frozen part (stem, layer1, layer2) outputs
    x = torch.rand(2, 1, 28, 28)
    _, mod = fdm_site(m, 2)
    with capture(m, [("phi", mod)], inputs=True, outputs=False) as cap, capture(m, ["layer2"]) as out:
        m.eval()
        m(x)
    assert torch.equal(cap.inputs()[0], out.outputs()[0])
    for k in (0, 5, 9):
        with pytest.raises(SafeReuseError, match="out of range.*5 blocks"):
            fdm_site(m, k)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(SafeReuseError, match="at_eps"):
        AdversarialTraining(at_eps=1.5)
    with pytest.raises(SafeReuseError, match="at_steps"):
        AdversarialTraining(at_steps=0)
    with pytest.raises(SafeReuseError, match="needs fdm_k"):
        AdversarialTraining(fdm_lambda=0.5)
    with pytest.raises(SafeReuseError, match="fdm_k=7 is out of range"):
        AdversarialTraining(fdm_lambda=0.5, fdm_k=7).loss_fn(create_model("smallcnn", num_classes=2))


# -- adversarial training -------------------------------------------------------------------------
def test_the_loss_leaves_modes_and_flags_as_it_found_them(digits3):
    m = create_model("smallcnn", num_classes=3)
    m.train()
    m.bn1.eval()  # fit keeps frozen BatchNorm layers in eval mode (bn_stats=freeze)
    m.fc1.weight.requires_grad_(False)
    before = {n: mod.training for n, mod in m.named_modules()}
    flags = {n: p.requires_grad for n, p in m.named_parameters()}
    loss = AdversarialTraining(at_steps=2, fdm_lambda=1.0, fdm_k=1).loss_fn(m)(
        m, digits3.train.x[:8], digits3.train.y[:8]
    )
    loss.backward()
    assert {n: mod.training for n, mod in m.named_modules()} == before
    assert {n: p.requires_grad for n, p in m.named_parameters()} == flags
    assert not any(mod._forward_pre_hooks or mod._forward_hooks for mod in m.modules())
    assert m.conv1.weight.grad is not None and m.fc1.weight.grad is None


def test_adversarial_training_raises_robust_accuracy(digits3, natural):
    robust = _train(digits3, True)
    nat = robust_accuracy_on(natural, digits3.test, eps=EPS, steps=5, max_samples=90)["value"]
    rob = robust_accuracy_on(robust, digits3.test, eps=EPS, steps=5, max_samples=90)["value"]
    # measured on this machine: natural ≈ 0.2, adversarially trained ≈ 0.75
    assert rob >= nat + 0.25, (nat, rob)


def test_pgd20_is_never_weaker_than_fgsm(digits3, natural):
    x, y = digits3.test.x[:60], digits3.test.y[:60]

    def acc(attack):
        xa = craft_batched(attack, natural, x, y)
        return float((predict(natural, xa).argmax(1) == y).float().mean())

    clean = float((predict(natural, x).argmax(1) == y).float().mean())
    fgsm, pgd20 = acc(FGSM(eps=EPS)), acc(PGD(eps=EPS, steps=20))
    assert pgd20 <= fgsm <= clean, (clean, fgsm, pgd20)
    assert pgd20 < clean


# -- teacher API, CLI, runner ----------------------------------------------------------------------
def test_teacher_manifest_records_the_budget(tmp_path):
    m = api.train_teacher(
        "smallcnn", DataSpec("digits", classes=[0, 1, 2], train_size=60), out=tmp_path / "t",
        arch_kwargs={"width": 8, "hidden": 32}, fit_params={"epochs": 1, "batch_size": 64},
        adversarial=True, adversarial_params={"at_steps": 1, "at_eps": 0.05, "fdm_lambda": 0.64, "fdm_k": 1},
        progress=False, device="cpu",
    )  # fmt: skip
    on_disk = json.loads((tmp_path / "t" / "manifest.json").read_text())
    adv = on_disk["adversarial"]
    assert adv == m["adversarial"]
    assert (adv["eps"], adv["alpha"], adv["steps"], adv["random_start"], adv["norm"]) == (
        0.05, 0.0125, 1, True, "linf"
    )  # fmt: skip
    assert adv["fdm"] == {"lambda": 0.64, "k": 1, "layer": "fc", "reduction": "mean"}
    rob = on_disk["metrics"]["test_rob"]
    assert rob["attack"]["steps"] == 20 and rob["attack"]["eps"] == 0.05 and 0 <= rob["value"] <= 1


@pytest.mark.parametrize(
    "params, needle",
    [
        (["-p", "at_eps=1.5"], "at_eps=1.5"),
        (["-p", "at_steps=0"], "at_steps=0"),
        (["-p", "fdm_lambda=0.5", "-p", "fdm_k=9"], "fdm_k=9 is out of range"),
    ],
)
def test_cli_bad_budget_exits_2(capsys, tmp_path, params, needle):
    argv = ["teacher", "train", "--out", str(tmp_path / "t"), "--arch", "smallcnn", "--data", "digits",
            "--classes", "0-2", "--epochs", "1", "--adversarial", "-q", *params]  # fmt: skip
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "t").exists()


def test_cli_adversarial_params_need_the_flag(capsys, tmp_path):
    code, _, err = run_cli(
        capsys, "teacher", "train", "--out", str(tmp_path / "t"), "--arch", "smallcnn", "--data", "digits",
        "--epochs", "1", "-p", "at_eps=0.1", "-q",
    )  # fmt: skip
    assert code == 2
    assert_one_line_error(code, err, "without adversarial training", "--adversarial")


def test_teacher_cache_key_differs_with_adversarial_training():
    from safereuse.runner.spec import TeacherCfg, teacher_key, teacher_recipe

    natural = teacher_recipe(TeacherCfg(), 0)
    robust = teacher_recipe(TeacherCfg(adversarial=True), 0)
    fdm = teacher_recipe(TeacherCfg(adversarial=True, adversarial_params={"fdm_lambda": 0.64, "fdm_k": 2}), 0)
    assert "adversarial" not in natural  # natural teachers keep their earlier keys
    assert robust["adversarial_params"]["at_steps"] == 7  # resolved: a changed default is a new key
    assert len({teacher_key(natural), teacher_key(robust), teacher_key(fdm)}) == 3


def test_spec_validates_adversarial_params(tmp_path):
    from safereuse.runner import load_spec

    def spec(adv: str) -> str:
        return (
            "scenarios:\n  - name: a\n    teacher: {arch: resnet8, data: digits, classes: 0-2, " + adv + "}\n"
            "    student: {data: digits, classes: 3-4}\nmethods: [{name: finetune}]\n"
            "defects: [{name: pgd, params: {steps: [20, 100]}}]\n"
        )

    ok = load_spec(text=spec("adversarial: true, adversarial_params: {fdm_lambda: 0.64, fdm_k: 2}"))
    assert ok.spec.scenarios[0].teacher.adversarial
    for adv, needle in [
        ("adversarial: true, adversarial_params: {fdm_lambda: 0.64, fdm_k: 5}", "fdm_k=5 is out of range"),
        ("adversarial: true, adversarial_params: {at_eps: 2}", "at_eps=2"),
        ("adversarial_params: {at_eps: 0.1}", "without adversarial training"),
        ("adversarial: true, backdoor: badnets", "cannot be combined"),
    ]:
        with pytest.raises(SafeReuseError, match=needle):
            load_spec(text=spec(adv))


# -- report: the Acc-vs-Rob trade-off -------------------------------------------------------------
def test_robustness_figure_only_for_white_box_defects():
    import io

    import pandas as pd
    from PIL import Image

    from safereuse.report.plots import colors, robustness_figure

    rows = []
    for label, acc, rob in [("vanilla", 90.0, 10.0), ("cartl", 80.0, 30.0), ("lwf", 70.0, 20.0)]:
        for defect, r in (("pgd", rob), ("penultimate", float("nan"))):
            rows.append({"scenario": "s", "label": label, "defect": defect, "acc_mean": acc,
                         "acc_ci_low": acc - 2, "acc_ci_high": acc + 2, "rob_mean": r,
                         "rob_ci_low": r - 3, "rob_ci_high": r + 3})  # fmt: skip
    agg = pd.DataFrame(rows)
    pal = colors(["vanilla", "cartl", "lwf"])
    png = robustness_figure(agg, "pgd", ["s"], pal)
    assert png is not None and Image.open(io.BytesIO(png)).size[0] > 300
    assert robustness_figure(agg, "penultimate", ["s"], pal) is None  # no Rob: no figure

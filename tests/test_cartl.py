"""CARTL's transfer side: NEFT (spectral normalisation, convex residuals, folding), the four
BatchNorm cases of ``cartl`` and ``finetune-last-k`` (Vanilla), and ``lwf``."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from cli_helpers import assert_one_line_error, run_cli
from safereuse.artifacts import load_model, save_model
from safereuse.data import load_data
from safereuse.errors import SafeReuseError
from safereuse.methods import CARTL, METHODS, LwF, apply_neft, fold_neft, neft, neft_layers
from safereuse.methods.cartl import (
    SpectralScale,
    convex_residuals,
    fold_convex_residuals,
    residual_blocks,
)
from safereuse.methods.lwf import feature_distance_loss
from safereuse.models import InputSpec, adapt, create_model
from safereuse.models.wide_resnet import WideResNet

FAST = {"epochs": 2, "batch_size": 16}


@pytest.fixture(scope="module")
def data():
    return load_data("digits", classes=[5, 6, 7], train_size=12, per_class=True)


@pytest.fixture(scope="module")
def teacher():
    """A resnet8 (width 4) whose BatchNorm statistics are not the initial ones."""
    torch.manual_seed(0)
    m = create_model("resnet8", num_classes=5, width=4)
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.rand(16, 1, 28, 28))
    m.eval()
    return m


def _matrix_norm(w: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1).double(), 2))


def _operator_norm(conv: nn.Conv2d, in_shape: tuple[int, ...]) -> float:
    """The exact operator norm: √ of the largest eigenvalue of the smaller Gram matrix of
    :func:`_dense` (the same number as its SVD, cheaper for the 1,568 × 3,136 maps of resnet8)."""
    a = _dense(conv, in_shape)
    gram = a @ a.t() if a.shape[0] <= a.shape[1] else a.t() @ a
    return float(torch.linalg.eigvalsh(gram)[-1].sqrt())


def _dense(conv: nn.Conv2d, in_shape: tuple[int, ...]) -> torch.Tensor:
    """The convolution (no bias) as a dense matrix: its images of the identity basis as columns."""
    n = int(torch.tensor(in_shape).prod())
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    w = conv.weight.detach().double()
    out = nn.functional.conv2d(basis, w, None, conv.stride, conv.padding, conv.dilation, conv.groups)
    return out.reshape(n, -1).t()


# -- spectral normalisation ---------------------------------------------------------------------------


def _convex_then_folded(m, k, blocks, x):
    """Outputs of ``m`` on ``x``: plain, with convex residuals (after 3 BN-updating passes), folded."""
    with convex_residuals(blocks):
        m.train()
        with torch.no_grad():
            for _ in range(3):
                m(x)
        m.eval()
        with torch.no_grad():
            ref = m(x)
    with torch.no_grad():
        plain = m(x)
        fold_convex_residuals(m, k, blocks)
        folded = m(x)
    return plain, ref, folded


@pytest.mark.parametrize(
    "conv,in_shape",
    [
        (nn.Conv2d(2, 3, 3, padding=1), (2, 5, 5)),
        (nn.Conv2d(2, 4, 3, stride=2, padding=1), (2, 6, 6)),  # even size: output_padding needed
        (nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2), (4, 5, 5)),
        (nn.Conv2d(3, 2, 1, stride=2), (3, 5, 5)),
    ],
)
def test_operator_sigma_is_the_exact_operator_norm(conv, in_shape):
    torch.manual_seed(1)
    nn.init.normal_(conv.weight)
    w = conv.weight.detach()
    op = (in_shape, tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation), conv.groups)
    p = SpectralScale(w, 1.0, op, torch.Generator().manual_seed(0))
    p.converge(w)
    exact = float(torch.linalg.matrix_norm(_dense(conv, in_shape), 2))
    assert float(p.sigma(w)) == pytest.approx(exact, rel=1e-4)
    # a 1×1 kernel is the reshaped matrix applied per pixel; a larger one is not (the original's σ)
    assert (abs(_matrix_norm(w) - exact) > 1e-3 * exact) == (conv.kernel_size != (1, 1))


def test_power_iteration_runs_in_training_forwards_only():
    w = torch.randn(6, 4)
    p = SpectralScale(w, 0.5, generator=torch.Generator().manual_seed(0))
    u0 = p.u.clone()
    p.eval()(w)
    assert torch.equal(p.u, u0)
    p.train()(w)
    assert not torch.equal(p.u, u0)


@pytest.mark.parametrize("sigma", ["reshape", "operator"])
def test_folded_weights_have_spectral_norm_beta(teacher, data, sigma, assert_no_trace):
    beta = 0.6
    with assert_no_trace(teacher, state=True):  # the teacher is never touched
        student = CARTL(k=3, beta=beta, sigma=sigma, **FAST).transfer(teacher, data, seed=0, progress=False)
    m = student.model
    assert not assert_no_trace.hooks(m)  # no parametrization, no hook left on the saved student
    assert student.info["neft_layers"] == [
        "layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample.0",
        "layer3.0.conv1", "layer3.0.conv2", "layer3.0.downsample.0", "fc",
    ]  # fmt: skip
    shapes = {  # each conv's input (C, H, W) in the width-4 resnet8
        "layer2.0.conv1": (4, 28, 28), "layer2.0.conv2": (8, 14, 14), "layer2.0.downsample.0": (4, 28, 28),
        "layer3.0.conv1": (8, 14, 14), "layer3.0.conv2": (16, 7, 7), "layer3.0.downsample.0": (8, 14, 14),
    }  # fmt: skip
    for name in student.info["neft_layers"]:
        layer = m.get_submodule(name)
        if sigma == "operator" and name in shapes:
            norm = _operator_norm(layer, shapes[name])
        else:
            norm = _matrix_norm(layer.weight.detach())
        assert norm <= beta * (1 + 1e-3), name
        assert norm >= beta * (1 - 1e-3), name  # normalised to β, not merely below it
    # layers outside the fine-tuned blocks keep the teacher's weights
    assert torch.equal(m.layer1[0].conv1.weight, teacher.layer1[0].conv1.weight)


def test_every_conv_in_the_finetuned_blocks_is_normalised_nested_too():
    torch.manual_seed(0)
    body = nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU()),  # block 0 (frozen)
        nn.Sequential(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU()), nn.Conv2d(3, 3, 1)),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        nn.Linear(3, 2),
    )
    m = adapt(body, InputSpec(1, (6, 6), (0.0,), (1.0,)), head="3")
    layers = neft_layers(m, 3)
    assert [n for n, _ in layers] == ["module.1.0.0", "module.1.1", "module.3"]
    apply_neft(m, layers, 0.7)
    for name, mod in m.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            assert parametrize.is_parametrized(mod) == name.startswith(("module.1", "module.3")), name
            if name.startswith(("module.1", "module.3")):
                assert _matrix_norm(mod.weight.detach()) == pytest.approx(0.7, rel=1e-3)
                # the optimiser (and weight decay) sees the unnormalised W
                assert _matrix_norm(mod.parametrizations.weight.original.detach()) != pytest.approx(0.7)
    fold_neft(m)
    assert not any(parametrize.is_parametrized(x) for x in m.modules())


def test_resnet8_neft_reaches_the_nested_shortcut_conv():
    # the original's ResNet NEFT normalised only the fc: the shortcut conv sits in a nested Sequential
    names = [n for n, _ in neft_layers(create_model("resnet8"), 3)]
    assert "layer2.0.downsample.0" in names and "layer3.0.downsample.0" in names
    assert len(names) == 7


def test_neft_context_restores_the_weights_bit_identically(teacher, assert_no_trace):
    m = create_model("resnet8", num_classes=5, width=4)
    m.load_state_dict(teacher.state_dict())
    m.eval()
    weights = {n: p.detach().clone() for n, p in m.named_parameters()}
    with assert_no_trace(m):
        with neft(m, k=2, beta=0.5, sigma="operator") as names:
            assert parametrize.is_parametrized(m.fc)
            m.train()
            m(torch.rand(4, 1, 28, 28)).sum().backward()  # a training step's power iteration + graph
            m.eval()
            m.zero_grad(set_to_none=True)
        assert names[-1] == "fc"
    assert all(torch.equal(p, weights[n]) for n, p in m.named_parameters())
    with neft(m, k=1, beta=0.5, fold=True):
        pass
    assert _matrix_norm(m.fc.weight.detach()) == pytest.approx(0.5, rel=1e-4)


def test_neft_fold_keeps_the_function():
    torch.manual_seed(0)
    m = create_model("resnet8", num_classes=3, width=4).eval()
    apply_neft(m, neft_layers(m, 3), 0.5, "operator")
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        ref = m(x)
        fold_neft(m, refine=False)
        assert torch.allclose(m(x), ref, atol=1e-6)


# -- convex residuals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: create_model("resnet20", num_classes=3, in_channels=1, image_size=28, width=4),  # identity
        lambda: WideResNet(16, 1, 3, InputSpec.neutral(1, 28), activation="leaky_relu"),  # pre-activation
    ],
    ids=["resnet20", "wrn-16-1"],
)
def test_convex_residual_folds_exactly(make):
    torch.manual_seed(0)
    m = make()
    k = len(m.blocks()) - 1
    blocks = residual_blocks(m, k)
    assert len(blocks) >= 5  # identity and conv shortcuts
    x = torch.rand(6, 1, 28, 28)
    plain, ref, folded = _convex_then_folded(m, k, blocks, x)
    assert not torch.allclose(plain, ref, atol=1e-3)  # the convex sums do change the function
    assert torch.allclose(folded, ref, atol=1e-5, rtol=1e-4)
    assert all(not h for mod in m.modules() for h in (mod._forward_hooks, mod._forward_pre_hooks))


class _Res(nn.Module):
    """A residual block written outside the zoo: ``ReLU(BN(conv(ReLU(BN(conv(x))))) + x)``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv_a, self.bn_a = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv_b, self.bn_b = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.relu(self.bn_b(self.conv_b(torch.relu(self.bn_a(self.conv_a(x))))) + x)


class _Down(nn.Module):
    """A projection shortcut, summed with ``torch.add``: ``ReLU(body(x) + short(x))``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
        )  # fmt: skip
        self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(torch.add(self.body(x), self.short(x)))


class _ForeignResNet(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.r1, self.r2, self.r3 = _Res(4), _Down(4, 8), _Res(8)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.r3(self.r2(self.r1(self.stem(x))))
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _foreign(data, classes: int = 3):
    size = tuple(data.train.x.shape[-2:])
    return adapt(_ForeignResNet(classes), InputSpec(1, size, (0.0,), (1.0,)), head="fc",
                 blocks=["stem", "r1", "r2", "r3", "fc"])  # fmt: skip


def test_the_contract_finds_residual_blocks_of_a_foreign_model(data):
    m = _foreign(data)
    assert [n for n, _ in m.residual_blocks()] == ["module.r1", "module.r2", "module.r3"]
    assert [n for n, _ in residual_blocks(m, 2)] == ["module.r3"]
    assert [n for n, _ in create_model("resnet8").residual_blocks()] == ["layer1.0", "layer2.0", "layer3.0"]


def test_convex_residual_folds_exactly_on_a_foreign_model(data):
    torch.manual_seed(0)
    m = _foreign(data)
    k = len(m.blocks()) - 1
    blocks = residual_blocks(m, k)
    x = data.train.x[:6]
    plain, ref, folded = _convex_then_folded(m, k, blocks, x)
    assert not torch.allclose(plain, ref, atol=1e-4)  # the convex sums do change the function
    assert torch.allclose(folded, ref, atol=1e-5, rtol=1e-4)


def test_cartl_transfers_a_foreign_residual_model(data):
    torch.manual_seed(0)
    teacher = _foreign(data, classes=5)
    student = CARTL(k=4, beta=0.5, epochs=1, batch_size=16).transfer(teacher, data, seed=0, progress=False)
    assert student.info["convex_blocks"] == ["module.r1", "module.r2", "module.r3"]
    m = student.model
    assert not any(parametrize.is_parametrized(x) for x in m.modules())
    assert all(not h for mod in m.modules() for h in (mod._forward_hooks, mod._forward_pre_hooks))
    with torch.no_grad():
        assert m.eval()(data.test.x[:4]).shape == (4, data.num_classes)


class _Unfoldable(nn.Module):
    """A residual sum whose operand is no layer (a dropout call): convex, but cannot be folded."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.dropout(self.conv(x), 0.0, self.training) + x


def test_a_foreign_block_that_cannot_be_folded_is_refused_before_training(data):
    net = _ForeignResNet(5)
    net.r1 = _Unfoldable()
    m = adapt(net, InputSpec(1, tuple(data.train.x.shape[-2:]), (0.0,), (1.0,)), head="fc",
              blocks=["stem", "r1", "r2", "r3", "fc"])  # fmt: skip
    with pytest.raises(SafeReuseError, match="cannot fold the convex residual.*set convex_residual=false"):
        CARTL(k=4, epochs=1).transfer(m, data, seed=0, progress=False)


def test_saved_student_reloads_and_predicts_identically(tmp_path, data):
    torch.manual_seed(0)
    teacher = create_model("resnet20", num_classes=5, in_channels=1, image_size=28, width=4)
    student = CARTL(k=5, beta=0.5, sigma="operator", epochs=1, batch_size=16).transfer(
        teacher, data, seed=0, progress=False
    )
    # identity shortcuts (layer2.2, layer3.1, layer3.2) and a conv shortcut (layer3.0)
    assert student.info["convex_blocks"] == ["layer2.2", "layer3.0", "layer3.1", "layer3.2"]
    m = student.model.eval()
    save_model(m, tmp_path / "s", {"role": "student"})
    again = load_model(tmp_path / "s").model.eval()
    x = data.test.x[:20]
    with torch.no_grad():
        assert torch.equal(again(x), m(x))
    assert type(again) is type(m) and not any(parametrize.is_parametrized(x) for x in again.modules())


# -- frozen blocks and the four BatchNorm cases -----------------------------------------------------------


def test_frozen_blocks_bit_identical(teacher, data):
    student = CARTL(k=3, bn_stats="freeze", **FAST).transfer(teacher, data, seed=0, progress=False).model
    t = teacher.state_dict()
    for key, v in student.state_dict().items():
        if key.startswith(("conv1.", "bn1.", "layer1.")):
            assert torch.equal(v, t[key]), key


@pytest.mark.parametrize("method", ["cartl", "finetune-last-k"])
@pytest.mark.parametrize("bn_stats", ["update", "freeze"])
@pytest.mark.parametrize("bn_affine", ["train", "freeze"])
def test_batchnorm_cases_hold_in_every_epoch(teacher, data, method, bn_stats, bn_affine, monkeypatch):
    """Each training forward of every epoch — also those after fit's between-epoch evaluation — sees
    the frozen part's BatchNorm in the requested mode and the fine-tuned part's affine unchanged
    when frozen (the original code silently returned to train mode after epoch 1)."""
    frozen = {"bn1", "layer1.0.bn1", "layer1.0.bn2"}
    tuned = {"layer2.0.bn1", "layer2.0.bn2", "layer2.0.downsample.1", "layer3.0.bn1", "layer3.0.bn2",
             "layer3.0.downsample.1"}  # fmt: skip
    calls: list[tuple[bool, str, bool, float, float, float]] = []  # grad?, name, training, w, b, mean

    def hook(name):
        def record(m, _args):
            calls.append((torch.is_grad_enabled(), name, m.training, float(m.weight.detach().sum()),
                          float(m.bias.detach().sum()), float(m.running_mean.sum())))  # fmt: skip

        return record

    orig_prepare = METHODS.get(method).prepare

    def prepare(self, model, d, seed):
        prepared = orig_prepare(self, model, d, seed)
        for name, mod in model.named_modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.register_forward_pre_hook(hook(name))
        return prepared

    monkeypatch.setattr(METHODS.get(method), "prepare", prepare)
    METHODS.create(method, k=3, bn_stats=bn_stats, bn_affine=bn_affine, epochs=3, batch_size=16).transfer(
        teacher, data, seed=0, progress=False
    )
    assert {n for _, n, *_ in calls} == frozen | tuned
    # training forwards come in 3 epochs, separated by evaluation (no-grad) forwards
    phases = [g for i, (g, *_) in enumerate(calls) if i == 0 or g != calls[i - 1][0]]
    assert phases[:5] == [True, False, True, False, True]
    first = {}
    for grad, name, training, w, b, mean in calls:
        if not grad:
            assert not training  # fit's evaluation: eval mode everywhere
            continue
        w0, b0, mean0 = first.setdefault(name, (w, b, mean))
        if name in frozen:
            assert training == (bn_stats == "update"), (name, "every epoch")
            if bn_stats == "freeze":
                assert mean == mean0, name
            assert (w, b) == (w0, b0), name  # frozen block: never trained
        else:
            assert training, name  # the fine-tuned part always normalises with batch statistics
            if bn_affine == "freeze":
                assert (w, b) == (w0, b0), name
    tuned_w = {(n, w) for g, n, _, w, *_ in calls if g and n in tuned}
    assert (len(tuned_w) > len(tuned)) == (bn_affine == "train")  # trained affine does move
    frozen_mean = {(n, m) for g, n, *_, m in calls if g and n in frozen}
    assert (len(frozen_mean) > len(frozen)) == (bn_stats == "update")


# -- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0, -0.5, 1.5, float("nan")])
def test_bad_beta_is_one_line(beta):
    with pytest.raises(SafeReuseError, match="beta") as e:
        CARTL(beta=beta)
    assert "\n" not in str(e.value)


def test_k_beyond_the_blocks_is_one_line(teacher, data):
    with pytest.raises(SafeReuseError, match=r"k=9 is out of range: ResNet has 5 blocks") as e:
        CARTL(k=9, **FAST).transfer(teacher, data, seed=0, progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(SafeReuseError, match="k=0"):
        neft_layers(teacher, 0)


@pytest.mark.parametrize(
    "param,needle", [("beta=0", "beta=0 is invalid"), ("beta=1.5", "(0, 1]"), ("k=5", "k=5 is out of range")]
)
def test_cli_bad_beta_or_k_exits_2_with_one_line(capsys, tmp_path, digits_teacher_dir, param, needle):
    code, _, err = run_cli(
        capsys, "transfer", "--teacher", str(digits_teacher_dir), "--data", "digits", "--classes", "5-7",
        "--train-size", "4", "--per-class", "--method", "cartl", "-p", param, "-p", "epochs=1",
        "--out", str(tmp_path / "s"), "-q",
    )  # fmt: skip
    assert code == 2
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "s").exists()


def test_operator_mode_refuses_non_zero_padding():
    conv = nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular")
    body = nn.Sequential(conv, nn.Flatten(), nn.Linear(72, 2))
    m = adapt(body, InputSpec(1, (6, 6), (0.0,), (1.0,)), head="2")
    with pytest.raises(SafeReuseError, match="zero padding"):
        apply_neft(m, neft_layers(m, 3), 0.5, "operator")
    assert not any(parametrize.is_parametrized(x) for x in m.modules())


# -- LwF -----------------------------------------------------------------------------------------------------


def test_lwf_penalty_keeps_features_near_the_teacher(teacher, data):
    x = data.test.x[:32]

    def drift(weight: float) -> float:
        # (L1's subgradient has a fixed size: with lr · λ much larger SGD oscillates around the teacher)
        s = LwF(feature_weight=weight, lr=0.002, epochs=4, batch_size=16).transfer(
            teacher, data, seed=0, progress=False
        )
        assert s.info["head_phase"]["epochs"] == 2
        # measured as the penalty sees it: both with batch statistics (copies: no running-stat update)
        a, b = copy.deepcopy(s.model).train(), copy.deepcopy(teacher).train()
        with torch.no_grad():
            return float((a.features(x) - b.features(x)).abs().sum(1).mean())

    free, held = drift(0.0), drift(0.1)
    assert held < 0.7 * free


def test_lwf_loss_is_ce_plus_l1_distance():
    torch.manual_seed(0)
    s = create_model("smallcnn", num_classes=3).eval()
    t = create_model("smallcnn", num_classes=3).eval()
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 0])
    want = nn.functional.cross_entropy(s(x), y) + 0.5 * (s.features(x) - t.features(x)).abs().sum(1).mean()
    assert torch.isclose(feature_distance_loss(t, 0.5)(s, x, y), want)


# -- Rob on a subset: PGD-100 / AutoAttack next to PGD-20 in one audit --------------------------------
def test_whitebox_max_samples_attacks_the_evenly_spaced_subset_of_the_audit():
    from safereuse.defects import audit

    torch.manual_seed(0)
    d3 = load_data("digits", classes=[0, 1, 2])
    t, s = create_model("smallcnn", 3), create_model("smallcnn", 3)
    pgd = {"steps": 2, "eps": 0.1}
    full = audit(t, s, d3, [("pgd", pgd), ("pgd", {**pgd, "max_samples": 5})], max_samples=20, device="cpu")
    alone = audit(t, s, d3, [("pgd", pgd)], max_samples=5, device="cpu")
    r20, r5 = full.rows
    assert (r20.rates["rob"].n, r5.rates["rob"].n, r5.n <= 5) == (20, 5, True)
    assert r5.params["max_samples"] == 5 and r20.params["max_samples"] is None
    # every 4th of the audit's 20 evenly spaced images = the audit's own 5 evenly spaced ones
    assert r5.rates["rob"].k == alone.rows[0].rates["rob"].k
    assert r5.dir == alone.rows[0].dir


@pytest.mark.parametrize("name", ["pgd", "autoattack"])
@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_defect_max_samples_is_one_line(name, bad):
    from safereuse.defects import DEFECTS

    with pytest.raises(SafeReuseError, match="max_samples"):
        DEFECTS.create(name, max_samples=bad)


def test_neft_head_false_leaves_the_head_free(teacher, data):
    student = CARTL(k=2, beta=0.3, neft_head=False, **FAST).transfer(teacher, data, seed=0, progress=False)
    assert student.info["neft_layers"] == ["layer3.0.conv1", "layer3.0.conv2", "layer3.0.downsample.0"]
    m = student.model
    assert _matrix_norm(m.layer3[0].conv2.weight.detach()) == pytest.approx(0.3, rel=1e-3)
    # the fresh head (Kaiming-uniform, 3 × 64) is not rescaled to β: its norm is far from 0.3
    assert _matrix_norm(m.fc.weight.detach()) > 0.5


# -- spec: a method point on some scenarios only (e.g. the FDM teacher with the k it was trained for) --
def test_spec_method_scenarios_restricts_the_cells_and_keeps_labels():
    from safereuse.runner.spec import expand, load_spec

    text = """
scenarios:
  - {name: a, teacher: {arch: smallcnn, data: digits, classes: 0-4}, student: {data: digits, classes: 5-9}}
  - {name: b, teacher: {arch: smallcnn, data: digits, classes: 0-4}, student: {data: digits, classes: 0-4}}
methods:
  - {name: finetune-last-k, params: {k: [1, 2]}}
  - {name: finetune-last-k, params: {k: 3}, scenarios: [b]}
defects: [{name: fgsm}]
seeds: [0, 1]
"""
    cells = expand(load_spec(text=text))
    got = sorted((c.scenario, c.label, c.seed) for c in cells)
    assert len(cells) == 2 * (2 * 2 + 1)
    assert ("b", "finetune-last-k(k=3)", 1) in got and ("a", "finetune-last-k(k=3)", 0) not in got
    bad = text.replace("scenarios: [b]", "scenarios: [c]")
    with pytest.raises(SafeReuseError, match="no scenario is named 'c'"):
        expand(load_spec(text=bad))


@pytest.mark.parametrize(("arch", "kwargs", "acts"), [
    ("resnet8", {"width": 4}, False),  # post-activation: every conv feeds a BatchNorm
    ("wrn", {"depth": 16}, True),  # pre-activation: block3.layer.1.conv2 feeds an identity residual
])  # fmt: skip
def test_neft_on_convs_acts_only_where_no_batchnorm_follows(arch, kwargs, acts):
    # BatchNorm with batch statistics undoes any positive rescaling of the conv before it, so
    # β·W/σ(W) there leaves the training-mode function unchanged: NEFT's β can only bite on a branch
    # that reaches a residual sum or the logits un-normalised (docs/results/cartl.md)
    torch.manual_seed(0)
    m = create_model(arch, num_classes=5, in_channels=1, image_size=28, **kwargs).train()
    x = torch.rand(32, 1, 28, 28)
    with torch.no_grad():
        ref = m(x)
    convs = [(n, lay) for n, lay in neft_layers(m, 3) if isinstance(lay, nn.Conv2d)]
    apply_neft(m, convs, 0.4)
    try:
        with torch.no_grad():
            d = float((m(x) - ref).abs().max() / ref.abs().max())
    finally:
        for _, lay in convs:
            parametrize.remove_parametrizations(lay, "weight", leave_parametrized=False)
    assert (d > 0.05) if acts else (d < 5e-3), d

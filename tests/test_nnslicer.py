"""NNSlicer engine: contributions checked by hand, routing rules, invariants, every zoo model, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from safereuse.errors import SafeReuseError
from safereuse.slicing import Slicer, SliceResult

T = torch.tensor


def _linear(w: list[list[float]]) -> nn.Linear:
    lin = nn.Linear(len(w[0]), len(w), bias=False)
    with torch.no_grad():
        lin.weight.copy_(T(w))
    return lin


def _two_layer() -> nn.Sequential:
    return nn.Sequential(_linear([[1, 2], [-1, 1]]), nn.ReLU(), _linear([[1, -1], [2, 1]]))


# Profile set {[1, 0], [0, 1]}: means x̄ = [.5, .5], layer 0 [1.5, 0], ReLU [1.5, .5], layer 2 [1, 3.5].
# Input ξ = [2, 1]: layer 0 = [4, -1], ReLU = [4, 0], out = [4, 8] → predicted class 1.
# Δ: x [1.5, .5], layer 0 [2.5, -1], ReLU [2.5, -.5], layer 2 [3, 4.5].
PROFILE = T([[1.0, 0.0], [0.0, 1.0]])
XI = T([[2.0, 1.0]])


def test_two_layer_linear_by_hand_theta0():
    net = _two_layer()
    r = Slicer(theta=0.0).profile(net, PROFILE).slice(net, XI)
    assert r.layers == ["0", "2"] and r.count == 1
    # class 1: Δy = 4.5, terms w·Δx = [2·2.5, 1·(−.5)] = [5, −.5] → synapses [+1, −1];
    # class 0 is not the criterion
    assert torch.equal(r.synapse["2"], T([[0.0, 0.0], [1.0, -1.0]]))
    assert torch.equal(r.neuron["2"], T([0.0, 1.0]))  # the criterion neuron has contribution 1
    # ReLU units receive [1, −1]; the ReLU passes them on: sign(Δpre · Δpost) = [+, +]
    assert torch.equal(r.neuron["0"], T([1.0, -1.0]))
    # unit 0: CONTRIB 1, Δy 2.5, terms [1·1.5, 2·.5] → [+1, +1];
    # unit 1: CONTRIB −1, Δy −1, terms [−1·1.5, 1·.5] = [−1.5, .5] → sign(+1)·sign(terms) = [−1, +1]
    assert torch.equal(r.synapse["0"], T([[1.0, 1.0], [-1.0, 1.0]]))
    assert torch.equal(r.synapse_abs["0"], T([[1.0, 1.0], [1.0, 1.0]]))


def test_two_layer_linear_by_hand_theta():
    net = _two_layer()
    r = Slicer(theta=0.5).profile(net, PROFILE).slice(net, XI)
    # class 1: |terms| sorted [.5, 5], cumsum [.5, 5.5] < θ·4.5 = 2.25 drops the .5 term (unit 1)
    assert torch.equal(r.synapse["2"], T([[0.0, 0.0], [1.0, 0.0]]))
    assert torch.equal(r.neuron["0"], T([1.0, 0.0]))
    # unit 0: |terms| [1.5, 1] sorted [1, 1.5], cumsum [1, 2.5] < θ·2.5 = 1.25 drops input 1
    assert torch.equal(r.synapse["0"], T([[1.0, 0.0], [0.0, 0.0]]))


class _Const(nn.Module):
    """A conv net on constant images: a 2×2 kernel whose entries sum to the linear net's weight."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 2, bias=False)
        w = T([[1.0, 2.0], [-1.0, 1.0]])
        with torch.no_grad():  # W[o, i] = [[2v, −v], [0, 0]]: sums to v, not uniform
            self.conv.weight.copy_(
                torch.stack([2 * w, -w, torch.zeros_like(w), torch.zeros_like(w)], -1).view(2, 2, 2, 2)
            )
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = _linear([[1, -1], [2, 1]])

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.relu(self.conv(x))), 1))


def test_tiny_conv_net_by_hand():
    # constant 3×3 images: each channel's map is its constant, so the conv is the linear net above
    net = _Const()
    img = lambda v: T(v)[:, :, None, None].expand(-1, -1, 3, 3).contiguous()  # noqa: E731
    assert torch.allclose(net(img([[2.0, 1.0]])), T([[4.0, 8.0]]))
    for theta, s0, s2 in (
        (0.0, [[1.0, 1.0], [-1.0, 1.0]], [[0.0, 0.0], [1.0, -1.0]]),
        (0.5, [[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 0.0]]),
    ):
        r = Slicer(theta=theta).profile(net, img(PROFILE.tolist())).slice(net, img(XI.tolist()))
        assert r.layers == ["conv", "fc"]
        assert torch.equal(r.synapse["conv"], T(s0)), theta
        assert torch.equal(r.synapse["fc"], T(s2)), theta


class _Residual(nn.Module):
    def __init__(self, b: list[list[float]]) -> None:
        super().__init__()
        self.a, self.b, self.head = _linear([[1, 0], [0, 1]]), _linear(b), _linear([[1, 0], [0, 1]])

    def forward(self, x):
        return self.head(self.a(x) + self.b(x))


def test_residual_add_routes_to_each_addend():
    x = T([[1.0, 1.0]])
    # a = [1, 1], b = [−2, 1], sum [−1, 2] → class 1 (Δy 2 with reference zero); both addends agree
    r = Slicer(theta=0.0, reference="zero").slice(_Residual([[-2, 0], [0, 1]]), x)
    assert torch.equal(r.synapse["a"], T([[0.0, 0.0], [0.0, 1.0]]))
    assert torch.equal(r.synapse["b"], T([[0.0, 0.0], [0.0, 1.0]]))
    # b = [−2, −.5]: sum [−1, .5]; b's unit 1 pulls against the class → contribution −1
    r = Slicer(theta=0.0, reference="zero").slice(_Residual([[-2, 0], [0, -0.5]]), x)
    assert torch.equal(r.neuron["a"], T([0.0, 1.0])) and torch.equal(r.neuron["b"], T([0.0, -1.0]))
    assert torch.equal(r.synapse["b"], T([[0.0, 0.0], [0.0, -1.0]]))


def test_max_pool_routes_per_channel():
    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(T([1.0, -1.0]).view(2, 1, 1, 1))
    net = nn.Sequential(conv, nn.MaxPool2d(2), nn.Flatten(), _linear([[1, 1], [1, -1]]))
    x = T([[1.0, 2.0], [3.0, -4.0]]).view(1, 1, 2, 2)
    # channel means [.5, −.5]; maxima [3, 4] → out [7, −1], class 0 with terms [3, 4] → [+1, +1].
    # max-pool: channel 0 agrees (sign(.5·3) = +), channel 1 went down on average but its max went up
    r = Slicer(theta=0.0, reference="zero").slice(net, x)
    assert torch.equal(r.synapse["3"], T([[1.0, 1.0], [0.0, 0.0]]))
    assert torch.equal(r.neuron["0"], T([1.0, -1.0]))
    assert torch.equal(r.synapse["0"], T([[1.0], [-1.0]]))


def _bn_pair(seed: int = 0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(T([1.5, -0.7, -2.0]))
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    head = nn.Linear(3, 4)
    a = nn.Sequential(conv, bn, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    fused = nn.Conv2d(2, 3, 3, padding=1)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.copy_((conv.bias - bn.running_mean) * scale + bn.bias)
    b = nn.Sequential(fused, nn.Identity(), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    return a.eval(), b.eval()


@pytest.mark.parametrize("theta", [0.0, 0.3])
def test_negative_bn_scale_equals_folded_conv(theta):
    a, b = _bn_pair()
    x = torch.rand(16, 2, 5, 5)
    ra = Slicer(theta=theta).profile(a, x).slice(a, x, per_input=True)
    rb = Slicer(theta=theta).profile(b, x).slice(b, x, per_input=True)
    assert torch.allclose(a(x), b(x), atol=1e-5)
    # a negative BN scale flips Δ of the conv; the contribution (relative to its own Δ) is the same
    assert torch.equal(ra.synapse["0"], rb.synapse["0"]) and torch.equal(ra.neuron["0"], rb.neuron["0"])
    assert ra.synapse["0"].abs().sum() > 0


def _resnet():
    from safereuse.models import create_model

    torch.manual_seed(0)
    return create_model("resnet8", num_classes=5)


def test_batched_equals_one_by_one_and_set_is_sum():
    m = _resnet()
    x = torch.rand(6, 1, 28, 28)
    s = Slicer(theta=0.3).profile(m, torch.rand(20, 1, 28, 28))
    r = s.slice(m, x, per_input=True, batch_size=6)
    one = [s.slice(m, x[i : i + 1], per_input=True) for i in range(6)]
    for k in r.layers:
        assert torch.equal(r.synapse[k], torch.cat([o.synapse[k] for o in one]))
        assert torch.equal(r.neuron[k], torch.cat([o.neuron[k] for o in one]))
    total = s.slice(m, x, batch_size=4)  # a set, streamed in two batches
    for k in r.layers:
        assert torch.equal(total.synapse[k], r.synapse[k].float().sum(0))
        assert torch.equal(total.synapse_abs[k], r.synapse[k].abs().float().sum(0))
        assert torch.equal(total.neuron_abs[k], r.neuron[k].abs().sum(0))
    assert r.vector().shape == (6, sum(total.synapse[k].numel() for k in r.layers))
    # the criterion neuron (each input's predicted class) has contribution 1, the others 0
    pred = m.eval()(x).argmax(1)
    assert torch.equal(r.neuron["fc"], nn.functional.one_hot(pred, 5).float())
    # a given class / a set of output neurons
    rc = s.slice(m, x, criterion=[1, 3], per_input=True)
    assert torch.equal(rc.neuron["fc"].sum(0), T([0.0, 6.0, 0.0, 6.0, 0.0]))
    pen = s.slice(m, x, criterion="penultimate")
    assert "fc" not in pen.layers and pen.layers == r.layers[:-1]


def test_no_trace_left(assert_no_trace):
    m = _resnet()
    m.train()
    m.layer1[0].bn1.eval()  # a mixed state must come back as it was
    m.fc.weight.requires_grad_(False)
    m.conv1.weight.grad = torch.ones_like(m.conv1.weight)
    x = torch.rand(4, 1, 28, 28)
    with assert_no_trace(m, state=True):
        Slicer(theta=0.3).profile(m, x).slice(m, x, criterion="penultimate")
        with pytest.raises(SafeReuseError):
            Slicer(theta=0.3).profile(m, x).slice(m, x, criterion=7)


def test_save_load_round_trip(tmp_path):
    m = _resnet()
    x = torch.rand(3, 1, 28, 28)
    r = Slicer(theta=0.3).profile(m, x).slice(m, x)
    p = r.save(tmp_path / "s.safetensors")
    back = SliceResult.load(p)
    assert back.layers == r.layers and back.count == 3 and back.meta == r.meta
    assert all(torch.equal(back.synapse[k], r.synapse[k]) for k in r.layers)
    summ = r.summary()
    assert 0 < summ["fraction_synapses"] <= 1 and summ["layers"]["fc"]["neurons"] == 5
    assert (tmp_path / "s.json").is_file()


ZOO = [
    ("smallcnn", {}),
    ("resnet8", {}),
    ("resnet10", {}),
    ("resnet20", {"num_classes": 3}),
    ("resnet18", {"num_classes": 3, "image_size": 32}),
    ("resnet50", {"num_classes": 3, "image_size": 32}),
    ("vgg11", {"num_classes": 3, "image_size": 32}),
    ("mobilenet_v2", {"num_classes": 3, "image_size": 32, "width_mult": 0.25}),
    ("wrn-28-4", {"num_classes": 3}),
]


@pytest.mark.parametrize("name,kwargs", ZOO, ids=[z[0] for z in ZOO])
def test_every_zoo_model_slices(name, kwargs):
    from safereuse.models import create_model

    torch.manual_seed(0)
    m = create_model(name, **kwargs)
    c, (h, w) = m.input_spec.channels, m.input_spec.size
    x = torch.rand(2, c, h, w)
    r = Slicer(theta=0.0).profile(m, x).slice(m, x)
    convs = [n for n, mod in m.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    assert sorted(r.layers) == sorted(convs)
    assert r.layers[-1] == m.head_name and float(r.neuron[m.head_name].sum()) == 2.0
    for k in r.layers:  # the synapse shape is the weight's [C_out, C_in per group]
        assert tuple(r.synapse[k].shape) == tuple(m.get_submodule(k).weight.shape[:2])


def test_adapted_foreign_model():
    from safereuse.models import InputSpec, adapt

    body = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, groups=2),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )
    m = adapt(body, InputSpec(3, (8, 8), (0.5,) * 3, (0.25,) * 3), head="7")
    x = torch.rand(5, 3, 8, 8)
    r = Slicer(theta=0.2).profile(m, x).slice(m, x, per_input=True)
    assert r.layers == ["module.0", "module.3", "module.7"]
    assert tuple(r.synapse["module.3"].shape) == (5, 4, 2)
    # flatten of a 4×4×4 map: units sum back into 4 channels
    assert r.neuron["module.3"].shape == (5, 4)


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


class _Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

    def forward(self, x):
        return self.a(x) * torch.sigmoid(self.b(x))


@pytest.mark.parametrize(
    "call,needle",
    [
        (lambda: Slicer(theta=1.0), "theta=1.0 is outside [0, 1)"),
        (lambda: Slicer(theta=-0.1), "outside [0, 1)"),
        (
            lambda: Slicer(0.1, reference="zero").slice(_two_layer(), torch.zeros(0, 2)),
            "the input set is empty",
        ),
        (
            lambda: Slicer(0.1).profile(_two_layer(), PROFILE).slice(_two_layer(), XI, criterion=5),
            "class 5 does not exist",
        ),
        (
            lambda: Slicer(0.1).profile(_two_layer(), PROFILE).slice(_two_layer(), XI, criterion="best"),
            "unknown criterion",
        ),
        (lambda: Slicer(0.1).slice(_two_layer(), XI), "before Slicer.profile"),
        (lambda: Slicer(0.1, reference="zero").slice(_Untraceable(), XI), "cannot trace _Untraceable"),
        (lambda: Slicer(0.1, reference="zero").slice(_Gated(), XI), "operator.mul"),
    ],
)
def test_bad_input_one_line(call, needle):
    with pytest.raises(SafeReuseError) as e:
        call()
    line = e.value.one_line()
    assert needle in line and "\n" not in line, line


# -- CLI -------------------------------------------------------------------------------------------
def test_cli_slice_writes_file_and_summary(capsys, tmp_path, digits_teacher_dir):
    import json

    from cli_helpers import run_cli

    out = tmp_path / "s.safetensors"
    code, stdout, err = run_cli(
        capsys,
        "slice",
        "--model",
        str(digits_teacher_dir),
        "--limit",
        "20",
        "--theta",
        "0.3",
        "--out",
        str(out),
        "--json",
        "--quiet",
    )
    assert code == 0, err
    res = json.loads(stdout)
    assert res["count"] == 20 and res["criterion"] == "predicted" and 0 < res["fraction_synapses"] <= 1
    r = SliceResult.load(out)
    assert r.layers == ["conv1", "conv2", "fc1", "fc"] and float(r.neuron["fc"].sum()) == 20.0
    code, stdout, _ = run_cli(
        capsys,
        "slice",
        "--model",
        str(digits_teacher_dir),
        "--limit",
        "5",
        "--criterion",
        "class=2",
        "--out",
        str(out),
        "--quiet",
    )
    assert code == 0 and "sliced 5 test inputs" in stdout and "fc1:" in stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--theta", "1.5"], "outside [0, 1)"),
        (["--criterion", "class=9"], "class 9 does not exist"),
        (["--criterion", "best"], "unknown criterion"),
        (["--limit", "0"], "the input set is empty"),
        (["--split", "dev"], "unknown split"),
    ],
)
def test_cli_slice_bad_input(capsys, tmp_path, digits_teacher_dir, args, needle):
    from cli_helpers import assert_one_line_error, run_cli

    code, _, err = run_cli(
        capsys,
        "slice",
        "--model",
        str(digits_teacher_dir),
        "--limit",
        "3",
        "--out",
        str(tmp_path / "s.safetensors"),
        "--quiet",
        *args,
    )
    assert code == 2
    assert_one_line_error(code, err, needle)


# -- the transfer method ---------------------------------------------------------------------------
def test_method_resets_lowest_synapses_whole_kernels(assert_no_trace):
    from safereuse.methods import NNSlicerTransfer
    from safereuse.models import create_model

    torch.manual_seed(0)
    m = create_model("resnet8", num_classes=5)
    x = torch.rand(12, 1, 28, 28)
    method = NNSlicerTransfer(ratio=0.25, criterion="penultimate")
    with assert_no_trace(m, state=True):
        keep, scores, info = method.slice_keep(m, x)
    assert "fc.weight" not in keep and info["weights_reset"] == sum(int((~k).sum()) for k in keep.values())
    for name, k in keep.items():
        layer = name.removesuffix(".weight")
        w = m.get_submodule(layer).weight
        per_synapse = k.flatten(2).all(-1)
        assert torch.equal(per_synapse, k.flatten(2).any(-1))  # a kernel slice is kept or reset whole
        assert int((~per_synapse).sum()) == round(0.25 * per_synapse.numel())
        # every reset synapse scores at most as high as every kept one
        s = scores[layer]
        assert s[~per_synapse].max() <= s[per_synapse].min()
        assert k.shape == w.shape


def _naive_keep(a: torch.Tensor, cut: torch.Tensor) -> torch.Tensor:
    """The spec's θ rule one row at a time: sort ascending, drop the longest prefix whose running sum
    stays below the cut; terms equal to the first kept one are kept."""
    keep = torch.ones_like(a, dtype=torch.bool)
    for r in range(a.shape[0]):
        vals = sorted(a[r].tolist())
        total, k = 0.0, 0
        while k < len(vals) and total + vals[k] < cut[r].item():
            total += vals[k]
            k += 1
        first_kept = vals[k] if k < len(vals) else float("inf")
        keep[r] = a[r] >= first_kept
    return keep


@pytest.mark.parametrize(("rows", "width"), [(7, 9), (5000, 9), (300, 70), (40, 32)])
def test_theta_rule_equals_naive_rows(rows, width):
    """5000 rows: the sort is split over threads; widths 70 and 32: several blocks of the prefix
    count, one of them padded; some cuts above the row's total (the whole row is dropped)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 6, (rows, width), generator=g).float() / 4  # many ties and zeros
    cut = torch.rand(rows, 1, generator=g) * a.sum(1, keepdim=True) * 1.1
    cut[::5] = 0.0  # θ|Δy| = 0 keeps everything
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        got = a >= Slicer._threshold(a[:, None, :], cut[:, None, :]).squeeze(1)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(got, _naive_keep(a, cut))
    assert got[cut.squeeze(1) == 0].all()
    assert (~got).all(1).any()  # a cut above the total drops the whole row


# -- per-input criteria and the class-template identity (issue 22) ------------------------------------
def test_per_input_criterion_equals_slicing_each_input_under_its_class():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    x = torch.randn(7, 4)
    s = Slicer(theta=0.2).profile(net, torch.randn(50, 4))
    cls = T([2, 0, 1, 1, 0, 2, 2])
    r = s.slice(net, x, criterion=cls, per_input=True, batch_size=3)
    for n in range(len(x)):
        one = s.slice(net, x[n : n + 1], criterion=int(cls[n]), per_input=True)
        assert torch.equal(r.synapse["0"][n], one.synapse["0"][0])
        assert torch.equal(r.neuron["2"][n], one.neuron["2"][0])
    assert r.meta["criterion"] == "per-input"
    with pytest.raises(SafeReuseError, match="one class per input"):
        s.slice(net, x, criterion=cls[:3])
    with pytest.raises(SafeReuseError, match="outside the model's 3 outputs"):
        s.slice(net, x, criterion=torch.full((7,), 3))
    with pytest.raises(SafeReuseError, match="1-d integer"):
        s.slice(net, x, criterion=torch.zeros(7))


def test_synapse_entries_factor_into_a_class_template_at_theta_zero():
    """S_oi(ξ) = sign(Δy_k(ξ)) · C_k[o, i] · sign(Δx_i(ξ)) at θ = 0, with C_k a ternary table of the
    criterion class k and the weights alone: the Δ signs cancel in pairs along the backward walk, so
    two entries sharing an input channel multiply to a value fixed by k, whatever the input (why the
    paper's tree reads the criterion class back; docs/results/nnslicer-applications.md)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 3))
    prof, x = torch.randn(200, 5), torch.randn(40, 5)
    s = Slicer(theta=0.0).profile(net, prof)
    with torch.no_grad():
        h1 = net[1](net[0](x))
        h2 = net[3](net[2](h1))
        out = net[4](h2)
        m1, m2, mo = (net[1](net[0](prof)).mean(0), net[3](net[2](net[1](net[0](prof)))).mean(0),
                      net(prof).mean(0))  # fmt: skip
    inputs = {"0": torch.sign(x - prof.mean(0)), "2": torch.sign(h1 - m1), "4": torch.sign(h2 - m2)}
    for k in range(3):
        r = s.slice(net, x, criterion=k, per_input=True)
        # C_k by the recursion a_o(layer) → C[o, i] = a_o · sign(w_oi) → a_i(next) = sign(Σ_o C[o, i])
        a = torch.zeros(3)
        a[k] = 1.0
        for layer in ("4", "2", "0"):
            c = a[:, None] * torch.sign(net[int(layer)].weight.detach())
            dyk = torch.sign(out[:, k] - mo[k])[:, None, None]
            expected = dyk * c[None] * inputs[layer][:, None, :]
            assert torch.equal(r.synapse[layer].float(), expected), (k, layer)
            a = torch.sign(c.sum(0))
        # the product of two entries sharing an input channel does not depend on the input
        syn = r.synapse["2"].float()
        prod = syn[:, 0, :] * syn[:, 1, :]
        assert torch.equal(prod, prod[:1].expand_as(prod))

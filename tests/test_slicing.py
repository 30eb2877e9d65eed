"""The shared slicing layer: activation capture leaves no trace, masks apply and hold, one coverage
definition for ReMoS and nc-guided, nc-guided crafted sets independent of the batch size."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from safereuse.data import load_data
from safereuse.defects import DEFECTS
from safereuse.defects.attacks import craft_batched
from safereuse.defects.coverage_attacks import capture_conv_outputs, conv_layers, neuron_coverage
from safereuse.errors import SafeReuseError
from safereuse.models import InputSpec, adapt, create_model
from safereuse.slicing import (
    KeepMask,
    apply_reset,
    capture,
    channel_coverage,
    coverage_profile,
    magnitude_slice,
    make_criterion,
    nc,
    scaled_channel_means,
    slice_info,
    slice_layers,
    snac,
    split_like,
    tknc,
    weight_masks,
)


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True), nn.Linear(4, 2))


# -- capture ---------------------------------------------------------------------------------------


def test_capture_records_inputs_and_outputs_in_call_order(assert_no_trace):
    net = _mlp()
    x = torch.randn(5, 3)
    with assert_no_trace(net, state=True), capture(net, ["0", "2"], inputs=True) as cap:
        y = net(x)
        net(x[:2])
    assert [(r.name, r.site, r.value.shape[0]) for r in cap.records] == [
        ("0", "input", 5), ("0", "output", 5), ("2", "input", 5), ("2", "output", 5),
        ("0", "input", 2), ("0", "output", 2), ("2", "input", 2), ("2", "output", 2),
    ]  # fmt: skip
    assert torch.equal(cap.inputs("0")[0], x) and torch.equal(cap.outputs("2")[0], y.detach())
    assert cap.calls("2") == 2 and len(cap) == 8
    # not cloned: the in-place ReLU after layer 0 changed the recorded output; reduce=torch.clone keeps it
    assert bool((cap.outputs("0")[0] >= 0).all())
    with capture(net, ["0"], reduce=torch.clone) as kept:
        net(x)
    assert bool((kept.outputs()[0] < 0).any())


def test_capture_grad_keeps_the_graph_only_when_asked():
    net = _mlp()
    x = torch.randn(4, 3, requires_grad=True)
    with capture(net, ["2"], inputs=True, grad=True) as with_grad, capture(net, ["2"], inputs=True) as plain:
        net(x)
    (g,) = torch.autograd.grad(with_grad.inputs()[0].sum(), x)
    assert g.shape == x.shape and bool(g.abs().sum() > 0)
    assert not plain.inputs()[0].requires_grad


def test_capture_transform_replaces_the_output_and_active_pauses_recording(assert_no_trace):
    net = _mlp()
    x = torch.randn(4, 3)
    clean = net(x)
    with assert_no_trace(net), capture(net, ["2"], transform=lambda _m, out: out * 0) as cap:
        cap.active = False
        assert bool((net(x) == 0).all())  # the transform applies while not recording
        assert len(cap) == 0
        cap.active = True
        net(x)
        assert torch.equal(cap.outputs()[0], clean.detach())  # recorded before the transform
    assert torch.equal(net(x), clean)


@pytest.mark.parametrize("where", ["body", "reduce", "transform"])
def test_capture_removes_every_hook_when_something_raises(assert_no_trace, where):
    net = _mlp()

    def boom(*_a):
        raise KeyError("boom")

    with (
        assert_no_trace(net, state=True),
        pytest.raises(KeyError, match="boom"),
        capture(
            net,
            ["0", "2"],
            inputs=True,
            reduce=boom if where == "reduce" else None,
            transform=boom if where == "transform" else None,
        ),
    ):
        net(torch.randn(2, 3))
        boom()


def test_capture_rejects_unknown_layers_before_registering_anything(assert_no_trace):
    net = _mlp()
    unknown = pytest.raises(SafeReuseError, match=r"no layer 'nope'.*use one of: 0, 1, 2")
    with assert_no_trace(net), unknown, capture(net, ["0", "nope"]):
        pass
    with pytest.raises(SafeReuseError, match="no layer to capture"), capture(net, []):
        pass


def test_capture_of_the_head_input_is_what_features_returns(assert_no_trace):
    """The latent backdoor's and the contract's case: the head's input, with gradients."""
    model = create_model("smallcnn", num_classes=3, width=4, hidden=8)
    x = torch.rand(3, 1, 28, 28, requires_grad=True)
    with (
        assert_no_trace(model),
        capture(model, [model.head_name], inputs=True, outputs=False, grad=True) as cap,
    ):
        model(x)
    assert torch.allclose(cap.inputs()[0], model.features(x))
    assert cap.inputs()[0].requires_grad


def test_adapted_model_features_leave_no_hooks(assert_no_trace):
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    m = adapt(net, InputSpec(1, (2, 2), (0.0,), (1.0,)), head="3")
    x = torch.rand(2, 1, 2, 2)
    with assert_no_trace(m, state=True):
        f = m.features(x)
    assert torch.allclose(m.head(f), m(x))


def test_models_import_without_pulling_in_the_whole_slicing_stack():
    """models (with models.capture) and slicing import in any order (each first, in a fresh process)."""
    code = "import safereuse.models.contract, safereuse.slicing, safereuse.methods; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# -- masks -----------------------------------------------------------------------------------------


def test_masks_apply_reset_enforce_and_count(assert_no_trace):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2))
    layers = slice_layers(net, "all")
    assert [n for n, _ in layers] == ["0", "2"]
    keep = weight_masks(layers, magnitude_slice([m.weight for _, m in layers], 0.5))
    assert set(keep) == {"0.weight", "2.weight"} and all(k.dtype == torch.bool for k in keep.values())
    n = sum(k.numel() for k in keep.values())
    assert sum(int((~k).sum()) for k in keep.values()) == round(0.5 * n)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    apply_reset(net, keep)
    for name, k in keep.items():
        w = net.get_parameter(name).detach()
        assert bool((w[~k] == 0).all()) and torch.equal(w[k], before[name][k])
    # global selection: every reset weight was at most as large as every kept one
    reset_mag = torch.cat([before[k][~m].abs() for k, m in keep.items()])
    kept_mag = torch.cat([before[k][m].abs() for k, m in keep.items()])
    assert float(reset_mag.max()) <= float(kept_mag.min())
    assert torch.equal(net.get_parameter("0.bias"), before["0.bias"])  # biases untouched
    values = {k: torch.full(v.shape, 7.0) for k, v in keep.items()}
    apply_reset(net, keep, values)
    assert all(bool((net.get_parameter(k).detach()[~m] == 7.0).all()) for k, m in keep.items())
    # KeepMask pins the reset entries after an optimiser step and leaves the kept ones free
    pin = KeepMask(keep)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net(torch.rand(4, 1, 3, 3)).sum().backward()
    opt.step()
    pin(net)
    for name, k in keep.items():
        w = net.get_parameter(name).detach()
        assert bool((w[~k] == 0).all())
    info = slice_info(["0", "2"], keep)
    assert info["weights_total"] == n and info["weights_reset"] == round(0.5 * n)


def test_masks_leave_no_trace_besides_the_weights(assert_no_trace):
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    keep = {"0.weight": torch.ones(3, 3, dtype=torch.bool)}
    with assert_no_trace(net, state=True):
        apply_reset(net, keep)  # nothing reset: bit-identical
        KeepMask(keep)(net)


def test_split_like_and_slice_layers_skip_the_head():
    model = create_model("smallcnn", num_classes=3, width=4, hidden=8)
    names = [n for n, _ in slice_layers(model, "linear")]
    assert model.head_name not in names and names
    assert [t.tolist() for t in split_like(torch.arange(5), [torch.zeros(2), torch.zeros(3)])] == [
        [0, 1],
        [2, 3, 4],
    ]


# -- one coverage definition -----------------------------------------------------------------------


def test_channel_coverage_matches_the_definition():
    torch.manual_seed(0)
    t = torch.randn(6, 5, 4, 4, dtype=torch.float64)
    t[2] = 3.0  # a constant sample covers nothing
    m, valid = scaled_channel_means(t)
    lo = t.flatten(1).amin(1).view(-1, 1, 1, 1)
    hi = t.flatten(1).amax(1).view(-1, 1, 1, 1)
    by_hand = ((t - lo) / (hi - lo)).mean((2, 3))
    assert valid.tolist() == [True, True, False, True, True, True]
    assert torch.allclose(m[valid], by_hand[valid]) and bool((m[2] == 0).all())
    for crit in (nc(0.5), tknc(2), snac()):
        _, covered = channel_coverage(t, crit)
        assert not covered[2].any()
        assert torch.equal(covered[valid], crit(by_hand)[valid])


@pytest.mark.parametrize("coverage", ["nc", "tknc", "snac"])
def test_nc_guided_and_remos_count_the_same_neurons(assert_no_trace, coverage):
    """neuron_coverage (nc-guided) summed over inputs == coverage_profile's f_out (ReMoS)."""
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=3).eval()
    x = torch.rand(10, 1, 28, 28)
    with assert_no_trace(model, state=True):
        per_input = neuron_coverage(model, x, coverage, tau=0.5, top_k=3)
        crit = make_criterion(coverage, tau=0.5, top_k=3)
        prof = coverage_profile(model, x, [n for n, _ in conv_layers(model)], crit)
    expected = torch.cat([prof.f_out[n] for n, _ in conv_layers(model)])
    assert torch.equal(per_input.sum(0), expected)


def test_capture_conv_outputs_needs_a_conv_layer():
    with pytest.raises(SafeReuseError, match="no Conv2d"), capture_conv_outputs(_mlp()):
        pass


# -- nc-guided: each input is its own campaign -----------------------------------------------------


@pytest.fixture(scope="module")
def nc_model_and_images():
    torch.manual_seed(0)
    data = load_data("digits", classes=[0, 1, 2], train_size=30)
    # float64: the comparison must not depend on the CPU's float32 kernels (issue 8, item 10)
    model = create_model("smallcnn", num_classes=3, width=8, hidden=32).double().eval()
    return model, data.test.x[:12].double(), data.test.y[:12]


@pytest.mark.parametrize(
    "coverage, strategy",
    [("nc", "deepxplore"), ("tknc", "dlfuzz"), ("snac", "dlfuzzrr"), ("tknc", "deepxplore")],
)
def test_nc_guided_crafted_set_does_not_depend_on_the_batch_size(
    assert_no_trace, nc_model_and_images, coverage, strategy
):
    model, x, y = nc_model_and_images
    d = DEFECTS.create("nc-guided", coverage=coverage, strategy=strategy, steps=6, eps=0.1, alpha=0.02, k=5)
    with assert_no_trace(model, state=True):
        sets = [craft_batched(d, model, x, y, batch_size=bs) for bs in (12, 5, 1)]
    assert not torch.equal(sets[0], x)  # it did craft something
    assert torch.equal(sets[0], sets[1]) and torch.equal(sets[0], sets[2])


def test_nc_guided_seed_changes_the_random_strategy(nc_model_and_images):
    model, x, y = nc_model_and_images
    kw = dict(coverage="nc", strategy="deepxplore", steps=4, eps=0.1, alpha=0.02, k=3)
    a = craft_batched(DEFECTS.create("nc-guided", seed=0, **kw), model, x, y, batch_size=12)
    b = craft_batched(DEFECTS.create("nc-guided", seed=0, **kw), model, x, y, batch_size=4)
    c = craft_batched(DEFECTS.create("nc-guided", seed=1, **kw), model, x, y, batch_size=12)
    assert torch.equal(a, b) and not torch.equal(a, c)

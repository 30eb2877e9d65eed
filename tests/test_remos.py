"""ReMoS: coverage profile counted by hand, the slice's invariants, the NLP form, the saved slice."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from safereuse import api
from safereuse.artifacts import load_model
from safereuse.data import DataSpec, load_data
from safereuse.errors import SafeReuseError
from safereuse.methods import METHODS, ReMoS
from safereuse.models import InputSpec, adapt, create_model
from safereuse.slicing import (
    coverage_profile,
    fresh_state,
    magnitude_slice,
    nc,
    relevant_slice,
    smallest_k_mask,
    snac,
    tknc,
)

FAST = {"epochs": 1, "batch_size": 16}


@pytest.fixture(scope="module")
def student_data():
    return load_data("digits", classes=[5, 6, 7], train_size=10, per_class=True)


# -- coverage profile ------------------------------------------------------------------------------


def _toy_conv() -> tuple[nn.Module, torch.Tensor]:
    """A 1×1 conv (out0 = x0 + x1, out1 = −x1) and five 2×2 two-channel inputs."""
    conv = nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, -1.0]]).view(2, 2, 1, 1))

    def sample(c0, c1):
        return torch.tensor([c0, c1], dtype=torch.float32).view(2, 2, 2)

    x = torch.stack(
        [
            sample([1, 1, 1, 1], [0, 0, 0, 0]),  # in m=[1, 0]     out m=[1, 0]
            sample([0, 1, 0, 1], [1, 1, 1, 1]),  # in m=[.5, 1]    out m=[.83, 0]
            sample([0, 0, 0, 1], [0.4] * 4),  # in m=[.25, .4]  out m=[.58, 0]
            sample([0, 0, 0, 0], [0, 0, 0, 0]),  # constant: covers nothing
            sample([0, 0, 0, 0], [-1, -1, -1, -1]),  # in m=[1, 0]  out m=[0, 1]
        ]
    )
    return nn.Sequential(conv), x


@pytest.mark.parametrize(
    "criterion, f_in, f_out",
    [
        (nc(0.5), [2, 1], [3, 1]),  # m > .5: A in0, B in1, E in0 / A, B, C out0; E out1
        (nc(0.3), [3, 2], [3, 1]),  # C's in1 (.4) and B's in0 (.5) now count
        (tknc(1), [2, 2], [3, 1]),  # the larger channel of every non-constant sample
        (tknc(2), [4, 4], [4, 4]),  # every channel of the 4 non-constant samples
        (snac(), [2, 2], [3, 1]),  # above the midpoint of the sample's channel means
    ],
)
def test_coverage_counts_by_hand(criterion, f_in, f_out):
    model, x = _toy_conv()
    p = coverage_profile(model, x, ["0"], criterion, batch_size=2)
    assert p.f_in["0"].tolist() == f_in
    assert p.f_out["0"].tolist() == f_out
    assert p.samples == 5 and p.calls["0"] == 3 and p.not_called == []


def test_criteria_on_channel_means():
    m = torch.tensor([[0.1, 0.45, 0.6, 0.9]])
    assert nc(0.5)(m).tolist() == [[False, False, True, True]]
    assert tknc(1)(m).tolist() == [[False, False, False, True]]
    assert snac()(m).tolist() == [[False, False, True, True]]  # midpoint 0.5
    assert snac()(torch.tensor([[0.0, 0.2, 0.3]])).tolist() == [[False, True, True]]  # midpoint 0.15


def test_profile_is_batch_independent_and_leaves_no_trace(teacher, student_data, assert_no_trace):
    # float64: float32 conv kernels round differently per batch size and CPU, which can move an
    # activation across a coverage threshold; what is tested is the profile's own batch independence
    model = copy.deepcopy(teacher).double()
    model.train()
    model.bn1.eval()  # a mixed state must come back exactly
    x = student_data.train.x.double()
    layers = ["conv1", "conv2", "fc1"]
    with assert_no_trace(model, state=True):  # BN running stats untouched (eval mode), no hook left
        a = coverage_profile(model, x, layers, "snac", batch_size=1)
        b = coverage_profile(model, x, layers, "snac", batch_size=64)
    for name in layers:
        assert torch.equal(a.f_in[name], b.f_in[name]) and torch.equal(a.f_out[name], b.f_out[name])


def test_profile_hooks_removed_when_the_forward_fails(assert_no_trace):
    model, _ = _toy_conv()
    with assert_no_trace(model, state=True), pytest.raises(RuntimeError):
        coverage_profile(model, torch.zeros(2, 3, 2, 2), ["0"], "nc")  # wrong channel count


def test_profile_rejects_non_layers():
    with pytest.raises(SafeReuseError, match="is a ReLU"):
        coverage_profile(nn.Sequential(nn.ReLU()), torch.zeros(1, 2), ["0"], "nc")
    with pytest.raises(SafeReuseError, match="no layer 'nope'"):
        coverage_profile(nn.Sequential(nn.ReLU()), torch.zeros(1, 2), ["nope"], "nc")


# -- the slice -------------------------------------------------------------------------------------


def test_high_coverage_small_weight_kept_low_coverage_large_weight_reset():
    # one Linear(3, 3): input/output channel 0 is covered by every sample, channel 2 by none
    w = torch.tensor([[0.01, 0.5, 0.6], [0.4, 0.3, 0.7], [0.8, 0.9, 5.0]])
    f = torch.tensor([100, 50, 0])
    keep = relevant_slice([w], [f], [f], ratio=1 / 9)[0]
    assert not keep[2, 2]  # |w| = 5 (largest), coverage 0 (lowest): reset
    assert keep[0, 0]  # |w| = 0.01 (smallest), coverage 200 (highest): kept
    assert int((~keep).sum()) == 1
    # magnitude pruning would have dropped exactly the weight ReMoS keeps
    assert not magnitude_slice([w], 1 / 9)[0][0, 0]


def _naive_slice(weights, f_in, f_out, ratio, groups):
    """The definition, one weight at a time."""
    scores, mags = [], []
    for w, fi, fo, g in zip(weights, f_in, f_out, groups, strict=True):
        o_n, i_g = w.shape[:2]
        for idx in range(w.numel()):
            o, j = idx // (w.numel() // o_n), (idx // (w.numel() // (o_n * i_g))) % i_g
            scores.append(float(fi[(o // (o_n // g)) * i_g + j] + fo[o]))
            mags.append(abs(float(w.reshape(-1)[idx])))
    n = len(scores)
    r_cov, r_mag = [0] * n, [0] * n
    for r, e in enumerate(sorted(range(n), key=lambda e: (scores[e], e))):
        r_cov[e] = r
    for r, e in enumerate(sorted(range(n), key=lambda e: (mags[e], e))):
        r_mag[e] = r
    reset = set(sorted(range(n), key=lambda e: (r_cov[e] - r_mag[e], e))[: round(ratio * n)])
    return torch.tensor([e not in reset for e in range(n)])


@pytest.mark.parametrize("trial", range(6))
def test_slice_matches_the_definition(trial):
    g = torch.Generator().manual_seed(trial)
    weights, f_in, f_out, groups = [], [], [], []
    for layer in range(3):
        grp = 2 if (trial + layer) % 3 == 0 else 1
        o, i = (
            2 * int(torch.randint(1, 4, (1,), generator=g)),
            grp * int(torch.randint(1, 3, (1,), generator=g)),
        )
        shape = (o, i // grp, 3, 3) if trial % 2 else (o, i // grp)
        w = torch.randn(shape, generator=g)
        if trial % 3 == 0:
            w = w.round()  # many magnitude ties
        weights.append(w)
        f_in.append(torch.randint(0, 4, (i,), generator=g))
        f_out.append(torch.randint(0, 4, (o,), generator=g))
        groups.append(grp)
    ratio = float(torch.rand(1, generator=g))
    got = torch.cat([k.reshape(-1) for k in relevant_slice(weights, f_in, f_out, ratio, groups)])
    assert torch.equal(got, _naive_slice(weights, f_in, f_out, ratio, groups))


def test_slice_restores_the_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        relevant_slice([torch.randn(4, 3, 3, 3)], [torch.arange(3)], [torch.arange(4)], 0.5)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("n, span", [(50, 3), (300_001, 5), (300_001, 10**7), (300_001, 2**40)])
def test_smallest_k_is_exact_with_index_tie_break(n, span):
    g = torch.Generator().manual_seed(n + span)
    v = torch.randint(-span, span, (n,), generator=g)
    order = torch.argsort(v, stable=True)
    for k in (0, 1, n // 10, n // 2, n - 1, n) if n < 1000 else (1, n // 10, n - 1):
        want = torch.zeros(n, dtype=torch.bool)
        want[order[:k]] = True
        assert torch.equal(smallest_k_mask(v, k), want), k


@pytest.mark.parametrize("ratio", [0.0, 0.013, 0.1, 0.5, 1.0])
def test_number_of_reset_weights_is_round_ratio_n(teacher, student_data, ratio):
    sl = ReMoS(ratio=ratio).slice(teacher, student_data)
    total = sum(k.numel() for k in sl.keep.values())
    assert total == teacher.conv1.weight.numel() + teacher.conv2.weight.numel()
    assert sum(int((~k).sum()) for k in sl.keep.values()) == round(ratio * total)
    assert sl.info["weights_reset"] == round(ratio * total)


# -- the method ------------------------------------------------------------------------------------


def test_transfer_resets_then_keep_mask_holds_zeros(teacher, student_data, assert_no_trace):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    kw = dict(FAST, ratio=0.2, lr=0.05)
    kept = ReMoS(keep_mask=True, **kw).transfer(teacher, student_data, seed=0, progress=False)
    free = ReMoS(keep_mask=False, **kw).transfer(teacher, student_data, seed=0, progress=False)
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k  # the teacher is never modified
    for name in ("conv1.weight", "conv2.weight"):
        mask = kept.extras[f"remos.keep.{name}"]
        assert torch.equal(mask, free.extras[f"remos.keep.{name}"])  # same slice
        w_kept = kept.model.get_parameter(name).detach()
        w_free = free.model.get_parameter(name).detach()
        assert bool((w_kept[~mask] == 0).all())  # pinned through fine-tuning
        assert bool((w_free[~mask] != 0).any())  # without keep_mask, fine-tuning moves them
    for m in (kept.model, free.model):
        assert not assert_no_trace.hooks(m)  # no hook, no parametrization left on the student


def test_reinit_reset_uses_fresh_values(teacher, student_data):
    st = ReMoS(reset="reinit", keep_mask=True, ratio=0.3, **FAST).transfer(
        teacher, student_data, progress=False
    )
    mask = st.extras["remos.keep.conv2.weight"]
    w = st.model.conv2.weight.detach()
    fresh = fresh_state(st.model, 0)["conv2.weight"]  # seed 0: the transfer's seed
    assert torch.equal(w[~mask], fresh[~mask])
    assert not torch.equal(w[~mask], teacher.conv2.weight.detach()[~mask])


def test_slice_is_saved_and_inspectable(digits_teacher_dir, tmp_path):
    spec = DataSpec("digits", classes=[5, 6, 7], train_size=10, per_class=True)
    manifest = api.transfer(
        digits_teacher_dir, spec, "remos", {"ratio": 0.1, "criterion": "tknc", **FAST},
        out=tmp_path / "s", progress=False,
    )  # fmt: skip
    info = manifest["info"]
    assert info["weights_reset"] == round(0.1 * info["weights_total"])
    assert set(info["per_layer"]) == {"conv1", "conv2"}
    extras = load_file(str(tmp_path / "s" / "extras.safetensors"))
    assert extras["remos.keep.conv2.weight"].dtype == torch.bool
    assert extras["remos.f_out.conv2"].shape == (32,) and extras["remos.f_in.conv1"].shape == (1,)
    art = load_model(tmp_path / "s")
    assert sum(int((~v).sum()) for k, v in art.extras.items() if ".keep." in k) == info["weights_reset"]
    assert manifest["method"]["config"]["criterion"] == "tknc"


def test_bad_parameters_are_clear_errors():
    with pytest.raises(SafeReuseError, match="ratio"):
        ReMoS(ratio=1.5)
    with pytest.raises(SafeReuseError, match="criterion"):
        METHODS.create("remos", criterion="kmnc")
    with pytest.raises(SafeReuseError, match="reset"):
        ReMoS(reset="random")
    with pytest.raises(SafeReuseError, match="tau"):
        ReMoS(tau=1.5)


def test_layers_choice(teacher, student_data):
    lin = ReMoS(layers="linear", ratio=0.1).slice(teacher, student_data)
    assert list(lin.keep) == ["fc1.weight"]  # the head is never sliced
    both = ReMoS(layers="all", ratio=0.1).slice(teacher, student_data)
    assert list(both.keep) == ["conv1.weight", "conv2.weight", "fc1.weight"]


# -- NLP form: Linear layers of a tiny transformer -------------------------------------------------


class TinyTransformer(nn.Module):
    """Rows of a 28×28 image as 28 tokens → Linear embedding (d=16) → 1 encoder layer → mean → head."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Linear(28, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder(self.embed(x.flatten(1, 2))).mean(1))


def test_nlp_form_covers_linear_layers(student_data, assert_no_trace):
    torch.manual_seed(0)
    model = adapt(TinyTransformer(), InputSpec(1, (28, 28), (0.5,), (0.5,)), head="fc")
    method = ReMoS(ratio=0.2, criterion="nc", **FAST)
    sl = method.slice(model, student_data)
    assert "module.encoder.layers.0.self_attn.out_proj" in sl.info["layers_not_called"]  # read functionally
    linear1 = "module.encoder.layers.0.linear1"
    assert set(sl.keep) == {
        f"{n}.weight" for n in ("module.embed", linear1, "module.encoder.layers.0.linear2")
    }
    n = len(student_data.train)
    for name in ("module.embed", linear1):
        for f in (sl.profile.f_in[name], sl.profile.f_out[name]):
            assert 0 < int(f.sum()) < n * f.numel()  # something, but not everything, is covered
            assert len(set(f.tolist())) > 1
    # the coverage term changes the slice (the artifact's NLP configs covered nothing)
    weights = [model.get_parameter(k) for k in sl.keep]
    zeros = [torch.zeros_like(sl.profile.f_in[k[:-7]]) for k in sl.keep]
    zeros_out = [torch.zeros_like(sl.profile.f_out[k[:-7]]) for k in sl.keep]
    blind = relevant_slice(weights, zeros, zeros_out, 0.2)
    assert any(not torch.equal(a, b) for a, b in zip(sl.keep.values(), blind, strict=True))
    st = method.transfer(model, student_data, progress=False)
    assert st.info["weights_reset"] == round(0.2 * st.info["weights_total"])
    assert st.model(student_data.test.x[:2]).shape == (2, 3)
    assert not assert_no_trace.hooks(st.model)


def test_sequence_first_linear_inputs_are_found():
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=False)
    x = torch.randn(5, 3, 8)  # [T=5, N=3, D]

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(x.transpose(0, 1))

    p = coverage_profile(Wrap(), x.transpose(0, 1), ["layer.linear1"], "tknc")
    assert p.samples == 3 and int(p.f_in["layer.linear1"].sum()) == 3 * 8  # tknc(10) ⊇ all 8 channels


def test_model_without_conv_uses_linear_by_default():
    model = create_model("smallcnn", 3)
    assert ReMoS().slice(model, torch.rand(4, 1, 28, 28)).info["weights_total"] == 16 * 9 + 32 * 16 * 9
    mlp = adapt(
        nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.ReLU(), nn.Linear(8, 3)),
        InputSpec(1, (28, 28), (0.0,), (1.0,)),
        head="3",
    )
    assert list(ReMoS().slice(mlp, torch.rand(4, 1, 28, 28)).keep) == ["module.1.weight"]

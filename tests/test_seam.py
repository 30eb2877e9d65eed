"""SeaM: mask parametrization and gradient, target problems, selection, reengineer CLI, transfer method."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cli_helpers import assert_one_line_error, run_cli
from safereuse.artifacts import load_model
from safereuse.data import DataBundle, DataSpec, Split, load_data
from safereuse.data.targets import TargetSplit, target_problem
from safereuse.errors import SafeReuseError
from safereuse.methods import METHODS, SeaM
from safereuse.methods.seam import DEFAULT_FLOPS_WEIGHT, choose_flops_weight
from safereuse.models import create_model
from safereuse.slicing import maskparam
from safereuse.slicing.maskparam import (
    SELECTION_RULES,
    mask_scores,
    search_masks,
    select_epoch,
    selection_rule,
)


# -- the gradient ----------------------------------------------------------------------------------
def _layer() -> nn.Linear:
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[2.0, -1.0], [0.5, 3.0]]))
    return lin


def test_ste_gradient_by_hand():
    # out_i = Σ_j W_ij M_ij x_j; L = out · g  ⇒  ∂L/∂M_ij = g_i W_ij x_j
    lin, x, g = _layer(), torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, -1.0]])
    with mask_scores(lin) as sc:
        (lin(x) * g).sum().backward()
        grad = sc.parameters()[0].grad.clone()
    # raw ∂L/∂M = [[2, -2], [-0.5, -6]], clipped to [-1, 1] (hardtanh)
    assert grad.tolist() == [[1.0, -1.0], [-0.5, -1.0]]
    # α·ρ adds α/N = 2/4 to every score, after the clip: 1.5 is not clipped back to 1
    with mask_scores(lin) as sc:
        ((lin(x) * g).sum() + 2.0 * sc.rho()).backward()
        grad = sc.parameters()[0].grad.clone()
    assert grad.tolist() == [[1.5, -0.5], [0.0, -0.5]]


def test_alpha_over_n_pull_is_unclipped():
    lin = _layer()
    with mask_scores(lin) as sc:
        (8.0 * sc.rho()).backward()  # α/N = 8/4 = 2 > 1: a clipped STE would give 1
        assert sc.parameters()[0].grad.tolist() == [[2.0, 2.0], [2.0, 2.0]]
        assert sc.rho().item() == 1.0


def test_channel_scores_share_weight_rows_and_bias():
    conv = nn.Conv2d(1, 3, 2)  # 4 weights + 1 bias per channel, N = 15
    with mask_scores(conv, granularity="channel") as sc:
        assert len(sc.parameters()) == 1 and sc.parameters()[0].shape == (3,)
        sc.rho().backward()
        assert sc.parameters()[0].grad.tolist() == pytest.approx([5 / 15] * 3)
        with torch.no_grad():
            sc.parameters()[0][1] = -1.0
        assert sc.kept_fraction() == pytest.approx(10 / 15)
        out = conv(torch.rand(2, 1, 3, 3))
        masks = sc.masks()
    assert torch.equal(out[:, 1], torch.zeros_like(out[:, 1]))  # the channel is gone, bias included
    assert masks["weight"].shape == (3, 1, 2, 2) and masks["bias"].tolist() == [True, False, True]
    assert not masks["weight"][1].any() and masks["weight"][[0, 2]].all()


def test_masks_at_init_keep_everything_bit_for_bit(assert_no_trace):
    torch.manual_seed(0)
    m = create_model("resnet8", num_classes=5, width=4).eval()
    x = torch.rand(4, 1, 28, 28)
    ref = m(x)
    with assert_no_trace(m, state=True), mask_scores(m) as sc:
        assert torch.equal(m(x), ref)
        assert all(k.all() for k in sc.masks().values())
        assert sc.kept_fraction() == 1.0
        assert "fc.weight" in sc.masks() and "conv1.weight" in sc.masks()  # the model's own classifier too


def test_no_conv_or_linear_and_bad_granularity():
    with pytest.raises(SafeReuseError, match="no .* layer to mask"), mask_scores(nn.Sequential(nn.ReLU())):
        pass
    bad = pytest.raises(SafeReuseError, match="granularity 'row' does not exist")
    with bad, mask_scores(_layer(), granularity="row"):
        pass


def test_no_trace_when_the_search_raises(assert_no_trace):
    m = create_model("smallcnn", num_classes=3).eval()
    trace = assert_no_trace(m, state=True)
    with pytest.raises(RuntimeError, match="boom"), mask_scores(m) as sc:
        assert not any(p.requires_grad for p in m.parameters())  # frozen while masked
        (m(torch.rand(2, 1, 28, 28)).sum() + sc.rho()).backward()
        assert all(s.grad is not None for s in sc.parameters())
        raise RuntimeError("boom")
    trace.check()
    assert not assert_no_trace.hooks(m)


# -- selection -------------------------------------------------------------------------------------
def test_selection_rule():
    h = [
        {"val_acc": 0.90, "rho": 1.0},
        {"val_acc": 0.92, "rho": 0.3009},  # int(ρ·1000) = 300
        {"val_acc": 0.95, "rho": 0.3001},  # also 300, higher accuracy: wins the tie
        {"val_acc": 0.89, "rho": 0.05},  # below the reference: not eligible while others are
    ]
    assert select_epoch(h, 0.9) == 2
    assert select_epoch(h, 0.96) == 3  # none eligible: best acc − ρ (0.84 against 0.65, 0.62, -0.1)
    assert select_epoch(h[:2] + [{"val_acc": 0.92, "rho": 0.3002}], 0.9) == 1  # full tie: the earlier


def test_selection_guard():
    # none reaches 0.96; unguarded, SeaM's fallback takes ρ = 0.05 at 0.89 (0.84 beats 0.65, 0.62)
    h = [{"val_acc": 0.90, "rho": 1.0}, {"val_acc": 0.95, "rho": 0.30}, {"val_acc": 0.89, "rho": 0.05}]
    assert select_epoch(h, 0.96) == 2 and selection_rule(h[2], 0.96) == "fallback"
    # guard 0.02: only 0.95 is within 0.96 − 0.02, so the fallback compares it alone
    assert select_epoch(h, 0.96, 0.02) == 1 and selection_rule(h[1], 0.96, 0.02) == "fallback"
    # guard 0.005: no epoch within it, the most accurate is kept
    assert select_epoch(h, 0.96, 0.005) == 1 and selection_rule(h[1], 0.96, 0.005) == "guard"
    # an epoch reaching the reference is never affected by the guard
    assert select_epoch(h, 0.9, 0.0) == 1 and selection_rule(h[1], 0.9, 0.0) == "reference reached"
    assert SELECTION_RULES == ("reference reached", "fallback", "guard")


# -- target problems -------------------------------------------------------------------------------
def _bundle(y_train, y_val, y_test, c=4) -> DataBundle:
    def split(y):
        y = torch.tensor(y)
        return Split(torch.arange(len(y), dtype=torch.float32).view(-1, 1, 1, 1), y)

    names = [f"c{i}" for i in range(c)]
    return DataBundle(DataSpec("toy"), split(y_train), split(y_val), split(y_test), names)


def test_binary_problem_by_hand():
    b = _bundle([0, 1, 2, 3, 1, 1, 2, 0, 1], [1, 0, 3, 2], [1, 1, 2, 3, 0, 0])
    p = target_problem(b, [1], binary=True)
    # train: four 1s against four of the five others; the images are the originals (x = index)
    assert p.train.y.tolist().count(0) == 4 and p.train.y.tolist().count(1) == 4
    assert set(p.train.x.flatten().long().tolist()) >= {1, 4, 5, 8}
    assert ((p.train.source_y == 1) == (p.train.y == 0)).all()
    assert len(p.val) == 2 and len(p.test) == 4
    again = target_problem(b, [1], binary=True)  # drawn once, with a fixed seed
    assert torch.equal(again.train.x, p.train.x) and torch.equal(again.test.x, p.test.x)
    assert p.class_names == ["c1", "other"] and p.num_classes == 2
    # the original model: correct iff (pred == target) == (y == target)
    s = TargetSplit(torch.zeros(4, 1), torch.tensor([0, 0, 1, 1]), torch.tensor([1, 1, 2, 3]))
    logits = nn.functional.one_hot(torch.tensor([1, 2, 0, 1]), 4).float()
    assert p.original_correct(logits, s).tolist() == [True, False, True, False]


def test_multiclass_problem_by_hand():
    b = _bundle([0, 1, 2, 3, 2, 3], [3, 2, 0], [2, 3, 1, 3])
    p = target_problem(b, [3, 2])
    assert p.train.y.tolist() == [1, 0, 1, 0] and p.train.source_y.tolist() == [2, 3, 2, 3]
    assert p.test.y.tolist() == [1, 0, 0] and p.class_names == ["c3", "c2"]
    # argmax over ALL the model's classes, exact class only: predicting class 0 for a 2 is wrong even
    # though the re-engineered model could never say 0
    logits = nn.functional.one_hot(torch.tensor([2, 0, 3]), 4).float()
    assert p.original_correct(logits, p.test).tolist() == [True, False, True]


@pytest.mark.parametrize(
    "classes, binary, needle",
    [
        ([7], True, "target class 7 is outside the model's classes"),
        ([1, 2], True, "a binary target problem takes one class"),
        ([1], False, "needs at least two classes"),
        ([1, 1], False, "repeat"),
        ([], False, "names no class"),
    ],
)
def test_bad_target_problems(classes, binary, needle):
    with pytest.raises(SafeReuseError, match=needle):
        target_problem(_bundle([0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]), classes, binary)


def test_empty_target_problem():
    with pytest.raises(SafeReuseError, match="test split is empty"):
        target_problem(_bundle([0, 1, 2, 3], [0, 1, 2, 3], [0, 2, 2, 0]), [3, 1], False)


# -- the search ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_model():
    from safereuse.train import FitConfig, fit

    d = load_data("digits", classes=[0, 1, 2, 3])
    torch.manual_seed(0)
    m = create_model("smallcnn", num_classes=4)
    fit(m, d.train, d.val, FitConfig(epochs=1, progress=False))
    return m, d


def test_reengineer_leaves_the_model_as_it_came(digits_model, assert_no_trace):
    m, d = digits_model
    p = target_problem(d, [2], binary=True)
    with assert_no_trace(m, state=True):
        r = SeaM(epochs=6, lr_mask=0.2).reengineer(m, p, progress=False)
    assert 0.0 < r.weights_kept < 1.0  # a pull of α/N per step with lr 0.2 drops weights by epoch 6
    assert r.search.history[0]["phase"] == "head" and r.search.history[5]["phase"] == "head"
    assert [h["phase"] for h in r.search.history[1:5]] == ["mask"] * 4
    kept = sum(int(k.sum()) for k in r.masks.values()) / sum(k.numel() for k in r.masks.values())
    assert kept == pytest.approx(r.weights_kept)
    inner = r.model.inner.state_dict()
    for name, k in r.masks.items():  # masked weights are zero in the re-engineered model, others intact
        assert not inner[name][~k].any()
        assert torch.equal(inner[name][k], m.state_dict()[name][k])
    assert r.model(p.test.x[:3]).shape == (3, 2)
    assert r.search.epoch - 1 == select_epoch(r.search.history, r.val_acc_original, SeaM().max_acc_drop)
    rec = r.search.history[r.search.epoch - 1]
    assert r.search.rule == selection_rule(rec, r.val_acc_original, SeaM().max_acc_drop)
    assert r.metrics()["selection_rule"] == r.search.rule


def test_search_resumes_after_an_interruption(digits_model, tmp_path, monkeypatch):
    m, d = digits_model
    p = target_problem(d, [0], binary=True)

    def run(ck):
        return SeaM(epochs=3, lr_mask=0.2, alpha=2.0).reengineer(m, p, progress=False, checkpoint_dir=ck)

    whole = run(None)
    calls = {"n": 0}
    real = maskparam._accuracy

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(maskparam, "_accuracy", flaky)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path)
    monkeypatch.setattr(maskparam, "_accuracy", real)
    resumed = run(tmp_path)
    assert resumed.search.resumed_from == 2
    assert resumed.search.history == whole.search.history
    assert all(torch.equal(resumed.masks[k], whole.masks[k]) for k in whole.masks)


def test_search_stops_at_the_prune_threshold(digits_model):
    m, d = digits_model
    p = target_problem(d, [0, 1, 2])
    with mask_scores(m, "conv") as sc:
        r = search_masks(
            m, None, (p.train.x, p.train.y), (p.val.x, p.val.y), scores_of=lambda: sc, epochs=30,
            lr_mask=0.2, lr_head=1e-3, alpha=1.0, head_every=None, stop_removed=0.5,
            head_params=list(m.head.parameters()), progress=False,
        )  # fmt: skip
    assert 1 - r.rho >= 0.5 and len(r.history) == r.epoch < 30
    assert all(1 - h["rho"] < 0.5 for h in r.history[:-1])


def test_channel_search_selects_on_the_materialised_model():
    from safereuse.slicing.shrink import shrink_target_model
    from safereuse.train import FitConfig, accuracy_on, fit

    d = load_data("digits", classes=[0, 1, 2, 3])
    torch.manual_seed(0)
    m = create_model("resnet8", num_classes=4, width=4)
    fit(m, d.train, d.val, FitConfig(epochs=1, progress=False))
    p = target_problem(d, [1, 2, 3])
    r = SeaM(epochs=6, lr_mask=0.3, alpha=2.0, granularity="channel").reengineer(m, p, progress=False)
    assert 0.0 < r.weights_kept < 1.0 and "flops" in r.search.history[-1]
    assert (
        r.config["flops_weight"] is None
        and r.config["flops_weight_chosen"] == DEFAULT_FLOPS_WEIGHT["channel"]
    )
    small = shrink_target_model(r.model.cpu(), r.masks, p.test.x[:1])
    # the masks carry the BN entries and the readers' columns: the searched (masked) model is the
    # materialised one, so the validation accuracy selection saw is the materialised model's
    with torch.no_grad():
        assert (small(p.val.x) - r.model(p.val.x)).abs().max().item() <= 1e-5
    assert accuracy_on(small, p.val) == pytest.approx(r.val_acc)
    assert any(k.startswith("bn1.") for k in r.masks)


def test_choose_flops_weight_on_validation():
    from safereuse.slicing.maskparam import SearchResult

    def res(acc, rho, fl):
        return SearchResult({}, {}, 1, acc, rho, [{"val_acc": acc, "rho": rho, "flops": fl}])

    # eligible (≥ the reference): the fewest FLOPs kept wins, even at a higher ρ
    assert choose_flops_weight([res(0.95, 0.2, 0.30), res(0.93, 0.25, 0.10), res(0.5, 0.0, 0.0)], 0.9) == 1
    assert choose_flops_weight([res(0.95, 0.2, 0.1002), res(0.97, 0.25, 0.1008)], 0.9) == 1  # tie: acc
    assert choose_flops_weight([res(0.8, 0.2, 0.3), res(0.85, 0.2, 0.1)], 0.9) == 1  # fallback acc − ρ
    # the guard: 0.85 − 0.05 beats 0.89 − 0.5 unguarded; within 0.02 of 0.9 only 0.89 competes
    two = [res(0.89, 0.5, 0.4), res(0.85, 0.05, 0.02)]
    assert choose_flops_weight(two, 0.9) == 1 and choose_flops_weight(two, 0.9, 0.02) == 0
    assert choose_flops_weight(two, 0.9, 0.001) == 0  # none within: the most accurate
    with pytest.raises(SafeReuseError, match="flops_weight"):
        SeaM(flops_weight=[-1.0])


# -- the transfer method -------------------------------------------------------------------------
def test_seam_transfer_end_to_end(digits_teacher_dir, assert_no_trace):
    teacher = load_model(digits_teacher_dir).model
    data = load_data("digits", classes=[5, 6, 7], train_size=10, per_class=True)
    method = METHODS.create("seam", epochs=2, head_epochs=1, mask_epochs=30, lr_mask=0.2, keep_mask=True)
    with assert_no_trace(teacher, state=True):
        st = method.transfer(teacher, data, seed=0, progress=False)
    assert st.info["threshold_reached"] and st.info["reset_fraction"] >= 0.6
    sd = st.model.state_dict()
    keeps = {k[len("seam.keep.") :]: v for k, v in st.extras.items() if k.startswith("seam.keep.")}
    assert keeps and all(n.startswith("conv") for n in keeps)  # conv layers only
    for name, k in keeps.items():  # keep_mask: the removed weights stay zero through fine-tuning
        assert not sd[name][~k].any()
        assert sd[name][k].abs().sum() > 0
    assert st.model(data.test.x[:2]).shape == (2, 3)
    assert not assert_no_trace.hooks(st.model)


# -- the CLI ---------------------------------------------------------------------------------------
KEYS = {
    "acc_original", "acc_reengineered", "n", "weights_kept", "flops_original", "flops_reengineered",
    "latency_original_ms", "latency_reengineered_ms", "channels_removed", "channels_removed_per_layer",
    "flop_counter_original", "flop_counter_reengineered", "flops_weight", "selection_rule", "latency_rounds",
}  # fmt: skip


def test_cli_reengineer_json(digits_teacher_dir, tmp_path, capsys):
    out = tmp_path / "r"
    code, stdout, err = run_cli(
        capsys, "reengineer", "--model", str(digits_teacher_dir), "--target-classes", "3", "--binary",
        "-p", "epochs=2", "-p", "lr_mask=0.2", "--out", str(out), "--json", "--threads", "1",
    )  # fmt: skip
    assert code == 0, err
    res = json.loads(stdout)
    assert set(res) >= KEYS
    assert 0 <= res["acc_original"] <= 1 and 0 <= res["acc_reengineered"] <= 1 and res["n"] > 0
    assert set(res["latency_original_ms"]) == {"1", "64"} == set(res["latency_reengineered_ms"])
    assert res["flops_reengineered"] <= res["flops_original"]
    art = load_model(out)
    assert art.model.num_classes == 2 and art.manifest["target_head"]["kind"] == "binary"
    assert art.manifest["metrics"]["acc_reengineered"] == res["acc_reengineered"]
    # `evaluate` rebuilds the binary problem (same fixed-seed "others" sample) and scores it the same
    code, stdout, err = run_cli(capsys, "evaluate", "--model", str(out), "--json")
    assert code == 0, err
    ev = json.loads(stdout)
    assert ev["n"] == res["n"] and ev["acc"] == pytest.approx(res["acc_reengineered"])


def test_cli_reengineer_channel_is_materialised(digits_teacher_dir, tmp_path, capsys):
    out = tmp_path / "r"
    code, stdout, err = run_cli(
        capsys, "reengineer", "--model", str(digits_teacher_dir), "--target-classes", "1-3",
        "-p", "epochs=4", "-p", "lr_mask=0.3", "-p", "alpha=2", "-p", "granularity=channel",
        "-p", "flops_weight=[0,2]", "-p", "max_acc_drop=1", "--out", str(out), "--threads", "1", "-q",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    res = json.loads(stdout)
    assert set(res) >= KEYS
    per_layer = res["channels_removed_per_layer"]
    assert set(per_layer) == {"conv1", "conv2", "fc1"}  # the model's own head (fc2) keeps its classes
    removed = sum(v["removed"] for v in per_layer.values())
    assert removed > 0 and res["channels_removed"] == pytest.approx(
        removed / sum(v["of"] for v in per_layer.values())
    )
    assert 0 < res["flop_counter_reengineered"] < res["flop_counter_original"]
    # two searches, one per FLOPs weight; the one kept was chosen on validation data
    assert [t["flops_weight"] for t in res["flops_weight_trials"]] == [0.0, 2.0]
    assert res["flops_weight"] in (0.0, 2.0)
    art = load_model(out)
    small = art.model.inner  # the materialised inner model: its channels really went
    assert small.conv1.out_channels == per_layer["conv1"]["of"] - per_layer["conv1"]["removed"]
    # the multi-class artifact is the data slice of its classes: evaluate scores the target problem
    code, stdout, err = run_cli(capsys, "evaluate", "--model", str(out), "--json")
    assert code == 0
    assert json.loads(stdout)["acc"] == pytest.approx(art.manifest["metrics"]["acc_reengineered"])


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--target-classes", "7", "--binary"], "target class 7 is outside the model's classes"),
        (["--target-classes", "3", "--binary", "-p", "alpha=0"], "alpha=0 is invalid"),
        (["--target-classes", "3", "--binary", "-p", "lr_mask=-1"], "lr_mask=-1 is invalid"),
        (["--target-classes", "3", "--binary", "-p", "granularity=row"], "granularity='row' is invalid"),
        (["--target-classes", "3", "--binary", "-p", "alfa=1"], "has no parameter 'alfa'"),
        (["--target-classes", "3"], "needs at least two classes"),
    ],
)
def test_cli_reengineer_bad_input(digits_teacher_dir, tmp_path, capsys, args, needle):
    out = tmp_path / "r"
    code, _, err = run_cli(capsys, "reengineer", "--model", str(digits_teacher_dir), "--out", str(out), *args)
    assert code == 2
    assert_one_line_error(code, err, needle)
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing half-written

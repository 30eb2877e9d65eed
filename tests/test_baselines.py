"""ReMoS's baselines: mag-prune, DELTA, DELTA-R and Renofeation each change what they should."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from safereuse.data import load_data
from safereuse.errors import SafeReuseError
from safereuse.methods import METHODS, Delta, DeltaR, MagPrune, Renofeation
from safereuse.methods.baselines import FeatureRegulariser, WeightAverage, feature_modules, frozen_teacher

FAST = {"epochs": 1, "batch_size": 16}
CONVS = ("conv1.weight", "conv2.weight")


@pytest.fixture(scope="module")
def student_data():
    return load_data("digits", classes=[5, 6, 7], train_size=10, per_class=True)


@pytest.fixture(scope="module")
def no_val_data():
    """Without a validation split ``fit`` returns the last epoch, so runs compare like for like."""
    return load_data("digits", classes=[5, 6, 7], train_size=10, per_class=True, val_fraction=0.0)


def _train_mode_features(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Block outputs with batch-statistics BatchNorm (as in training), on a throw-away copy."""
    m = copy.deepcopy(model).train()
    out: list[torch.Tensor] = []
    for _, mod in feature_modules(m):
        mod.register_forward_hook(lambda _m, _a, o: out.append(o.detach().clone()))
    with torch.no_grad():
        m(x)
    return out


def _feature_distance(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    fa, fb = _train_mode_features(a, x), _train_mode_features(b, x)
    return sum(float((s - t).pow(2).mean() / t.pow(2).mean()) for s, t in zip(fa, fb, strict=True))


def _weight_distance(a: nn.Module, b: nn.Module) -> float:
    return sum(float((a.get_parameter(n).detach() - b.get_parameter(n).detach()).pow(2).sum()) for n in CONVS)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.detach().flatten(), b.detach().flatten()]))[0, 1])


# -- mag-prune -------------------------------------------------------------------------------------


def test_mag_prune_zeros_exactly_the_smallest_weights(teacher, student_data):
    prepared = MagPrune(ratio=0.5).prepare(copy.deepcopy(teacher), student_data, seed=0)
    t = torch.cat([teacher.get_parameter(n).detach().flatten() for n in CONVS])
    s = torch.cat([prepared.model.get_parameter(n).detach().flatten() for n in CONVS])
    keep = torch.cat([prepared.extras[f"mag-prune.keep.{n}"].flatten() for n in CONVS])
    assert int((~keep).sum()) == round(0.5 * t.numel()) == prepared.info["weights_reset"]
    assert bool((s[~keep] == 0).all()) and torch.equal(s[keep], t[keep])
    assert float(t[~keep].abs().max()) <= float(t[keep].abs().min())  # the smallest |w| went
    assert torch.equal(prepared.model.fc1.weight, teacher.fc1.weight)  # only conv layers by default


def test_mag_prune_keep_mask(teacher, student_data):
    kw = dict(FAST, ratio=0.6, lr=0.05)
    kept = MagPrune(keep_mask=True, **kw).transfer(teacher, student_data, progress=False)
    free = MagPrune(keep_mask=False, **kw).transfer(teacher, student_data, progress=False)
    for n in CONVS:
        mask = kept.extras[f"mag-prune.keep.{n}"]
        assert bool((kept.model.get_parameter(n).detach()[~mask] == 0).all())
        assert bool((free.model.get_parameter(n).detach()[~mask] != 0).any())


def test_mag_prune_ratio_is_checked():
    with pytest.raises(SafeReuseError, match="ratio"):
        METHODS.create("mag-prune", ratio=-0.1)


# -- DELTA / DELTA-R -------------------------------------------------------------------------------


def test_delta_with_a_large_penalty_stays_near_the_teacher(teacher, no_val_data):
    # "large", not "huge": with SGD a quadratic penalty is stable only while lr · curvature < 2 (1 + m)
    kw = dict(epochs=2, batch_size=16, lr=0.01)
    ft = METHODS.create("finetune", **kw).transfer(teacher, no_val_data, progress=False)
    delta = Delta(feature_weight=10.0, sp_weight=20.0, **kw).transfer(teacher, no_val_data, progress=False)
    x = no_val_data.train.x
    assert _weight_distance(delta.model, teacher) < 0.5 * _weight_distance(ft.model, teacher)
    assert _feature_distance(delta.model, teacher, x) < 0.5 * _feature_distance(ft.model, teacher, x)
    # with no penalty DELTA is fine-tuning
    plain = Delta(feature_weight=0.0, sp_weight=0.0, **kw).transfer(teacher, no_val_data, progress=False)
    for k, v in ft.model.state_dict().items():
        assert torch.allclose(v.float(), plain.model.state_dict()[k].float(), atol=1e-6), k


def test_delta_loss_is_zero_penalty_at_the_teacher(teacher, student_data, assert_no_trace):
    method = Delta(feature_weight=1.0, sp_weight=1.0)
    prepared = method.prepare(copy.deepcopy(teacher), student_data, seed=0)
    cfg = method.fit_config(0, "cpu", False)
    x, y = student_data.train.x[:16], student_data.train.y[:16]
    prepared.model.train()
    trace = assert_no_trace(prepared.model, prepared.teacher)
    with method.regulariser(prepared, cfg) as reg:
        total = reg.loss(prepared.model, x, y)
        ce = nn.functional.cross_entropy(prepared.model(x), y, label_smoothing=cfg.label_smoothing)
    # student == teacher: no penalty
    assert float(total.detach()) == pytest.approx(float(ce.detach()), abs=1e-5)
    trace.check()  # the regulariser's feature hooks are gone from both models


def test_delta_r_starts_fresh_but_is_pulled_to_the_teacher_features(teacher, no_val_data):
    kw = dict(epochs=3, batch_size=16, lr=0.05, head_lr_mult=1.0)
    retrain = METHODS.create("retrain", **kw).transfer(teacher, no_val_data, progress=False)
    dr = DeltaR(feature_weight=5.0, **kw).transfer(teacher, no_val_data, progress=False)
    assert abs(_corr(dr.model.conv2.weight, teacher.conv2.weight)) < 0.5  # not the teacher's weights
    assert dr.model.input_spec == teacher.input_spec  # teacher's normalisation kept
    x = no_val_data.train.x
    assert _feature_distance(dr.model, teacher, x) < 0.5 * _feature_distance(retrain.model, teacher, x)
    assert dr.info["reinit"] is True


# -- Renofeation -----------------------------------------------------------------------------------


def test_renofeation_reinitialises_averages_and_recomputes_bn(teacher, student_data, assert_no_trace):
    st = Renofeation(epochs=3, batch_size=16, swa_start=0.5).transfer(teacher, student_data, progress=False)
    assert abs(_corr(st.model.conv2.weight, teacher.conv2.weight)) < 0.5
    assert st.info["swa_epochs"] == 2  # epochs 2 and 3 (after int(0.5 · 3) = 1)
    # update_bn restarted the statistics: one pass over the training set
    assert int(st.model.bn1.num_batches_tracked) == math.ceil(len(student_data.train) / 16)
    assert not assert_no_trace.hooks(st.model)
    acc = float((st.model(student_data.val.x).argmax(1) == student_data.val.y).float().mean())
    assert st.fit is not None and st.fit.best_val_acc == pytest.approx(acc)


def test_weight_average_of_epoch_ends():
    lin = nn.Linear(1, 1, bias=False)
    avg = WeightAverage(lin, steps_per_epoch=2, first=1)  # average the ends of epochs 2 and 3
    for step in range(1, 7):
        with torch.no_grad():
            lin.weight.fill_(float(step))
        avg(lin)
    assert avg.count == 2
    avg.load_into(lin)
    assert float(lin.weight.detach()) == pytest.approx((4.0 + 6.0) / 2)


def test_weight_average_matches_the_hand_written_running_mean():
    """AveragedModel (issue 21) gives the weights of the former hand-written running mean, to 1e-6,
    and leaves the BatchNorm buffers alone (Renofeation recomputes them with update_bn)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    avg = WeightAverage(model, steps_per_epoch=3, first=2)
    ref: dict[str, torch.Tensor] = {}  # the running mean Renofeation used before AveragedModel
    count = 0
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(1, 3 * 6 + 1):  # 6 epochs of 3 steps: the ends of epochs 3..6 are averaged
        loss = model(torch.rand(4, 1, 6, 6)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        avg(model)
        if step % 3 == 0 and step // 3 > 2:
            count += 1
            for n, p in model.named_parameters():
                ref[n] = p.detach().clone() if n not in ref else ref[n] + (p.detach() - ref[n]) / count
    assert avg.count == count == 4
    stats = model[1].running_mean.clone()
    avg.load_into(model)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), ref[n], atol=1e-6, rtol=0)
    assert torch.equal(model[1].running_mean, stats)


def test_spatial_dropout_only_in_training_and_removed(teacher, assert_no_trace):
    student = copy.deepcopy(teacher)
    x = torch.rand(8, 1, 28, 28)
    student.eval()
    clean = student(x)
    trace = assert_no_trace(student)
    with FeatureRegulariser(frozen_teacher(teacher), student, 0.0, dropout=0.5):
        student.eval()
        assert torch.allclose(student(x), clean)
        student.train()
        maps: list[torch.Tensor] = []
        h = student.conv2.register_forward_hook(lambda _m, a, _o: maps.append(a[0]))  # sees bn1 → relu → pool
        torch.manual_seed(0)
        student(x)
        h.remove()
        zero_channels = (maps[0].flatten(2).abs().sum(2) == 0).float().mean()
        assert 0.2 < float(zero_channels) < 0.8  # whole channels dropped (Dropout2d), about half
    student.eval()  # the test itself switched to training mode above
    trace.check()


def test_baseline_parameters_are_checked():
    with pytest.raises(SafeReuseError, match="dropout"):
        Renofeation(dropout=1.0)
    with pytest.raises(SafeReuseError, match="sp_weight"):
        Delta(sp_weight=-1.0)
    assert DeltaR().sp_weight == 0.0 and Delta().sp_weight > 0

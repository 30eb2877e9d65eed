"""The training engine: selection on validation, freezing policies, leave-no-trace, resume."""

from __future__ import annotations

import math

import pytest
import torch

from safereuse.data import load_data
from safereuse.errors import SafeReuseError
from safereuse.models import create_model
from safereuse.train import FitConfig, accuracy_on, fit, lr_factor, trainable_names


@pytest.fixture(scope="module")
def data():
    return load_data("digits", classes=[0, 1, 2], train_size=150)


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("smallcnn", num_classes=3, width=4, hidden=16)


def _cfg(**kw) -> FitConfig:
    base = dict(epochs=2, batch_size=32, lr=0.05, progress=False, seed=0)
    base.update(kw)
    return FitConfig(**base)


def test_fit_learns_and_keeps_best_validation_weights(data):
    m = _model()
    r = fit(m, data.train, data.val, _cfg(epochs=3))
    assert r.epochs_run == 3 and len(r.history) == 3
    assert r.best_val_acc == max(h["val_acc"] for h in r.history)
    assert math.isclose(accuracy_on(m, data.val), r.best_val_acc, abs_tol=1e-6)
    assert accuracy_on(m, data.test) > 0.6  # 3 classes: chance is 1/3


def test_last_k_freezing_keeps_frozen_weights_and_bn_stats_bit_identical(data):
    m = _model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    cfg = _cfg(train_last_k=1, bn_stats="freeze")
    assert trainable_names(m, cfg) == {"fc.weight", "fc.bias"}
    fit(m, data.train, data.val, cfg)
    after = m.state_dict()
    for k, v in before.items():
        if k.startswith("fc."):
            assert not torch.equal(v, after[k]), k
        else:
            assert torch.equal(v, after[k]), k


def test_bn_stats_update_changes_running_stats_of_frozen_part(data):
    m = _model()
    before = m.bn1.running_mean.clone()
    w_before = m.conv1.weight.clone()
    fit(m, data.train, data.val, _cfg(train_last_k=1, bn_stats="update", epochs=1))
    assert not torch.equal(before, m.bn1.running_mean)
    assert torch.equal(w_before, m.conv1.weight)


def test_bn_affine_freeze_keeps_affine_of_trained_part(data):
    m = _model()
    w, b = m.bn2.weight.clone(), m.bn2.bias.clone()
    conv = m.conv2.weight.clone()
    fit(m, data.train, data.val, _cfg(bn_affine="freeze", epochs=1))
    assert torch.equal(w, m.bn2.weight) and torch.equal(b, m.bn2.bias)
    assert not torch.equal(conv, m.conv2.weight)


def test_fit_leaves_no_trace(data, assert_no_trace):
    m = _model()
    m.conv1.weight.requires_grad_(False)  # a frozen parameter and a mixed mode must come back as they were
    m.eval()
    m.bn2.train()
    with assert_no_trace(m):  # the weights change (that is training), nothing else does
        fit(m, data.train, data.val, _cfg(epochs=1, train_last_k=2))


def test_head_lr_multiplier_builds_two_groups(data):
    from safereuse.train import make_optimizer

    m = _model()
    cfg = _cfg(head_lr_mult=10.0)
    opt = make_optimizer(m, trainable_names(m, cfg), cfg)
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs == pytest.approx([0.05, 0.5])
    head_params = {id(p) for p in m.fc.parameters()}
    big = next(g for g in opt.param_groups if g["lr"] == pytest.approx(0.5))
    assert {id(p) for p in big["params"]} == head_params


def test_lr_schedules_hand_checked():
    cos = _cfg(epochs=2, schedule="cosine")
    assert lr_factor(cos, 0, 10) == pytest.approx(1.0)
    assert lr_factor(cos, 10, 10) == pytest.approx(0.5)  # half-way: cos(pi/2)
    step = _cfg(epochs=4, schedule="step", step_size=2, gamma=0.1)
    assert [lr_factor(step, s, 5) for s in (0, 9, 10, 19)] == pytest.approx([1, 1, 0.1, 0.1])
    warm = _cfg(epochs=2, schedule="cosine", warmup_epochs=1)
    assert lr_factor(warm, 0, 4) == pytest.approx(0.25)


def test_resume_after_interrupt_matches_uninterrupted_run(data, tmp_path):
    cfg = _cfg(epochs=3)
    ref = _model()
    fit(ref, data.train, data.val, cfg)

    steps = {"n": 0}

    def boom(_m):
        steps["n"] += 1
        if steps["n"] == len(range(0, len(data.train), 32)) + 2:  # inside epoch 2
            raise KeyboardInterrupt

    m = _model()
    with pytest.raises(KeyboardInterrupt):
        fit(m, data.train, data.val, cfg, after_step=boom, checkpoint_dir=tmp_path)
    m2 = _model(seed=123)  # different init: everything must come from the checkpoint
    r = fit(m2, data.train, data.val, cfg, checkpoint_dir=tmp_path)
    assert r.resumed_from == 1 and r.epochs_run == 3
    for k, v in ref.state_dict().items():
        assert torch.allclose(v.float(), m2.state_dict()[k].float(), atol=1e-5), k


def test_changed_config_does_not_resume(data, tmp_path):
    fit(_model(), data.train, data.val, _cfg(epochs=1), checkpoint_dir=tmp_path)
    r = fit(_model(), data.train, data.val, _cfg(epochs=1, lr=0.01), checkpoint_dir=tmp_path)
    assert r.resumed_from == 0


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"epochs": 0}, "training: epochs=0 is invalid (expected an integer ≥ 1)"),
        ({"epochs": 2.5}, "training: epochs=2.5 is invalid (expected an integer ≥ 1)"),
        ({"optimizer": "rmsprop"}, "training: optimizer='rmsprop' is invalid (expected one of sgd, adam)"),
        ({"lr": 0}, "training: lr=0 is invalid (expected a number > 0)"),
        ({"lr": "fast"}, "training: lr='fast' is invalid (expected a number > 0)"),
        ({"lr": math.nan}, "training: lr=nan is invalid (expected a number > 0)"),
        ({"label_smoothing": 1.0}, "training: label_smoothing=1.0 is invalid (expected a number in [0, 1))"),
        ({"train_last_k": 0}, "training: train_last_k=0 is invalid (expected an integer ≥ 1 or None)"),
        ({"progress": "maybe"}, "training: progress='maybe' is invalid (expected true or false)"),
    ],
)
def test_bad_settings_are_one_line_errors(kwargs, expected):
    with pytest.raises(SafeReuseError) as ei:
        FitConfig(**kwargs)
    assert ei.value.problem == expected


def test_yaml_style_strings_are_coerced():
    cfg = FitConfig(lr="1e-3", epochs="3", batch_size=16.0, progress="false")  # type: ignore[arg-type]
    assert (cfg.lr, cfg.epochs, cfg.batch_size, cfg.progress) == (0.001, 3, 16, False)
    assert type(cfg.epochs) is int and type(cfg.batch_size) is int
    assert FitConfig(lr=1).lr == 1 and type(FitConfig(lr=1).lr) is int  # ints stay ints: same config hash


def test_divergence_and_nothing_to_train_are_clear_errors(data):
    m = _model()
    with pytest.raises(SafeReuseError, match="diverged"):
        fit(m, data.train, data.val, _cfg(lr=1e12, momentum=0.0, epochs=2, weight_decay=0.0))
    frozen = _model().requires_grad_(False)
    with pytest.raises(SafeReuseError, match="nothing to train"):
        fit(frozen, data.train, data.val, _cfg())


def test_adam_and_constant_schedule_run(data):
    m = _model()
    r = fit(
        m, data.train, data.val, _cfg(optimizer="adam", lr=1e-3, schedule="constant", epochs=1, patience=1)
    )
    assert r.epochs_run == 1


def test_min_steps_per_epoch_repeats_few_shot_data(data):
    """Few-shot data: an epoch is at least min_steps_per_epoch full batches of fresh shuffles."""
    seen: list[int] = []

    def count(model, x, y):
        seen.append(len(x))
        return torch.nn.functional.cross_entropy(model(x), y)

    small = data.train.__class__(data.train.x[:20], data.train.y[:20])
    fit(_model(), small, None, _cfg(epochs=2, batch_size=16, min_steps_per_epoch=5), loss_fn=count)
    assert seen == [16] * 10  # 2 epochs × 5 steps (one pass would be 16 + 4)
    seen.clear()
    fit(_model(), small, None, _cfg(epochs=2, batch_size=16), loss_fn=count)
    assert seen == [16, 4, 16, 4]  # the default: one pass per epoch, unchanged
    assert lr_factor(_cfg(epochs=2), 9, 5) < lr_factor(_cfg(epochs=2), 5, 5)  # cosine over all steps


def test_keep_last_epoch_and_config_keys(data):
    m = _model()
    r = fit(m, data.train, data.val, _cfg(epochs=3, keep_epoch="last"))
    assert r.best_epoch == 3 and r.best_val_acc == r.history[-1]["val_acc"]
    assert math.isclose(accuracy_on(m, data.val), r.history[-1]["val_acc"], abs_tol=1e-6)
    # defaults are left out of to_dict, so configs written before these fields keep their hashes
    assert "keep_epoch" not in _cfg().to_dict() and "min_steps_per_epoch" not in _cfg().to_dict()
    assert _cfg(keep_epoch="last", min_steps_per_epoch=4).to_dict()["min_steps_per_epoch"] == 4
    with pytest.raises(SafeReuseError, match="min_steps_per_epoch"):
        _cfg(min_steps_per_epoch=0)

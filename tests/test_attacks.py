"""Exploratory defects: invariants on a tiny trained model, batching, RNG, caching, errors."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from torch import nn

from safereuse.data import load_data
from safereuse.defects import DEFECTS, craft_batched, pgd_attack
from safereuse.defects.attacks import guide_indices
from safereuse.defects.cache import DefectCache, model_hash
from safereuse.defects.coverage_attacks import neuron_coverage
from safereuse.errors import SafeReuseError
from safereuse.models import InputSpec, adapt, create_model
from safereuse.train import FitConfig, fit, predict

N = 24


@pytest.fixture(scope="module")
def trained():
    """smallcnn trained on digits 0-2 (a few seconds) and 24 test images."""
    torch.manual_seed(0)
    data = load_data("digits", classes=[0, 1, 2], train_size=90)
    m = create_model("smallcnn", num_classes=3, width=8, hidden=32)
    fit(m, data.train, data.val, FitConfig(epochs=6, batch_size=32, lr=0.05, progress=False))
    return m.eval(), data.test.x[:N], data.test.y[:N]


# (name, params, ball norm or None for unbounded); steps kept small for speed
CASES = [
    ("fgsm", {}, "linf"),
    ("pgd", {"steps": 5}, "linf"),
    ("pgd", {"norm": "l2", "steps": 5}, "l2"),
    ("penultimate", {"steps": 5}, "linf"),
    ("mimic", {"steps": 5}, "linf"),
    ("nc-guided", {"steps": 3}, "linf"),
    ("nc-guided", {"coverage": "tknc", "strategy": "dlfuzzrr", "steps": 3}, "linf"),
    ("cw", {"binary_search_steps": 1, "max_iter": 3, "eps": 0.5}, "l2"),
    ("deepfool", {"max_iter": 5}, None),
    ("autoattack", {"steps": 3}, "linf"),
]


def _acc(model, x, y) -> float:
    return float((predict(model, x).argmax(1) == y).float().mean())


@pytest.mark.parametrize(("name", "params", "ball"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_attack_invariants(trained, name, params, ball, assert_no_trace):
    model, x, y = trained
    defect = DEFECTS.create(name, **params)
    # leave-no-trace baseline: training mode on (BN batch statistics would move), one parameter frozen
    model.train()
    frozen = next(model.parameters())
    frozen.requires_grad_(False)
    try:
        with assert_no_trace(model, state=True):
            xa = defect.craft(model, x, y)
    finally:
        frozen.requires_grad_(True)
        model.eval()
    assert xa.shape == x.shape and xa.dtype == x.dtype and not xa.requires_grad
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    if ball is not None:
        eps = defect.eps
        if ball == "linf":
            assert float((xa - x).abs().max()) <= eps + 1e-6
        else:
            assert float((xa - x).flatten(1).norm(dim=1).max()) <= eps + 1e-5
    assert _acc(model, xa, y) <= _acc(model, x, y)


def test_whitebox_l2_pgd_actually_hurts(trained):
    model, x, y = trained
    xa = DEFECTS.create("pgd", norm="l2", eps=1.5, steps=10).craft(model, x, y)
    assert _acc(model, xa, y) < _acc(model, x, y)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("fgsm", {}),
        ("pgd", {"random_start": False, "steps": 4}),
        ("pgd", {"random_start": False, "steps": 4, "norm": "l2"}),
        ("penultimate", {"random_start": False, "steps": 4}),
    ],
)
def test_batched_equals_unbatched_for_deterministic_attacks(trained, name, params):
    # In float64: float32 kernels sum a batch in an order that depends on the batch size and on the
    # CPU (AVX2 vs AVX-512), which flips the sign of near-zero gradient components, and a sign step
    # moves a pixel by a whole alpha. float64 makes that rounding ~1e-16 relative, so any difference
    # left is a real batch dependence (a shared state, a batch-wide normalisation) — what this tests.
    model, x, y = trained
    model64, x64 = copy.deepcopy(model).double(), x[:8].double()
    d = DEFECTS.create(name, **params)
    whole = craft_batched(d, model64, x64, y[:8], batch_size=8)
    singles = craft_batched(d, model64, x64, y[:8], batch_size=1)
    assert whole.dtype == torch.float64
    torch.testing.assert_close(whole, singles, atol=1e-12, rtol=0)
    assert not torch.equal(whole, x64)  # the attack did move the images


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_more_pgd_steps_never_give_higher_robust_accuracy(trained, norm):
    """Issue 21 item 8: PGD keeps each input's strongest iterate (first that flips, else highest
    loss), so on the same images and the same random start PGD-50 ≤ PGD-20 ≤ PGD-5 in robust accuracy."""
    model, x, y = trained
    alpha = {"linf": 2 / 255, "l2": 0.1}[norm]  # fixed, so every run follows the same trajectory
    rob = []
    for steps in (5, 20, 50):
        d = DEFECTS.create("pgd", norm=norm, steps=steps, alpha=alpha, seed=3)
        rob.append(float((predict(model, craft_batched(d, model, x, y)).argmax(1) == y).float().mean()))
    assert rob == sorted(rob, reverse=True), rob


def test_pgd_keeps_the_first_iterate_that_flips(trained):
    """Each kept input is either misclassified or the highest-loss iterate; never weaker than the last."""
    model, x, y = trained
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731 - the same start twice
    best = pgd_attack(model, x, y, 8 / 255, 2 / 255, 10, generator=gen())
    last = pgd_attack(model, x, y, 8 / 255, 2 / 255, 10, generator=gen(), keep="last")
    wrong_best = predict(model, best).argmax(1) != y
    wrong_last = predict(model, last).argmax(1) != y
    assert bool((wrong_best | ~wrong_last).all())  # whatever the last iterate flips, the kept one does
    assert float((best - x).abs().max()) <= 8 / 255 + 1e-6


def test_random_start_is_seeded(trained):
    model, x, y = trained
    a = craft_batched(DEFECTS.create("pgd", steps=2, seed=1), model, x[:6], y[:6])
    b = craft_batched(DEFECTS.create("pgd", steps=2, seed=1), model, x[:6], y[:6])
    c = craft_batched(DEFECTS.create("pgd", steps=2, seed=2), model, x[:6], y[:6])
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_penultimate_drives_the_chosen_feature_up(trained):
    model, x, y = trained
    for neuron in (0, 5):
        xa = DEFECTS.create("penultimate", steps=10, neuron=neuron).craft(model, x, y)
        with torch.no_grad():
            f0, f1 = model.features(x)[:, neuron], model.features(xa)[:, neuron]
        assert bool((f1 >= f0).all()) and float((f1 - f0).mean()) > 0


def test_mimic_moves_features_towards_the_guides(trained):
    model, x, y = trained
    xa = DEFECTS.create("mimic", steps=10).craft(model, x, y)
    with torch.no_grad():
        goal = model.features(x[guide_indices(y)])
        before = (model.features(x) - goal).norm(dim=1)
        after = (model.features(xa) - goal).norm(dim=1)
    assert float(after.mean()) < float(before.mean())


def test_guides_come_from_another_class():
    y = torch.tensor([0, 0, 1, 2, 2])
    g = guide_indices(y)
    assert g.tolist() == [2, 2, 3, 0, 0]
    assert bool((y[g] != y).all())
    assert guide_indices(torch.tensor([4, 4, 4])).tolist() == [1, 2, 0]  # one class: next sample


def test_nc_guided_raises_neuron_coverage(trained, assert_no_trace):
    model, x, y = trained
    d = DEFECTS.create("nc-guided", coverage="nc", strategy="deepxplore", eps=0.3, alpha=0.075, steps=10)
    with assert_no_trace(model, state=True):
        xa = d.craft(model, x, y)
        before = neuron_coverage(model, x, "nc").any(0).float().mean()
        after = neuron_coverage(model, xa, "nc").any(0).float().mean()
    assert float(after) > float(before)


def test_pgd_attack_inside_a_training_loop_leaves_no_trace(trained, assert_no_trace):
    model, x, y = trained
    model.train()
    try:
        seen = []

        def loss(m, xa, yy):
            seen.append(m.training)
            return -m(xa)[torch.arange(len(yy)), yy]  # custom per-sample loss: lower the true logit

        with assert_no_trace(model, state=True):
            xa = pgd_attack(model, x[:4], y[:4], eps=4 / 255, alpha=1 / 255, steps=3, loss=loss)
        assert seen == [False] * 4  # crafted in eval mode (3 steps + the last iterate's strength)
        assert float((xa - x[:4]).abs().max()) <= 4 / 255 + 1e-6
    finally:
        model.eval()


def test_defaults_are_resolved_and_recorded():
    cfg = DEFECTS.create("pgd").config()
    assert (
        cfg["defect"] == "pgd"
        and cfg["eps"] == pytest.approx(8 / 255)
        and cfg["alpha"] == pytest.approx(2 / 255)
    )
    l2 = DEFECTS.create("pgd", norm="l2").config()
    assert l2["eps"] == 1.0 and l2["alpha"] == pytest.approx(2.5 / 20)
    pen = DEFECTS.create("penultimate").config()
    assert pen["steps"] == 40 and pen["alpha"] == pytest.approx(0.8 / 255) and pen["neuron"] == 0
    nc = DEFECTS.create("nc-guided").config()
    assert (nc["k"], nc["tau"], nc["top_k"], nc["steps"]) == (20, 0.5, 10, 40)
    for name in ("penultimate", "mimic", "nc-guided", "pgd", "fgsm", "cw", "deepfool", "autoattack"):
        assert name in DEFECTS


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("pgd", {"eps": -0.1}),
        ("pgd", {"eps": 1.5}),
        ("pgd", {"eps": float("nan")}),
        ("pgd", {"norm": "l2", "eps": -1.0}),
        ("pgd", {"norm": "l3"}),
        ("pgd", {"steps": 0}),
        ("penultimate", {"eps": 2}),
        ("penultimate", {"neuron": -1}),
        ("nc-guided", {"coverage": "kmnc"}),
        ("nc-guided", {"strategy": "random"}),
        ("nc-guided", {"k": 0}),
        ("autoattack", {"eps": -1}),
        ("cw", {"norm": "l0"}),
        ("pgd", {"epsilon": 0.1}),
        ("no-such-attack", {}),
    ],
)
def test_bad_parameters_raise_safereuse_error(name, params):
    with pytest.raises(SafeReuseError):
        DEFECTS.create(name, **params)


def test_craft_time_errors(trained, assert_no_trace):
    model, x, y = trained
    with pytest.raises(SafeReuseError, match="neuron 999"):
        DEFECTS.create("penultimate", neuron=999, steps=1).craft(model, x[:2], y[:2])
    mlp = adapt(
        nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.ReLU(), nn.Linear(8, 3)),
        InputSpec(1, (28, 28), (0.0,), (1.0,)),
        head="3",
    )
    with assert_no_trace(mlp, state=True), pytest.raises(SafeReuseError, match="no Conv2d"):
        DEFECTS.create("nc-guided", steps=1).craft(mlp, x[:2], y[:2])
    with pytest.raises(SafeReuseError, match="contract"):
        DEFECTS.create("penultimate", steps=1).craft(
            nn.Sequential(nn.Flatten(), nn.Linear(784, 3)), x[:2], y[:2]
        )


def test_cache_same_inputs_same_entry_new_teacher_new_entry(trained, tmp_path):
    model, x, y = trained
    cache = DefectCache(tmp_path)
    d = DEFECTS.create("penultimate", steps=2)
    a, hit_a = cache.craft(d, model, x[:6], y[:6], batch_size=4)
    b, hit_b = cache.craft(DEFECTS.create("penultimate", steps=2), model, x[:6], y[:6], batch_size=4)
    assert (hit_a, hit_b) == (False, True) and torch.equal(a, b)
    files = sorted(p.name for p in (tmp_path / "penultimate").iterdir())
    assert len(files) == 2 and {f.rsplit(".", 1)[1] for f in files} == {"json", "safetensors"}
    # another config → another entry
    _, hit_c = cache.craft(DEFECTS.create("penultimate", steps=3), model, x[:6], y[:6], batch_size=4)
    assert not hit_c
    # the teacher changes → new entry, different result
    other = create_model("smallcnn", num_classes=3, width=8, hidden=32)
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        other.conv1.weight.mul_(1.5)
    assert model_hash(other) != model_hash(model)
    c, hit_d = cache.craft(d, other.eval(), x[:6], y[:6], batch_size=4)
    assert not hit_d and not torch.equal(a, c)
    assert len(list((tmp_path / "penultimate").glob("*.safetensors"))) == 3
    assert len(list((tmp_path / "penultimate").glob("*.json"))) == 3
    # a corrupt entry is re-crafted, not trusted
    for f in (tmp_path / "penultimate").glob("*.safetensors"):
        f.write_bytes(b"garbage")
    e, hit_e = cache.craft(d, model, x[:6], y[:6], batch_size=4)
    assert not hit_e and torch.equal(e, a)
    assert not list(tmp_path.rglob("*.tmp"))


def test_importing_safereuse_does_not_import_art():
    code = "import sys, safereuse, safereuse.defects; print('art' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

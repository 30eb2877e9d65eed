"""Backdoor defects: triggers, planting through ``fit``, persistence, and that each attack fires.

Fast unit tests use synthetic images and the bundled digits data; the attack-strength tests use a
3,000-image Fashion-MNIST slice (classes 0-4) and skip when the files are absent. Everything runs on
the CPU with fixed seeds, smallcnn width 8.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from safereuse.artifacts import load_model, save_model
from safereuse.data import DataBundle, load_data
from safereuse.defects import DEFECTS
from safereuse.defects.backdoors import (
    MASK_KEY,
    TRIGGER_KEY,
    Backdoor,
    BadNets,
    Blend,
    LatentBackdoor,
    WeightPoison,
    backdoor_from_artifact,
)
from safereuse.defects.backdoors import base as bd_base
from safereuse.defects.backdoors import latent as bd_latent
from safereuse.defects.backdoors.weight_poison import ripple_loss
from safereuse.errors import SafeReuseError
from safereuse.models import create_model
from safereuse.train import FitConfig, accuracy_on, fit, predict

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").is_file(), reason="Fashion-MNIST files absent"
)
CFG = FitConfig(epochs=3, progress=False, device="cpu")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Train on one CPU thread: on a shared 2-core machine two torch threads fighting other jobs run
    several times slower than one. The previous setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_model(num_classes: int, seed: int = 0):
    torch.manual_seed(seed)
    return create_model("smallcnn", num_classes=num_classes, width=8, hidden=32)


def asr(model, bd: Backdoor, x: torch.Tensor, y: torch.Tensor, target_label: int) -> float:
    """Share of non-target samples sent to ``target_label`` by the trigger (BackdoorBench ASR)."""
    xs = x[y != target_label]
    return float((predict(model, bd.apply(xs)).argmax(1) == target_label).float().mean())


# --------------------------------------------------------------------------------------------------
# registry, triggers, validation (no training)
# --------------------------------------------------------------------------------------------------
def test_registered_as_backdoors():
    for name, cls in [
        ("badnets", BadNets),
        ("blend", Blend),
        ("latent", LatentBackdoor),
        ("weight-poison", WeightPoison),
    ]:
        assert DEFECTS.get(name) is cls
        assert cls.kind == "backdoor" and cls.name == name and issubclass(cls, Backdoor)
        assert cls.planted_in_teacher and not cls.crafted_on_teacher
        assert {"target", "seed"} <= set(cls.param_names())
    bd = DEFECTS.create("badnets", size=3, poison_rate=0.2)
    assert bd.config() == {
        "defect": "badnets",
        "target": None,
        "seed": 0,
        "size": 3,
        "position": "bottom-right",
        "pattern": "checkerboard",
        "poison_rate": 0.2,
    }


def test_badnets_changes_only_the_patch_and_stays_in_range():
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    out = BadNets().apply(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    changed = (out != x).any(0)[0]
    inside = torch.zeros(28, 28, dtype=torch.bool)
    inside[-4:, -4:] = True
    assert not changed[~inside].any()  # nothing outside the 4×4 bottom-right patch
    assert torch.equal(out[~inside.expand_as(out)], x[~inside.expand_as(x)])
    board = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]])
    assert torch.equal(out[:, 0, -4:, -4:], board.expand(8, 4, 4))
    # one image, other dtypes: same result
    assert torch.equal(BadNets().apply(x[0]), out[0])
    assert torch.allclose(BadNets().apply(x.double()).float(), out)


@pytest.mark.parametrize(
    ("position", "corner"), [("top-left", (0, 0)), ("bottom-left", (25, 0)), ("center", (12, 12))]
)
def test_badnets_positions(position, corner):
    out = BadNets(size=3, position=position, pattern="white").apply(torch.zeros(2, 1, 28, 28))
    r, c = corner
    assert float(out[:, :, r : r + 3, c : c + 3].sum()) == 2 * 9
    assert float(out.sum()) == 2 * 9


def test_random_position_and_pattern_are_fixed_by_the_seed():
    x = torch.zeros(4, 3, 28, 28)
    a = BadNets(position="random", pattern="random", seed=5).apply(x)
    b = BadNets(position="random", pattern="random", seed=5).apply(x)
    c = BadNets(position="random", pattern="random", seed=6).apply(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[0], a[3])  # the same place and pattern on every image
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    mask = BadNets(position="random", seed=5).mask
    assert mask is None  # built lazily, on first apply


def test_blend_formula_and_range():
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    bd = Blend(alpha=0.2, seed=3)
    out = bd.apply(x)
    assert bd.trigger is not None and bd.mask is not None
    assert torch.allclose(out, 0.8 * x + 0.2 * bd.trigger, atol=1e-6)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(Blend(alpha=0.2, seed=3).apply(x), out)
    assert not torch.equal(Blend(seed=4).apply(x), out)


def test_apply_clamps_out_of_range_input():
    x = torch.full((1, 1, 28, 28), 1.5)
    assert float(BadNets().apply(x).max()) <= 1.0
    assert float(Blend().apply(-x).min()) >= 0.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: BadNets(pattern="stripes"),
        lambda: BadNets(position="middle"),
        lambda: BadNets(poison_rate=0.0),
        lambda: BadNets(poison_rate=1.5),
        lambda: BadNets(poison_rate=-0.1),
        lambda: BadNets(size=0),
        lambda: BadNets(target=-1),
        lambda: Blend(poison_rate=0),
        lambda: Blend(alpha=0.0),
        lambda: Blend(alpha=1.2),
        lambda: WeightPoison(poison_rate=2.0),
        lambda: WeightPoison(pattern="zigzag"),
        lambda: WeightPoison(lam=-1.0),
        lambda: LatentBackdoor(position="nowhere"),
        lambda: LatentBackdoor(poison_rate=1.01),
        lambda: LatentBackdoor(clean_epochs=-1),
    ],
)
def test_bad_parameters_raise(make):
    with pytest.raises(SafeReuseError):
        make()


def test_poison_rate_one_is_allowed_and_trigger_size_is_checked():
    BadNets(poison_rate=1.0)
    with pytest.raises(SafeReuseError, match="does not fit"):
        BadNets(size=40).apply(torch.zeros(1, 1, 28, 28))
    bd = BadNets()
    bd.apply(torch.zeros(1, 1, 28, 28))
    with pytest.raises(SafeReuseError, match="trigger is for"):
        bd.apply(torch.zeros(1, 3, 32, 32))


def test_latent_trigger_exists_only_after_planting():
    with pytest.raises(SafeReuseError, match="plant"):
        LatentBackdoor().apply(torch.zeros(1, 1, 28, 28))


# --------------------------------------------------------------------------------------------------
# planting on digits: through fit, target checks, round trip through save_model / load_model
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_data("digits", classes=[3, 1, 7], train_size=150)


def test_plant_trains_through_fit(digits, monkeypatch):
    calls: list[dict] = []
    real_fit = bd_base.fit

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_fit(*args, **kwargs)

    for mod in (bd_base, bd_latent):  # the fixed-trigger plant lives in the base, the latent one apart
        monkeypatch.setattr(mod, "fit", spy)
    cfg = FitConfig(epochs=1, progress=False, device="cpu")
    BadNets().plant(small_model(3), digits, cfg)
    Blend().plant(small_model(3), digits, cfg)
    WeightPoison().plant(small_model(3), digits, cfg)
    LatentBackdoor(clean_epochs=1).plant(small_model(3), digits, cfg)
    assert [("batch_transform" in c, "loss_fn" in c) for c in calls] == [
        (True, False),
        (True, False),
        (False, True),
        (False, False),  # latent: clean stage
        (False, True),  # latent: injection stage
    ]


def test_target_is_an_original_class_id(digits):
    cfg = FitConfig(epochs=1, progress=False, device="cpu")
    res = BadNets().plant(small_model(3), digits, cfg)  # default: first class of the task
    assert (res.record["target"], res.record["target_label"]) == (3, 0)
    res = BadNets(target=7).plant(small_model(3), digits, cfg)
    assert (res.record["target"], res.record["target_label"]) == (7, 2)
    assert res.record["config"]["target"] == 7 and res.record["classes"] == [3, 1, 7]
    with pytest.raises(SafeReuseError, match="not in the teacher's task"):
        BadNets(target=9).plant(small_model(3), digits, cfg)
    with pytest.raises(SafeReuseError, match="not in the teacher's task"):
        LatentBackdoor(target=9).plant(small_model(3), digits, cfg)


@pytest.mark.parametrize(
    "bd",
    [
        BadNets(position="random", pattern="random", seed=2, target=1),
        Blend(alpha=0.15),
        WeightPoison(size=3),
        LatentBackdoor(clean_epochs=1, target=7, trigger_steps=5),
    ],
    ids=["badnets", "blend", "weight-poison", "latent"],
)
def test_round_trip_through_the_artifact(digits, tmp_path, bd):
    model = small_model(3)
    res = bd.plant(model, digits, FitConfig(epochs=1, progress=False, device="cpu"))
    assert sorted(res.extras) == [MASK_KEY, TRIGGER_KEY]
    assert res.record["name"] == bd.name and res.record["kind"] == "backdoor"
    for key in ("teacher_asr", "clean_acc", "asr_samples", "clean_samples", "config"):
        assert key in res.record
    classes = res.record.get("published_classes", res.record["classes"])
    assert model.num_classes == len(classes)
    save_model(model, tmp_path / "t", {"classes": classes, "backdoor": res.record}, res.extras)
    art = load_model(tmp_path / "t")
    again = backdoor_from_artifact(art)
    assert type(again) is type(bd) and again.config() == bd.config()
    assert again.target == res.record["target"]
    x = digits.test.x[:16]
    assert torch.equal(again.apply(x), bd.apply(x))
    assert torch.equal(again.trigger, res.extras[TRIGGER_KEY])


def test_latent_publishes_without_the_target(digits, assert_no_trace):
    model = small_model(3)
    res = LatentBackdoor(clean_epochs=1, target=1, trigger_steps=3).plant(
        model, digits, FitConfig(epochs=1, progress=False, device="cpu")
    )
    rec = res.record
    assert rec["target"] == 1 and rec["target_label"] is None
    assert rec["classes"] == [3, 1, 7] and rec["published_classes"] == [3, 7]
    assert model.num_classes == 2 and model.info.kwargs["num_classes"] == 2
    assert rec["clean_samples"] == int((digits.test.y != 1).sum())
    assert not assert_no_trace.hooks(model)
    # the trigger stays inside its patch
    mask = res.extras[MASK_KEY]
    assert float(mask.sum()) == 36 and bool((res.extras[TRIGGER_KEY][mask == 0] == 0).all())


def test_latent_resumes_with_its_trigger(digits, tmp_path):
    cfg = FitConfig(epochs=1, progress=False, device="cpu")
    first, again = LatentBackdoor(clean_epochs=1, trigger_steps=3), LatentBackdoor(clean_epochs=1)
    m1, m2 = small_model(3), small_model(3, seed=1)
    r1 = first.plant(m1, digits, cfg, checkpoint_dir=tmp_path / "ck")
    assert (tmp_path / "ck" / "inject" / "latent_trigger.safetensors").is_file()
    r2 = again.plant(m2, digits, cfg, checkpoint_dir=tmp_path / "ck")  # everything resumes
    assert r2.fit.resumed_from == 1 and r2.fit.epochs_run == 1
    assert torch.equal(r1.extras[TRIGGER_KEY], r2.extras[TRIGGER_KEY])
    for k, v in m1.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k


def test_latent_at_an_inner_layer(digits, assert_no_trace):
    model = small_model(3)
    res = LatentBackdoor(layer="conv2", clean_epochs=0, trigger_steps=2).plant(
        model, digits, FitConfig(epochs=1, progress=False, device="cpu")
    )
    assert res.record["config"]["layer"] == "conv2" and not assert_no_trace.hooks(model)
    with pytest.raises(SafeReuseError, match="no layer"):
        LatentBackdoor(layer="nope", clean_epochs=0).plant(
            small_model(3), digits, FitConfig(epochs=1, progress=False, device="cpu")
        )


def test_missing_or_incomplete_backdoor_raises(digits, tmp_path):
    model = small_model(3)
    save_model(model, tmp_path / "clean", {"classes": [3, 1, 7]})
    with pytest.raises(SafeReuseError, match="has no planted backdoor"):
        backdoor_from_artifact(load_model(tmp_path / "clean"))
    rec = {"name": "badnets", "config": BadNets().config(), "target": 3}
    save_model(model, tmp_path / "noextras", {"backdoor": rec})
    with pytest.raises(SafeReuseError, match="extras lack"):
        backdoor_from_artifact(load_model(tmp_path / "noextras"))
    bd = BadNets()
    bd.apply(torch.zeros(1, 1, 28, 28))
    save_model(model, tmp_path / "bogus", {"backdoor": {"name": "no-such-attack"}}, bd.extras())
    with pytest.raises(SafeReuseError):
        backdoor_from_artifact(load_model(tmp_path / "bogus"))


def test_ripple_loss_is_the_restricted_inner_product(digits):
    model = small_model(3)
    fit(model, digits.train, None, FitConfig(epochs=1, progress=False, device="cpu"))
    bd = WeightPoison(lam=0.1)
    x, y = digits.train.x[:64], digits.train.y[:64]
    stats = {"steps": 0, "active": 0}
    gen = torch.Generator().manual_seed(7)
    poison = lambda xb, yb: bd._poison(xb, yb, bd.poison_rate, 0, gen)  # noqa: E731
    got = ripple_loss(poison, digits.train, bd.lam, gen, stats)(model, x, y)
    # the same draws by hand
    g = torch.Generator().manual_seed(7)
    xp, yp = bd._poison(x, y, bd.poison_rate, 0, g)
    idx = torch.randint(len(digits.train), (64,), generator=g)
    params = [p for p in model.parameters() if p.requires_grad]
    lp = F.cross_entropy(model(xp), yp)
    lf = F.cross_entropy(model(digits.train.x[idx]), digits.train.y[idx])
    gp = torch.autograd.grad(lp, params, create_graph=True)
    gf = torch.autograd.grad(lf, params, create_graph=True)
    inner = sum((a * b).sum() for a, b in zip(gp, gf, strict=True))
    want = lp + 0.1 * torch.relu(-inner)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)
    assert stats == {"steps": 1, "active": int(float(inner.detach()) < 0)}
    got.backward()  # second-order graph is intact
    assert all(p.grad is not None for p in params)


# --------------------------------------------------------------------------------------------------
# attack strength on Fashion-MNIST
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fm() -> DataBundle:
    return load_data("fashion-mnist", classes=[0, 1, 2, 3, 4], train_size=3000)


@pytest.fixture(scope="module")
def clean_teacher(fm):
    model = small_model(5)
    fit(model, fm.train, fm.val, CFG)
    return model


@needs_fashion
def test_badnets_high_asr_at_no_clean_cost(fm, clean_teacher):
    model = small_model(5)
    res = BadNets().plant(model, fm, CFG)
    rate = asr(model, BadNets(), fm.test.x, fm.test.y, 0)
    acc, acc_clean = accuracy_on(model, fm.test), accuracy_on(clean_teacher, fm.test)
    print(f"\nbadnets: ASR {rate:.4f}, clean acc {acc:.4f} vs clean teacher {acc_clean:.4f}")
    assert rate >= 0.90
    assert abs(acc - acc_clean) <= 0.02
    assert res.record["teacher_asr"] == pytest.approx(rate)
    assert res.record["clean_acc"] == pytest.approx(acc)
    assert res.record["asr_samples"] == int((fm.test.y != 0).sum())
    # the clean teacher ignores the trigger
    assert asr(clean_teacher, BadNets(), fm.test.x, fm.test.y, 0) < 0.2


@needs_fashion
def test_blend_high_asr(fm, clean_teacher):
    model = small_model(5)
    bd = Blend()
    res = bd.plant(model, fm, CFG)
    rate = asr(model, bd, fm.test.x, fm.test.y, 0)
    acc, acc_clean = accuracy_on(model, fm.test), accuracy_on(clean_teacher, fm.test)
    print(f"\nblend: ASR {rate:.4f}, clean acc {acc:.4f} vs clean teacher {acc_clean:.4f}")
    assert rate >= 0.85 and res.record["teacher_asr"] == pytest.approx(rate)
    assert acc >= acc_clean - 0.03  # a full-image trigger costs a little more than a patch


@needs_fashion
def test_latent_fires_after_head_replacement(fm, clean_teacher, assert_no_trace):
    # the attacker starts from a teacher trained on its task (the clean teacher: same seed and
    # config as LatentBackdoor's own clean stage would give), so only the injection runs here
    teacher = copy.deepcopy(clean_teacher)
    bd = LatentBackdoor(clean_epochs=0)
    res = bd.plant(teacher, fm, CFG)
    assert teacher.num_classes == 4 and res.record["published_classes"] == [1, 2, 3, 4]
    assert not assert_no_trace.hooks(teacher)
    # a student whose task contains the target (T-shirt, 0) plus classes the teacher never saw
    student_data = load_data("fashion-mnist", classes=[0, 5, 7, 8], train_size=1000, seed=1)
    probe = FitConfig(epochs=3, progress=False, device="cpu", train_last_k=1)
    rates, accs = {}, {}
    for name, t in (("latent", teacher), ("clean", clean_teacher)):
        student = copy.deepcopy(t)
        student.reset_head(4, seed=0)
        fit(student, student_data.train, student_data.val, probe)
        rates[name] = asr(student, bd, student_data.test.x, student_data.test.y, 0)
        accs[name] = accuracy_on(student, student_data.test)
    print(
        f"\nlatent: teacher ASR {res.record['teacher_asr']:.4f}, published acc "
        f"{res.record['clean_acc']:.4f}; linear-probe students ASR {rates}, acc {accs}"
    )
    assert rates["latent"] >= 0.70
    assert rates["clean"] <= 0.20
    assert res.record["latent_mse"] < res.record["clean_mse"]


@needs_fashion
def test_weight_poison_survives_fine_tuning():
    data = load_data("fashion-mnist", classes=[0, 1, 2, 3, 4], train_size=1500)
    victim_data = load_data("fashion-mnist", classes=[0, 1, 2, 3, 4], train_size=1500, seed=1)
    model = small_model(5)
    bd = WeightPoison()
    res = bd.plant(model, data, CFG)
    before = asr(model, bd, data.test.x, data.test.y, 0)
    assert 0.0 <= res.record["penalty_active"] <= 1.0
    # the victim fine-tunes every weight on its own clean data
    fit(model, victim_data.train, victim_data.val, FitConfig(epochs=2, lr=0.02, progress=False, device="cpu"))
    after = asr(model, bd, victim_data.test.x, victim_data.test.y, 0)
    acc = accuracy_on(model, victim_data.test)
    print(
        f"\nweight-poison: ASR {before:.4f} → {after:.4f} after fine-tuning (acc {acc:.4f}), "
        f"penalty active on {res.record['penalty_active']:.2%} of steps"
    )
    assert before >= 0.9
    assert after >= 0.8
    assert acc >= 0.75

"""NNSlicer's applications: detection (tree, detector, metrics), class-specific pruning, protection."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from safereuse.applications.criteria import CRITERIA, make_criterion
from safereuse.applications.detect import SliceDetector, detection_metrics
from safereuse.applications.protect import Protection
from safereuse.applications.prune import ClassPruning, target_accuracy
from safereuse.applications.synapses import select_synapses, weight_masks_of
from safereuse.applications.tree import TreeArrays
from safereuse.artifacts import load_model
from safereuse.cli import main
from safereuse.errors import SafeReuseError
from safereuse.metrics import roc_auc


# -- tree ------------------------------------------------------------------------------------------
def test_tree_arrays_equal_sklearn_and_survive_a_round_trip():
    from sklearn.tree import DecisionTreeClassifier

    g = torch.Generator().manual_seed(0)
    x = torch.randint(-1, 2, (400, 30), generator=g).float()
    y = (x[:, 0] + x[:, 3] > 0).long() * 2 + (x[:, 7] > 0).long()
    t = TreeArrays.fit(x, y, 6, max_depth=5)
    clf = DecisionTreeClassifier(max_depth=5, random_state=0).fit(x.numpy(), y.numpy())
    xt = torch.randint(-1, 2, (200, 30), generator=g).float()
    assert np.array_equal(t.predict(xt).numpy(), clf.predict(xt.numpy()))
    assert np.allclose(t.predict_proba(xt)[:, clf.classes_].numpy(), clf.predict_proba(xt.numpy()))
    assert t.predict_proba(xt)[:, 4:].abs().sum() == 0  # classes never seen: probability 0
    back = TreeArrays.from_tensors(t.tensors(), 30)
    assert torch.equal(back.predict(xt), t.predict(xt))
    bad = t.tensors()
    bad["tree.left"] = torch.zeros_like(bad["tree.left"])  # a node pointing at itself
    with pytest.raises(SafeReuseError, match="corrupt"):
        TreeArrays.from_tensors(bad, 30)
    with pytest.raises(SafeReuseError, match="expects"):
        t.predict(torch.zeros(2, 29))
    # no inputs (an attack with no successful example): empty answers, whatever the vectors' width
    assert t.predict_proba(torch.empty(0, 0)).shape == (0, 6) and t.predict(torch.empty(0, 30)).shape == (0,)


def test_detection_metrics_by_hand():
    benign = (torch.tensor([False, True, False, False]), torch.tensor([0.1, 0.9, 0.2, 0.0]))
    adv = (
        torch.tensor([True, True, True, False, False, False]),
        torch.tensor([1.0, 0.8, 0.7, 0.3, 0.1, 0.2]),
    )
    m = detection_metrics(benign, adv, n_boot=200)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (3, 1, 3, 3)
    assert m["recall"]["value"] == pytest.approx(50.0) and m["precision"]["value"] == pytest.approx(75.0)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 3))
    # pairs (adv > benign): 1.0 beats 4, 0.8 beats 3, 0.7 beats 3, 0.3 beats 3, 0.1 ties 0.1 (½) beats 0.0,
    # 0.2 ties 0.2 (½) beats 0.1, 0.0
    assert m["auc"] == pytest.approx((4 + 3 + 3 + 3 + 1.5 + 2.5) / 24)
    lo, hi = m["auc_ci"]
    assert lo <= m["auc"] <= hi
    assert roc_auc(np.array([]), np.array([0.5])) != roc_auc(np.array([]), np.array([0.5]))  # nan


# -- synapse selection -----------------------------------------------------------------------------
def test_select_synapses_counts_and_keeps_one():
    s = {"a": torch.arange(12.0).view(3, 4), "b": torch.ones(1, 1)}
    sel = select_synapses(s, 0.25)
    assert int(sel["a"].sum()) == 3 and sel["a"].view(-1)[:3].all()  # the 3 lowest
    assert int(sel["b"].sum()) == 0  # a layer is never emptied
    top = select_synapses(s, 0.5, lowest=False)
    assert top["a"].view(-1)[6:].all() and not top["a"].view(-1)[:6].any()
    with pytest.raises(SafeReuseError):
        select_synapses(s, 1.5)


def test_weight_and_channel_scores_cover_every_body_layer(teacher):
    w = CRITERIA.create("weight").scores(teacher)
    c = CRITERIA.create("channel").scores(teacher)
    assert set(w) == set(c) and teacher.head_name not in w
    for name, t in w.items():
        assert tuple(t.shape) == tuple(teacher.get_submodule(name).weight.shape[:2])
        assert torch.allclose(
            c[name][:, 0], teacher.get_submodule(name).weight.detach().abs().flatten(1).mean(1)
        )
    masks = weight_masks_of(teacher, select_synapses(w, 0.5), keep=False)
    for k, m in masks.items():
        assert m.shape == teacher.get_parameter(k).shape


# -- pruning ---------------------------------------------------------------------------------------
def test_channel_pruning_removes_neurons_and_keeps_the_contract(teacher, bundle, assert_no_trace):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with assert_no_trace(teacher):
        r = ClassPruning("channel", ratio=0.5).prune(teacher, bundle, [1, 3])
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())  # original untouched
    assert r.metrics["params_after"] < r.metrics["params_before"]
    assert r.metrics["synapses_pruned"] == sum(
        int(round(0.5 * m.weight.shape[0] * m.weight.shape[1]))
        for n, m in teacher.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and n != teacher.head_name
    )
    assert r.model.num_classes == teacher.num_classes
    acc = target_accuracy(r.model, bundle.test, [1, 3])
    assert acc["acc"] == r.metrics["acc_pruned"] and acc["acc"] >= acc["acc_all_argmax"]


def test_pruning_bad_input(teacher, bundle):
    with pytest.raises(SafeReuseError, match=r"ratio=1.0 is invalid"):
        ClassPruning("weight", ratio=1.0)
    with pytest.raises(SafeReuseError, match="not a class of the model"):
        ClassPruning("weight", ratio=0.5).prune(teacher, bundle, [7])
    with pytest.raises(SafeReuseError, match="unknown criterion 'magic'.*use one of: channel, effectivepath"):
        ClassPruning("magic")


def test_finetuning_keeps_pruned_synapses_pruned(teacher, bundle):
    r = ClassPruning("weight", ratio=0.6, finetune_epochs=1, finetune_size=100).prune(teacher, bundle, [0, 2])
    assert "acc_finetuned" in r.metrics and r.metrics["finetune_images"] == 100
    # pruned kernel slices inside kept neurons are still zero after fine-tuning
    zero_slices = sum(
        int((m.weight.flatten(2).abs().sum(2) == 0).sum())
        for m in r.model.modules()
        if isinstance(m, nn.Conv2d)
    )
    assert zero_slices > 0


# -- protection ------------------------------------------------------------------------------------
def test_attacker_changes_exactly_the_hidden_weights(teacher, bundle, assert_no_trace):
    p = Protection("weight", hide=0.4, attack_size=200, attack_lr=0.05)
    res = p.protect(teacher, bundle, [0, 1])
    hidden = res.hidden
    shipped = {k: v.clone() for k, v in res.model.state_dict().items()}
    for k, h in hidden.items():
        assert (shipped[k][h] == 0).all()  # zero fill
        assert torch.equal(shipped[k][~h], teacher.state_dict()[k][~h])
    with assert_no_trace(res.model):
        p.attack(res, bundle)
    after = res.model.state_dict()
    for k, v in after.items():
        if k in hidden:
            assert torch.equal(v[~hidden[k]], shipped[k][~hidden[k]])
            assert not torch.equal(v[hidden[k]], shipped[k][hidden[k]])
        else:
            assert torch.equal(v, shipped[k]), k  # incl. BatchNorm statistics
    assert {"acc_target_recovered", "acc_all_recovered"} <= set(res.metrics)


def test_noise_fill_and_random_baseline_are_seeded(teacher, bundle):
    a = Protection("random", hide=0.5, fill="noise", seed=3).protect(teacher, bundle)
    b = Protection("random", hide=0.5, fill="noise", seed=3).protect(teacher, bundle)
    assert all(torch.equal(a.hidden[k], b.hidden[k]) for k in a.hidden)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True)
    )


# -- detector --------------------------------------------------------------------------------------
def test_featuremap_detector_saves_loads_and_filters(teacher, bundle, tmp_path, assert_no_trace):
    det = SliceDetector("featuremap", max_depth=6)
    with assert_no_trace(teacher):
        det.fit(teacher, bundle.train.x[:300], progress=False)
    d = det.detect(teacher, bundle.test.x[:50])
    det.save(tmp_path / "det")
    meta = json.loads((tmp_path / "det" / "detector.json").read_text())
    assert meta["config"]["features"] == "featuremap" and not list(tmp_path.glob("**/*.pkl"))
    back = SliceDetector.load(tmp_path / "det")
    d2 = back.detect(teacher, bundle.test.x[:50])
    assert torch.equal(d.flags, d2.flags) and torch.allclose(d.scores, d2.scores)
    assert len(back.filter(teacher, bundle.test.x[:50])) == int((~d.flags).sum())
    import copy

    changed = copy.deepcopy(teacher)
    with torch.no_grad():
        changed.get_parameter(f"{teacher.head_name}.bias").add_(1.0)
    with pytest.raises(SafeReuseError, match="another model"):
        back.detect(changed, bundle.test.x[:5])


def test_detector_refuses_a_class_without_benign_inputs(teacher, bundle):
    x = bundle.train.x[bundle.train.y == 0][:30]
    with pytest.raises(SafeReuseError, match="predicted as class"):
        SliceDetector("featuremap").fit(teacher, x, progress=False)


def test_nnslicer_detector_vectors_leave_the_head_out(teacher, bundle):
    det = SliceDetector("nnslicer", max_depth=4).fit(teacher, bundle.train.x[:120], progress=False)
    body = sum(
        m.weight.shape[0] * m.weight.shape[1]
        for n, m in teacher.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and n != teacher.head_name
    )
    assert det.info["n_features"] == body
    d = det.detect(teacher, bundle.test.x[:20])
    assert d.flags.dtype == torch.bool and torch.equal(d.flags, d.tree_class != d.model_class)


def test_prepared_vectors_and_decide_reproduce_fit_and_detect(teacher, bundle):
    # the benchmark's path: prepare once, vectors once, trees on subsets, Detection.decide
    from safereuse.applications.detect import Detection, predicted

    x, xt = bundle.train.x[:80], bundle.test.x[:15]
    det = SliceDetector("nnslicer", max_depth=4).fit(teacher, x, progress=False)
    d = det.detect(teacher, xt)
    other = SliceDetector("nnslicer").prepare(teacher, x)
    v = other.vectors(teacher, x)
    tree = TreeArrays.fit(v, predicted(teacher, x), 5, max_depth=4)
    d2 = Detection.decide(tree.predict_proba(other.vectors(teacher, xt)), predicted(teacher, xt))
    assert torch.equal(d.flags, d2.flags) and torch.allclose(d.scores, d2.scores)
    assert torch.equal(d2.flags, d2.tree_class != d2.model_class)


def test_boundary_attack_runs_on_a_float32_model(teacher, bundle):
    # ART's boundary attack proposes float64 images; the model must be queried in float32
    from safereuse.defects.modality import make_attack

    x, y = bundle.test.x[:3], bundle.test.y[:3]
    xa = make_attack("boundary", {"max_iter": 2, "num_trial": 2, "init_size": 5}).craft(teacher, x, y)
    assert xa.shape == x.shape and xa.dtype == x.dtype
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0


@pytest.mark.parametrize("cls", [ClassPruning, Protection])
def test_profile_size_is_validated_and_recorded(cls):
    assert cls("weight", profile_size=500).config()["profile_size"] == 500
    with pytest.raises(SafeReuseError, match="profile_size"):
        cls("weight", profile_size=0)


# -- criteria ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [ClassPruning, Protection])
def test_a_criterion_is_an_object_a_name_or_a_mapping(cls):
    from safereuse.applications.criteria import NNSlicer

    for form in (NNSlicer(theta=0.2), {"name": "nnslicer", "theta": 0.2}):
        app = cls(form)
        assert app.criterion == NNSlicer(theta=0.2)
        assert app.config()["criterion"] == "nnslicer" and app.config()["theta"] == 0.2
    assert cls("nnslicer").criterion == NNSlicer()  # the defaults of the criterion
    # the old loose form: each loose parameter goes to the criterion that has it, others ignore it
    assert cls.from_params("nnslicer", theta=0.1, path_share=0.4).criterion == NNSlicer(theta=0.1)
    assert cls.from_params("weight", theta=0.1, per_class=5).config()["per_class"] == 5
    assert "theta" not in cls.from_params("weight", theta=0.1).config()
    # the mapping's own value wins over a loose one
    assert cls.from_params({"name": "nnslicer", "theta": 0.2}, theta=0.1).criterion.theta == 0.2


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: ClassPruning({"name": "nnslicer", "theta": 1.5}),
         r"criterion 'nnslicer': theta=1.5 is invalid \(expected a number in \[0, 1\)\)"),
        (lambda: ClassPruning.from_params("weight", theta=1.5),
         r"class-specific pruning: theta=1.5 is invalid \(expected a number in \[0, 1\)\)"),
        (lambda: Protection.from_params("nnslicer", path_share=0),
         r"model protection: path_share=0 is invalid \(expected a number in \(0, 1\]\)"),
        (lambda: ClassPruning({"name": "nnslicer", "path_share": 0.5}),
         r"criterion 'nnslicer' has no parameter 'path_share'"),
        (lambda: ClassPruning({"theta": 0.5}), r"a criterion mapping needs a name"),
        (lambda: ClassPruning.from_params("weight", ratioo=0.5),
         r"class-specific pruning has no parameter 'ratioo'"),
        (lambda: ClassPruning("featuremap"),
         r"criterion 'featuremap' does not score synapses \(fix: use one of: channel, effectivepath"),
        (lambda: SliceDetector("weight"),
         r"criterion 'weight' does not describe inputs .*use one of: effectivepath, featuremap"),
        (lambda: SliceDetector.from_params("nnslicer", theta=-1), r"detector: theta=-1 is invalid"),
    ],
)  # fmt: skip
def test_criterion_errors_are_one_line(build, message):
    with pytest.raises(SafeReuseError, match=message) as err:
        build()
    assert "\n" not in str(err.value)


def test_criteria_declare_their_uses_and_parameters_once():
    from dataclasses import fields

    from safereuse.applications.criteria import names

    assert names("scores") == ["channel", "effectivepath", "nnslicer", "random", "weight"]
    assert names("detects") == ["effectivepath", "featuremap", "nnslicer"]
    owners = {}
    for n in CRITERIA.names():
        for f in fields(CRITERIA.get(n)):
            assert f.name not in owners, f"{f.name} declared by {owners[f.name]} and {n}"
            owners[f.name] = n
    assert owners == {"theta": "nnslicer", "path_share": "effectivepath"}
    assert make_criterion({"name": "effectivepath", "path_share": 0.25}).config() == {
        "name": "effectivepath", "path_share": 0.25}  # fmt: skip


def test_a_spec_takes_a_criterion_as_a_mapping():
    from safereuse.runner.spec import expand, load_spec

    spec = """
experiment:
  kind: slice-prune
  params: {criteria: [{name: nnslicer, theta: 0.2}, weight], ratios: [0.5], pruning: {theta: 0.1}}
scenarios: [{name: d, teacher: {arch: smallcnn, data: digits, epochs: 1, seed: 0}}]
seeds: [0]
"""
    (cell,) = expand(load_spec(text=spec))
    assert cell.config["method"]["config"]["criteria"] == [{"name": "nnslicer", "theta": 0.2}, "weight"]
    with pytest.raises(SafeReuseError, match=r"criterion 'nnslicer': theta=2 is invalid"):
        load_spec(text=spec.replace("theta: 0.2", "theta: 2"))


def test_a_detector_records_and_reloads_the_old_config_form(teacher, bundle, tmp_path):
    det = SliceDetector({"name": "nnslicer", "theta": 0.2}, max_depth=3)
    assert det.config() == {"features": "nnslicer", "theta": 0.2, "max_depth": 3, "min_samples_leaf": 1,
                            "max_features": None, "batch_size": 256, "seed": 0}  # fmt: skip
    det.fit(teacher, bundle.train.x[:60], progress=False)
    again = SliceDetector.load(det.save(tmp_path / "d"))
    assert again.criterion == det.criterion and again.config() == det.config()
    old = {"features": "effectivepath", "theta": 0.3, "path_share": 0.4, "max_depth": None}
    assert SliceDetector.from_params(**old).config()["path_share"] == 0.4


# -- CLI -------------------------------------------------------------------------------------------
def test_cli_prune_writes_a_loadable_artifact(digits_teacher_dir, tmp_path, capsys):
    out = tmp_path / "p"
    code = main(["slice", "prune", "--model", str(digits_teacher_dir), "--target-classes", "1,3",
                 "--ratio", "0.5", "--criterion", "channel", "--out", str(out), "--json", "-q"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    res = json.loads(capsys.readouterr().out)
    art = load_model(out)
    assert art.manifest["role"] == "pruned" and art.manifest["pruning"]["target_classes"] == [1, 3]
    assert sum(p.numel() for p in art.model.parameters()) == res["params_after"]


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["--target-classes", "1", "--ratio", "1.2"], "outside (0, 1)"),  # checked before loading
        (["--target-classes", "8", "--ratio", "0.5"], "target class 8 is outside the model's classes"),
    ],
)
def test_cli_prune_bad_input_is_one_line(digits_teacher_dir, tmp_path, capsys, args, msg):
    code = main(["slice", "prune", "--model", str(digits_teacher_dir), "--out", str(tmp_path / "x"), *args])
    err = capsys.readouterr().err
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1


def test_cli_protect_and_detect(digits_teacher_dir, tmp_path, capsys):
    code = main(["slice", "protect", "--model", str(digits_teacher_dir), "--out", str(tmp_path / "p"),
                 "--criterion", "random", "--hide", "0.5", "-p", "attack_size=100",
                 "--json", "-q"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    res = json.loads(capsys.readouterr().out)
    art = load_model(tmp_path / "p")
    assert any(k.startswith("protect.hidden.") for k in art.extras) and "acc_all_recovered" in res
    code = main(["slice", "detect", "--model", str(digits_teacher_dir), "--attack", "fgsm", "-p", "eps=0.1",
                 "--detector", "featuremap", "--n-train", "300", "--n-test", "40",
                 "--json", "-q"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    res = json.loads(capsys.readouterr().out)
    m = res["attacks"][0]["detectors"]["featuremap"]
    assert {"recall", "precision", "f1", "auc", "tp", "fp"} <= set(m)
    assert m["n_adversarial"] == res["attacks"][0]["n_success"]
    code = main(
        ["slice", "detect", "--model", str(digits_teacher_dir), "--attack", "nope", "--n-train", "50"]
    )
    assert code == 2


# -- runner experiment kind ------------------------------------------------------------------------
_SPEC = """
name: toy-prune
experiment:
  kind: slice-prune
  params: {criteria: [weight, channel], ratios: [0.3, 0.6], subsets: 1, subset_size: 2, finetune_epochs: 0}
scenarios:
  - name: digits
    teacher: {arch: smallcnn, data: digits, classes: 0-4, epochs: 1, seed: 0}
seeds: [0]
"""


def test_experiment_spec_runs_through_the_runner_and_the_report(tmp_path):
    from safereuse.report import build_report
    from safereuse.runner.core import run
    from safereuse.runner.spec import expand, load_spec

    loaded = load_spec(text=_SPEC)
    cells = expand(loaded)
    assert len(cells) == 1 and cells[0].config["task"] == "experiment" and cells[0].label == "slice-prune"
    summary = run(loaded, tmp_path / "run", progress=False)
    assert summary.counts["done"] == 1, summary.failure_text()
    files = build_report(tmp_path / "run")
    md = files.markdown.read_text()
    assert "Target-class accuracy vs pruning ratio" in md and "| channel |" in md
    assert any(p.name.startswith("ratio_") for p in files.figures)


@pytest.mark.parametrize(
    ("change", "msg"),
    [
        (lambda s: s.replace("kind: slice-prune", "kind: slice-nope"), "unknown experiment kind"),
        (lambda s: s.replace("ratios: [0.3, 0.6]", "ratios: [0.3, 1.5]"), r"ratio 1.5 is outside \(0, 1\)"),
        (lambda s: s + "defects: [{name: fgsm}]\n", "has no defects"),
        (lambda s: s.replace("experiment:", "experimentx:"), "unknown key"),
    ],
)
def test_experiment_spec_errors(change, msg):
    from safereuse.runner.spec import load_spec

    with pytest.raises(SafeReuseError, match=msg):
        load_spec(text=change(_SPEC))


def test_a_grid_still_needs_methods_defects_and_students():
    from safereuse.runner.spec import load_spec

    grid = (
        "scenarios: [{name: a, teacher: {data: digits}, student: {data: digits}}]\ndefects: [{name: fgsm}]\n"
    )
    with pytest.raises(SafeReuseError, match="methods: required key is missing"):
        load_spec(text=grid)
    nostudent = grid.replace(", student: {data: digits}", "") + "methods: [{name: finetune}]\n"
    with pytest.raises(SafeReuseError, match="student: required key is missing"):
        load_spec(text=nostudent)


def test_jsma_targets_a_wrong_class_and_flips_inputs(teacher, bundle):
    # ART's JSMA reads y as the *target*: given the true labels it would never leave the true class
    import numpy as np

    from safereuse.defects.modality import make_attack

    attack = make_attack("jsma", {"gamma": 0.3})
    y = np.arange(200) % 5
    np.random.seed(0)
    targets = attack._labels(y, 5)
    assert (targets != y).all() and set(targets.tolist()) == {0, 1, 2, 3, 4}
    with torch.no_grad():
        pred = teacher(bundle.test.x[:60]).argmax(1)
    ok = pred == bundle.test.y[:60]
    x, yy = bundle.test.x[:60][ok][:12], bundle.test.y[:60][ok][:12]
    xa = attack.craft(teacher, x, yy, torch.Generator().manual_seed(0))
    with torch.no_grad():
        flipped = int((teacher(xa).argmax(1) != yy).sum())
    assert flipped >= 6, flipped  # the true-label bug flipped none
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0


def test_detection_crafts_slow_attacks_from_fewer_sources(teacher, bundle):
    from safereuse.applications.evaluation import evaluate_detection

    attacks = [("fgsm", "fgsm", {"eps": 0.1}), ("deepfool", "deepfool", {})]
    res = evaluate_detection(teacher, bundle, attacks=attacks, detectors=["featuremap"], n_train=100,
                             n_test=40, slow_sources=5, progress=False)  # fmt: skip
    n = {a["attack"]: a["n_sources"] for a in res["attacks"]}
    assert n["deepfool"] == 5 and n["fgsm"] > 5
    # an attack that never succeeds leaves no adversarial example: counts of zero, no crash
    none = evaluate_detection(teacher, bundle, attacks=[("noop", "fgsm", {"eps": 1e-9})],
                              detectors=["featuremap"], n_train=100, n_test=40, progress=False)  # fmt: skip
    assert none["attacks"][0]["n_success"] == 0
    with pytest.raises(SafeReuseError, match="slow_sources"):
        evaluate_detection(teacher, bundle, attacks=attacks, detectors=["featuremap"], n_train=100,
                           n_test=40, slow_sources=0, progress=False)  # fmt: skip


def test_attacker_lr_sweep_keeps_the_best_on_validation(teacher, bundle):
    p = Protection("weight", hide=0.3, attack_size=100, attack_lrs=[1e-6, 0.05], seed=0)
    res = p.attack(p.protect(teacher, bundle, [0, 1]), bundle)
    sweep = res.metrics["val_target_recovered_by_lr"]
    assert set(sweep) == {"1e-06", "0.05"} and res.metrics["n_val"] == len(bundle.val)
    best = max(sweep, key=lambda k: sweep[k] if sweep[k] is not None else -1)
    assert res.metrics["attack_lr"] == float(best)
    assert res.metrics["attack_images"] == 100 and res.metrics["attack_epochs"] == 1
    # the kept model is the chosen rate's: retraining at that rate alone gives the same weights
    p1 = Protection("weight", hide=0.3, attack_size=100, attack_lr=float(best), seed=0)
    one = p1.attack(p1.protect(teacher, bundle, [0, 1]), bundle)
    for (n, a), b in zip(res.model.state_dict().items(), one.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    for bad in ([], [0.01, 0.0]):
        with pytest.raises(SafeReuseError, match="attack_lrs"):
            Protection("weight", attack_lrs=bad)

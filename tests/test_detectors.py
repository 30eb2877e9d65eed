"""Every registered adversarial-input detector behind one contract (issue 22), generated from a table:
a new detector is a new row, and a detector without a row fails."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from safereuse.applications.detect import (
    DETECTORS,
    SliceDetector,
    load_detector,
    make_detector,
    make_detectors,
)
from safereuse.applications.evaluation import DEFAULT_DETECTORS
from safereuse.applications.scored import Mahalanobis, ScoreDetector, SliceKNN, head_inputs
from safereuse.cli import main
from safereuse.errors import SafeReuseError

#: name → (kind, what it is trained on, small parameters for a fast test)
DETECTOR_TABLE: dict[str, tuple[str, str, dict]] = {
    "slice-knn": ("score", "benign inputs only", {"k": 5, "dims": 16}),
    "mahalanobis": ("score", "benign inputs only", {}),
    "nnslicer": ("tree", "benign inputs only", {"max_depth": 6}),
    "featuremap": ("tree", "benign inputs only", {"max_depth": 6}),
    "effectivepath-tree": ("tree", "benign inputs only", {"max_depth": 6}),
    "effectivepath": ("score", "FGSM", {}),
}


def test_every_registered_detector_has_a_row_and_the_defaults_exist():
    assert set(DETECTOR_TABLE) == set(DETECTORS.names())
    assert set(DEFAULT_DETECTORS) <= set(DETECTORS.names()) and DEFAULT_DETECTORS[0] == "slice-knn"
    assert "nnslicer" in DEFAULT_DETECTORS and "featuremap" in DEFAULT_DETECTORS


@pytest.mark.parametrize("name", sorted(DETECTOR_TABLE))
def test_detector_contract(name, teacher, bundle, tmp_path, assert_no_trace):
    kind, trained_on, params = DETECTOR_TABLE[name]
    det = make_detector(name, params)
    assert isinstance(det, ScoreDetector if kind == "score" else SliceDetector)
    assert trained_on in det.trained_on
    with pytest.raises(SafeReuseError, match="not fitted"):
        det.detect(teacher, bundle.test.x[:3])
    x, xt = bundle.train.x[:400], bundle.test.x[:60]
    with assert_no_trace(teacher, state=True):
        det.fit(teacher, x, labels=bundle.train.y[:400], progress=False)
        d = det.detect(teacher, xt)
    assert d.flags.shape == (60,) and d.flags.dtype == torch.bool and d.scores.shape == (60,)
    assert torch.equal(d.model_class, torch.as_tensor(teacher(xt).argmax(1)))
    det.save(tmp_path / "det")
    assert not list(tmp_path.glob("**/*.pkl")) and not list(tmp_path.glob("**/*.pt"))
    back = load_detector(tmp_path / "det")
    assert type(back) is type(det) and back.config() == det.config()
    d2 = back.detect(teacher, xt)
    assert torch.equal(d.flags, d2.flags) and torch.allclose(d.scores, d2.scores)
    assert len(back.filter(teacher, xt)) == int((~d.flags).sum())
    changed = copy.deepcopy(teacher)
    with torch.no_grad():
        changed.get_parameter(f"{teacher.head_name}.bias").add_(1.0)
    with pytest.raises(SafeReuseError, match="another model"):
        back.detect(changed, xt[:5])
    assert back.detect(teacher, xt[:0]).flags.shape == (0,)


@pytest.mark.parametrize("name", [n for n, row in sorted(DETECTOR_TABLE.items()) if row[0] == "score"])
def test_score_detectors_calibrate_on_held_back_benign_inputs(name, teacher, bundle):
    _, _, params = DETECTOR_TABLE[name]
    det = make_detector(name, {**params, "fpr": 0.1, "calibration": 0.25})
    det.fit(teacher, bundle.train.x[:400], labels=bundle.train.y[:400], progress=False)
    n_cal = det.info["n_calibration"]
    assert n_cal == 100 and det.info["n_train"] == 300
    # the threshold is the 0.9 quantile of the held-back scores: at most 10 % of them lie above it
    assert det.info["calibration_flag_rate"] <= 0.1
    assert abs(float((det.calibration_scores > det.threshold).double().mean()) - 0.1) <= 0.03
    loose = det.retarget(0.4).threshold
    assert loose <= det.retarget(0.1).threshold
    # inputs nothing like the training data score higher than benign test inputs
    benign = det.detect(teacher, bundle.test.x[:100])
    noise = det.detect(teacher, torch.rand(100, *bundle.test.x.shape[1:]) * 4)
    assert float(noise.scores.median()) > float(benign.scores.median())
    assert noise.flags.float().mean() > benign.flags.float().mean()


def test_mahalanobis_scores_by_hand():
    # the head's input is the input itself: features are known exactly
    net = nn.Sequential(nn.Linear(2, 2))
    f = torch.tensor(
        [[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0], [10.0, 0.0], [12.0, 0.0], [10.0, 2.0], [12.0, 2.0]]
    )
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    det = Mahalanobis()
    det.learn(net, f, y)
    assert torch.allclose(det.class_means, torch.tensor([[1.0, 1.0], [11.0, 1.0]]))
    # pooled covariance of the centred features: diag(1, 1) → precision = identity
    assert torch.allclose(det.precision, torch.eye(2), atol=1e-5)
    q = torch.tensor([[1.0, 3.0], [6.0, 1.0]])
    assert torch.allclose(det.score(net, q, torch.zeros(2, dtype=torch.long)), torch.tensor([4.0, 25.0]))
    assert torch.equal(head_inputs(net, q), q)


def test_slice_knn_counts_neighbours_of_another_class():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 2))
    x = torch.randn(80, 3)
    y = (x[:, 0] > 0).long()
    det = SliceKNN(k=4, dims=5)
    det.learn(net, x, y)
    assert det.bank.shape == (80, 5) and torch.equal(det.labels, y)
    q = torch.randn(10, 3)
    yq = torch.tensor([0, 1] * 5)
    z = det._project(net, q)
    idx = torch.cdist(z, det.bank).topk(4, largest=False).indices
    other = (y[idx] != yq[:, None]).sum(1).float()
    s = det.score(net, q, yq)
    assert torch.equal(s.floor(), other) and bool(((s - other) < 1).all())


def test_detector_parameters_are_routed_and_checked():
    dets = make_detectors(["slice-knn", "featuremap"], {"k": 7, "max_depth": 3}, seed=4)
    assert dets["slice-knn"].k == 7 and dets["featuremap"].max_depth == 3 and dets["slice-knn"].seed == 4
    with pytest.raises(SafeReuseError, match="nosuch"):
        make_detectors(["slice-knn", "featuremap"], {"nosuch": 1})
    with pytest.raises(SafeReuseError, match="fpr"):
        make_detector("mahalanobis", {"fpr": 1.5})
    with pytest.raises(SafeReuseError, match="unknown detector"):
        make_detector("nosuch-detector")


def test_old_tree_detectors_still_load(teacher, bundle, tmp_path):
    det = SliceDetector("featuremap", max_depth=3).fit(teacher, bundle.train.x[:200], progress=False)
    det.save(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "detector.json").read_text())
    assert meta["format"] == "safereuse-slice-detector/1" and meta["config"]["features"] == "featuremap"
    assert isinstance(load_detector(tmp_path / "old"), SliceDetector)
    with pytest.raises(SafeReuseError, match="cannot read a detector"):
        load_detector(tmp_path / "missing")


def test_cli_detect_reports_each_detector_with_counts_and_intervals(digits_teacher_dir, capsys):
    code = main(["slice", "detect", "--model", str(digits_teacher_dir), "--attack", "fgsm", "-p", "eps=0.1",
                 "--detector", "slice-knn", "--detector", "mahalanobis", "--detector-param", "k=5",
                 "--n-train", "300", "--n-test", "60", "--json", "-q"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    res = json.loads(capsys.readouterr().out)
    assert res["detectors"]["slice-knn"]["trained_on"] == "benign inputs only"
    assert res["detectors"]["slice-knn"]["config"]["k"] == 5
    for m in res["attacks"][0]["detectors"].values():
        # balanced sets: precision is that of a 1 : 1 mix
        assert m["n_benign"] == m["n_adversarial"] == min(res["attacks"][0]["n_success"], 60)
        assert {"value", "k", "n", "ci_low", "ci_high"} <= set(m["recall"]) and {"value", "k", "n"} <= set(
            m["precision"]
        )
        assert m["f1"] is None or 0 <= m["f1"] <= 1
        assert np.isfinite(m["auc"])
    code = main(["slice", "detect", "--model", str(digits_teacher_dir), "--attack", "fgsm",
                 "--detector", "nosuch"])  # fmt: skip
    assert code == 2 and "unknown detector" in capsys.readouterr().err


def test_a_detection_spec_checks_its_detectors_when_loaded():
    from safereuse.runner.spec import load_spec

    spec = """
experiment:
  kind: slice-detect
  params: {attacks: [fgsm], detectors: [DETS], n_train: 100, n_test: 20}
scenarios:
  - name: digits
    teacher: {arch: smallcnn, data: digits, classes: 0-4, epochs: 1, seed: 0}
seeds: [0]
"""
    assert load_spec(text=spec.replace("DETS", "slice-knn, nnslicer"))
    with pytest.raises(SafeReuseError, match="unknown detector"):
        load_spec(text=spec.replace("DETS", "slice-knn, nosuch"))
    with pytest.raises(SafeReuseError, match="bogus"):
        load_spec(
            text=spec.replace("DETS", "slice-knn").replace(
                "n_test: 20", "n_test: 20, detector_params: {bogus: 1}"
            )
        )

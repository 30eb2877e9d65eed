"""EffectivePath as Qiu et al. describe it: the positive-only path rule, class paths, the detector."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from safereuse.applications.detect import DETECTORS, load_detector, make_detector
from safereuse.applications.pathsim import QiuPath
from safereuse.errors import SafeReuseError
from safereuse.models import create_model
from safereuse.slicing import Slicer
from safereuse.slicing.effective_path import positive_paths, select_positive


def _hand_net() -> nn.Module:
    net = nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0, 0], [1, 0.75, -0.1], [0, 0, -1], [2, 2, -1]]))
        net[2].weight.copy_(torch.tensor([[1.0, 1, 5, 1], [0, 0, 0, 1]]))
    return net


def test_positive_rule_by_hand():
    # x = [1, 2, 3] → hidden [1, 2.2, 0 (ReLU of −3), 3]; θ_EP = 0.8
    # output 0: terms [1, 2.2, 0, 3] (sum 6.2, target 4.96): 3 + 2.2 ≥ 4.96 → hidden 3 and 1
    # hidden 1: terms [1, 1.5, −0.3] (sum 2.2, target 1.76): 1.5 + 1 → inputs 1 and 0
    # hidden 3: terms [2, 4, −3] (sum 3, target 2.4): 4 alone → input 1 (never the negative −3)
    net, x = _hand_net(), torch.tensor([[1.0, 2.0, 3.0]])
    r = positive_paths(net, x, share=0.8, criterion=0)
    assert r.layers == ["0", "2"]
    assert r.synapse["2"][0].tolist() == [[0, 1, 0, 1], [0, 0, 0, 0]]
    assert r.synapse["0"][0].tolist() == [[0, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0]]
    assert r.neuron["0"][0].tolist() == [0, 1, 0, 1]
    assert r.meta["seed"] == [0]
    # the symmetric engine (|w x|, both signs) keeps hidden 3's negative term: the rules differ there
    sym = Slicer(theta=0.2, reference="zero").slice(net, x, criterion=0, per_input=True)
    assert sym.synapse["0"][0, 3, 2] != 0


def test_select_positive_edge_cases():
    # the sum is not positive → the largest term alone; one input of two at θ = 0.5 → the larger
    assert select_positive(torch.tensor([[1.0, -3.0, 0.5]]), 0.5).tolist() == [[True, False, False]]
    assert select_positive(torch.tensor([[1.0, 2.0]]), 0.5).tolist() == [[False, True]]
    # share 1: the target is the whole sum (2.75, negatives included), which 2 + 1 already reaches
    assert select_positive(torch.tensor([[1.0, 2.0, -0.5, 0.25]]), 1.0).tolist() == [
        [True, True, False, False]
    ]


def test_rank_and_tensor_criterion_and_errors():
    net, x = _hand_net(), torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]])
    logits = net(x)
    r2 = positive_paths(net, x, rank=2)
    assert r2.meta["seed"] == logits.argsort(1, descending=True)[:, 1].tolist()
    rt = positive_paths(net, x, criterion=torch.tensor([1, 0]))
    assert rt.meta["seed"] == [1, 0]
    with pytest.raises(SafeReuseError):
        positive_paths(net, x, share=0.0)
    with pytest.raises(SafeReuseError):
        positive_paths(net, x, rank=0)
    with pytest.raises(SafeReuseError):
        positive_paths(net, x, criterion=torch.tensor([0]))


def test_paths_through_a_resnet():
    torch.manual_seed(0)
    net = create_model("resnet8", num_classes=3, width=4).eval()
    r = positive_paths(net, torch.rand(5, 1, 28, 28), batch_size=2)
    assert r.layers[-1] == "fc" and r.count == 5
    # every path holds at least one synapse of the head, into the predicted class only
    head = r.synapse["fc"]
    assert (head.flatten(1).sum(1) >= 1).all()
    pred = net(torch.rand(0, 1, 28, 28)).shape  # the model runs unchanged after the walk
    assert pred == (0, 3)


def _clusters(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centers = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])
    return centers[y] + 0.4 * torch.randn(n, 4, generator=g), y


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    # random hidden layers, the head fitted by least squares (no training loop: seconds matter)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = _clusters(600, 1)
    with torch.no_grad():
        h = torch.cat([net[:4](x), torch.ones(len(x), 1)], 1)
        sol = torch.linalg.lstsq(h, nn.functional.one_hot(y, 3).float()).solution
        net[4].weight.copy_(sol[:-1].T)
        net[4].bias.copy_(sol[-1])
        assert (net(x).argmax(1) == y).float().mean() > 0.9
    return net.eval()


def test_class_paths_are_the_union_of_correct_training_paths(trained):
    x, y = _clusters(120, 2)
    y = y.clone()
    y[:3] = (y[:3] + 1) % 3  # wrong labels: these inputs are left out of the class paths
    det = QiuPath(share=0.5)
    det.class_paths(trained, x, y, 3)
    ok = trained(x).argmax(1) == y
    r = positive_paths(trained, x[ok], criterion=y[ok])
    for k in r.layers:
        for c in range(3):
            union = r.synapse[k][y[ok] == c].amax(0)
            assert torch.equal(det.paths[k][c], union.to(torch.uint8))
    # min_share: the synapses on more than that share of the class's paths
    det_half = QiuPath(share=0.5, min_share=0.5)
    det_half.class_paths(trained, x, y, 3)
    k = r.layers[0]
    mine = r.synapse[k][y[ok] == 0].float()
    assert torch.equal(det_half.paths[k][0], (mine.sum(0) > 0.5 * len(mine)).to(torch.uint8))


@pytest.fixture(scope="module")
def fitted(trained) -> QiuPath:
    x, y = _clusters(600, 3)
    return QiuPath(eps=0.6, batch_size=128).fit(trained, x, labels=y, progress=False)


def test_detector_flags_far_inputs_more_than_benign(trained, fitted):
    assert DETECTORS.get("effectivepath") is QiuPath
    assert fitted.info["n_adversarial_examples"] > 0 and "fgsm eps=0.6" in fitted.info["trained_on"]
    x, _ = _clusters(300, 4)
    g = torch.Generator().manual_seed(5)
    far = 4.0 * torch.randn(300, 4, generator=g)  # away from every cluster
    benign = fitted.detect(trained, x).flags.float().mean()
    flagged = fitted.detect(trained, far).flags.float().mean()
    assert flagged > benign


def test_save_load_round_trip_and_fingerprint(trained, fitted, tmp_path):
    x, _ = _clusters(50, 6)
    fitted.save(tmp_path / "det")
    back = load_detector(tmp_path / "det")
    assert isinstance(back, QiuPath) and back.layers == fitted.layers
    assert torch.equal(back.detect(trained, x).scores, fitted.detect(trained, x).scores)
    other = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    with pytest.raises(SafeReuseError, match="another model"):
        back.detect(other, x)


def test_params_are_validated():
    assert make_detector("effectivepath", {"share": 0.3, "eps": 0.1}).share == 0.3
    with pytest.raises(SafeReuseError):
        make_detector("effectivepath", {"share": 1.5})
    with pytest.raises(SafeReuseError):
        make_detector("effectivepath", {"nope": 1})

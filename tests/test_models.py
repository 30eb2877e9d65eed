"""Contract tests for every registered model, plus torchvision state-dict compatibility.

A declarative table (``ROWS``) drives the contract tests: a new architecture is a new row, and
``test_table_covers_registry`` fails until it has one. Models are tiny (small widths / images,
batch 2) and seeded; ImageNet-size checks run on the ``meta`` device (shapes only, no memory).
"""

from __future__ import annotations

import copy
import io
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn

from safereuse.errors import SafeReuseError
from safereuse.models import (
    MODELS,
    InputSpec,
    ReusableModel,
    adapt,
    check_contract,
    create_model,
    last_k_parameters,
)
from safereuse.models.wide_resnet import wide_resnet

NUM_CLASSES = 7
TINY_BERT = {
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "vocab_size": 100,
}


@dataclass(frozen=True)
class Row:
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    in_channels: int = 3
    image_size: int = 32
    text: bool = False  # token ids [N, image_size] (vocabulary 100, padded with 0) instead of images

    @property
    def id(self) -> str:
        return self.name

    @property
    def input_size(self) -> tuple[int, int]:
        """``input_spec.size`` of the built model (text models record ``(1, max_len)``)."""
        return (1, self.image_size) if self.text else (self.image_size, self.image_size)

    def build(self, seed: int = 0) -> ReusableModel:
        torch.manual_seed(seed)
        return create_model(
            self.name,
            num_classes=NUM_CLASSES,
            in_channels=self.in_channels,
            image_size=self.image_size,
            **self.kwargs,
        )

    def input(self, n: int = 2, seed: int = 123) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        if self.text:  # [CLS] random tokens [SEP] then padding, a different length per row
            ids = torch.randint(1, 100, (n, self.image_size), generator=gen)
            lengths = torch.randint(3, self.image_size + 1, (n,), generator=gen)
            pos = torch.arange(self.image_size)
            ids[:, 0] = 1
            ids = torch.where(pos == (lengths - 1)[:, None], torch.full_like(ids, 2), ids)
            return torch.where(pos < lengths[:, None], ids, torch.zeros_like(ids))
        return torch.rand(n, self.in_channels, self.image_size, self.image_size, generator=gen)


# One row per registered model; kwargs keep them small and fast on CPU.
ROWS = [
    Row("smallcnn", {"width": 4, "hidden": 16}, in_channels=1, image_size=28),
    Row("resnet8", {"width": 4}, in_channels=1, image_size=28),
    Row("resnet10", {"width": 4}, in_channels=1, image_size=28),
    Row("resnet18", image_size=32),
    Row("resnet34", image_size=32),
    Row("resnet50", image_size=32),
    Row("resnet20", image_size=32),
    Row("resnet32", {"width": 8}, in_channels=1, image_size=28),
    Row("resnet56", {"width": 4}, image_size=16),
    Row("vgg11", in_channels=1, image_size=28),  # default small layout for 28 px grey images
    Row("vgg16", {"hidden": 32}, image_size=32),
    Row("mobilenet_v2", {"width_mult": 0.5}, in_channels=1, image_size=28),
    Row("wrn", {"depth": 10, "widen_factor": 1}, in_channels=1, image_size=28),
    Row("wrn-28-4", image_size=16),
    Row("wrn-34-10", image_size=8),
    Row("minilm", {"pretrained": False, "config": TINY_BERT}, in_channels=1, image_size=12, text=True),
    Row("mpnet", {"pretrained": False, "config": TINY_BERT}, in_channels=1, image_size=12, text=True),
    Row(
        "hf-encoder",
        {"pretrained": False, "model_type": "roberta", "config": TINY_BERT},
        in_channels=1,
        image_size=12,
        text=True,
    ),
]


# tiny tensors on a shared 2-core machine: one intra-op thread avoids 100× slow-downs
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def _built() -> Any:
    cache: dict[str, ReusableModel] = {}
    yield cache
    cache.clear()


@pytest.fixture(params=ROWS, ids=[r.id for r in ROWS])
def row(request: pytest.FixtureRequest) -> Row:
    return request.param


@pytest.fixture
def model(row: Row, _built: dict[str, ReusableModel]) -> ReusableModel:
    """A fresh (deep-copied) eval-mode instance of ``row``'s model, built with seed 0."""
    if row.id not in _built:
        _built[row.id] = row.build(seed=0).eval()
    return copy.deepcopy(_built[row.id])


# ------------------------------------------------------------------------------------------------
# table-driven contract tests
# ------------------------------------------------------------------------------------------------
def test_table_covers_registry() -> None:
    assert sorted(r.name for r in ROWS) == MODELS.names()


@torch.no_grad()
def test_forward_shape(row: Row, model: ReusableModel) -> None:
    y = model(row.input())
    assert y.shape == (2, NUM_CLASSES)
    assert torch.isfinite(y).all()
    assert model.num_classes == NUM_CLASSES
    assert model.input_spec.channels == row.in_channels
    assert model.input_spec.size == row.input_size
    assert model.info is not None and model.info.arch == row.name
    assert check_contract(model) is model


@torch.no_grad()
def test_features_then_head_is_forward(row: Row, model: ReusableModel) -> None:
    x = row.input()
    f = model.features(x)
    assert f.shape == (2, model.feature_dim)
    assert isinstance(model.head, nn.Linear)
    assert model.get_submodule(model.head_name) is model.head
    torch.testing.assert_close(model.head(f), model(x), rtol=0, atol=0)


@torch.no_grad()
def test_features_apply_normalisation(row: Row, model: ReusableModel) -> None:
    x = row.input()
    if row.text:  # token ids are not normalised
        assert model.normalize(x) is x
        return
    mean = torch.tensor(model.input_spec.mean).reshape(1, -1, 1, 1)
    std = torch.tensor(model.input_spec.std).reshape(1, -1, 1, 1)
    torch.testing.assert_close(model.features(x), model.forward_features((x - mean) / std))


def test_reset_head_changes_only_the_head(row: Row, model: ReusableModel) -> None:
    x = row.input()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        f_before = model.features(x)
    rng_before = torch.random.get_rng_state()
    new = model.reset_head(3, seed=0)
    assert torch.equal(torch.random.get_rng_state(), rng_before), "a seeded reset_head touched the global RNG"
    assert model.head is new and new.out_features == 3
    assert model.info is not None and model.info.kwargs["num_classes"] == 3
    with torch.no_grad():
        assert model(x).shape == (2, 3)
        assert torch.equal(model.features(x), f_before)
    after = model.state_dict()
    prefix = model.head_name + "."
    assert before.keys() == after.keys()
    for k, v in before.items():
        if k.startswith(prefix):
            assert after[k].shape[0] == 3
        else:
            assert torch.equal(after[k], v), k
    # the same seed gives the same head
    other = copy.deepcopy(model)
    other.reset_head(3, seed=0)
    assert torch.equal(other.head.weight, model.head.weight)


def test_blocks_cover_every_parameter_once(model: ReusableModel) -> None:
    blocks = model.blocks()
    assert [n for n, _ in blocks] == model.block_names()
    assert blocks[-1][0] == model.head_name and blocks[-1][1] is model.head
    owner = {id(p): n for n, p in model.named_parameters()}
    seen: Counter[int] = Counter()
    for _, module in blocks:
        for p in module.parameters():
            seen[id(p)] += 1
    assert set(seen) == set(owner), {owner[i] for i in set(owner) - set(seen)}
    assert all(c == 1 for c in seen.values()), [owner[i] for i, c in seen.items() if c > 1]
    # the composite views are not registered: parameter names are unchanged
    assert [n for n, _ in model.named_parameters()] == list(owner.values())
    assert last_k_parameters(model, 1) == [model.head_name + ".weight", model.head_name + ".bias"]
    assert len(last_k_parameters(model, len(blocks))) == len(owner)


@torch.no_grad()
def test_blocks_run_in_order(row: Row, model: ReusableModel, assert_no_trace: Any) -> None:
    """Blocks are ordered input → head: their first calls in a forward pass are in list order."""
    calls: list[int] = []
    handles = []
    trace = assert_no_trace(model, state=True)
    try:
        for i, (name, _) in enumerate(model.blocks()):
            for part in name.split("+"):
                hook = model.get_submodule(part).register_forward_pre_hook(
                    lambda _m, _a, i=i: calls.append(i)
                )
                handles.append(hook)
        model(row.input())
    finally:
        for h in handles:
            h.remove()
    assert calls == sorted(calls)
    assert set(calls) == set(range(len(model.blocks())))
    trace.check()


def test_state_dict_round_trip(row: Row, model: ReusableModel) -> None:
    x = row.input()
    with torch.no_grad():  # make BN running statistics non-trivial first
        model.train()
        model(row.input(n=4, seed=7))
        model.eval()
        expected = model(x)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = row.build(seed=1).eval()
    with torch.no_grad():
        assert not torch.equal(fresh(x), expected)
    result = fresh.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)


def test_normalisation_buffers_not_persistent(model: ReusableModel) -> None:
    keys = set(model.state_dict())
    assert not any("_norm_" in k for k in keys)
    buffers = dict(model.named_buffers())
    assert "_norm_mean" in buffers and "_norm_std" in buffers


# ------------------------------------------------------------------------------------------------
# registry and contract details
# ------------------------------------------------------------------------------------------------
def test_unknown_model_raises() -> None:
    with pytest.raises(SafeReuseError, match="unknown model"):
        create_model("resnet-does-not-exist")


def test_unknown_option_raises() -> None:
    with pytest.raises(SafeReuseError, match="no parameter"):
        create_model("vgg11", num_classes=3, in_channels=1, image_size=28, widht=3)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("wrn-28-4", {"activation": "gelu"}),
        ("wrn-28-4", {"drop_rate": 1.5}),
        ("mobilenet_v2", {"width_mult": 0.0}),
        ("vgg16", {"dropout": 1.0}),
    ],
)
def test_bad_options_raise(name: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(SafeReuseError):
        create_model(name, num_classes=3, in_channels=3, image_size=32, **kwargs)


def test_wide_resnet_bad_depth_raises() -> None:
    with pytest.raises(SafeReuseError, match="6n"):
        wide_resnet(depth=30, widen_factor=2)


def test_set_normalization() -> None:
    m = create_model("smallcnn", num_classes=3, in_channels=3, image_size=8, width=2, hidden=4).eval()
    x = torch.rand(2, 3, 8, 8)
    m.set_normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert m.input_spec.mean == (0.0, 0.0, 0.0)
    with torch.no_grad():
        torch.testing.assert_close(m.features(x), m.forward_features(x))
    with pytest.raises(SafeReuseError):
        m.set_normalization((0.0, 0.0), (1.0, 1.0))
    with pytest.raises(SafeReuseError):
        m.set_normalization((0.0,), (0.0,))
    m.double()
    m.set_normalization((0.5,), (0.5,))
    assert m._norm_mean.dtype == torch.float64
    assert "_norm_mean" not in m.state_dict()


def test_features_trunk_and_method_coexist() -> None:
    """VGG/MobileNet keep torchvision's ``features`` submodule *and* the contract ``features(x)``."""
    for name, kwargs in (("vgg11", {"hidden": 8}), ("mobilenet_v2", {"width_mult": 0.25})):
        m = create_model(name, num_classes=3, in_channels=1, image_size=16, **kwargs)
        trunk = m.get_submodule("features")
        assert isinstance(trunk, nn.Sequential) and m.feature_layers is trunk  # type: ignore[attr-defined]
        assert isinstance(m.get_submodule("features.0"), nn.Module)
        assert m.get_parameter(next(k for k in m.state_dict() if k.startswith("features."))) is not None
        assert m.eval().features(torch.rand(2, 1, 16, 16)).shape == (2, m.feature_dim)
        m.set_submodule("features.1", m.get_submodule("features.1"))  # replacing through the path works
        with pytest.raises(AttributeError):
            m.get_submodule("features.999")


def test_cifar_resnet_structure() -> None:
    for name, n in (("resnet20", 3), ("resnet32", 5), ("resnet56", 9)):
        with torch.device("meta"):
            m = create_model(name, num_classes=10, in_channels=3, image_size=32)
        convs = [k for k, v in m.state_dict().items() if k.endswith(".weight") and v.dim() == 4]
        main_convs = [k for k in convs if "downsample" not in k]
        assert len(main_convs) + 1 == 6 * n + 2  # depth counts the convs on the main path and fc
        assert m.state_dict()["conv1.weight"].shape == (16, 3, 3, 3)
        assert m.state_dict()["layer2.0.downsample.0.weight"].shape == (32, 16, 1, 1)
        assert m.state_dict()["layer3.0.downsample.0.weight"].shape == (64, 32, 1, 1)
        assert "layer1.0.downsample.0.weight" not in m.state_dict()
        assert m.fc.in_features == 64 and len(m.blocks()) == 3 * n + 2
    # option-B shortcuts: the paper's 0.27 M (269,722 with option A) + 2 × (1×1 conv + BN) = 2,752
    with torch.device("meta"):
        r20 = create_model("resnet20", num_classes=10, in_channels=3, image_size=32)
    assert sum(p.numel() for p in r20.parameters()) == 269_722 + 2_752


def test_wide_resnet_structure() -> None:
    with torch.device("meta"):
        m = create_model("wrn-34-10", num_classes=10, in_channels=3, image_size=32)
        w28 = create_model("wrn-28-4", num_classes=10, in_channels=3, image_size=32)
        w28_10 = wide_resnet(28, 10)
    names = m.block_names()
    assert len(names) == 17
    assert names[0] == "conv1+block1.layer.0" and names[-2:] == ["bn1", "fc"]
    assert sum(name.count("layer.") for name in names) == 15
    assert len(w28.block_names()) == 14
    sd = m.state_dict()
    assert sd["conv1.weight"].shape == (16, 3, 3, 3)
    assert sd["block1.layer.0.convShortcut.weight"].shape == (160, 16, 1, 1)
    assert "block1.layer.1.convShortcut.weight" not in sd
    assert sd["block2.layer.0.conv1.weight"].shape == (320, 160, 3, 3)
    assert sd["block3.layer.4.conv2.weight"].shape == (640, 640, 3, 3)
    assert sd["bn1.weight"].shape == (640,) and sd["fc.weight"].shape == (10, 640)
    # parameter counts published for these networks (Zagoruyko & Komodakis; TRADES: 46.2 M)
    assert sum(p.numel() for p in m.parameters()) == 46_160_474
    assert sum(p.numel() for p in w28_10.parameters()) == 36_479_194
    assert last_k_parameters(m, 2) == ["bn1.weight", "bn1.bias", "fc.weight", "fc.bias"]
    with pytest.raises(SafeReuseError):
        last_k_parameters(m, 18)


@torch.no_grad()
def test_small_input_layouts() -> None:
    spatial: dict[str, tuple[int, ...]] = {}

    def grab(name: str):
        return lambda _m, _a, out: spatial.__setitem__(name, tuple(out.shape[-2:]))

    vgg = create_model("vgg11", num_classes=3, in_channels=1, image_size=28).eval()
    mob = create_model("mobilenet_v2", num_classes=3, in_channels=1, image_size=28, width_mult=0.25).eval()
    assert vgg.small_input and mob.small_input  # type: ignore[attr-defined]
    assert vgg.classifier[0].in_features == 512 and vgg.feature_dim == 512  # type: ignore[union-attr]
    h1 = vgg.feature_layers.register_forward_hook(grab("vgg"))  # type: ignore[union-attr]
    h2 = mob.feature_layers.register_forward_hook(grab("mob"))  # type: ignore[union-attr]
    try:
        vgg(torch.rand(2, 1, 28, 28))
        mob(torch.rand(2, 1, 28, 28))
    finally:
        h1.remove()
        h2.remove()
    assert spatial == {"vgg": (1, 1), "mob": (4, 4)}
    with torch.device("meta"):
        big = create_model("vgg11", num_classes=3, in_channels=3, image_size=224)
        forced = create_model("vgg11", num_classes=3, in_channels=3, image_size=32, small_input=False)
        mob_big = create_model("mobilenet_v2", num_classes=3, in_channels=3, image_size=224)
    assert not big.small_input and big.feature_dim == 4096  # type: ignore[attr-defined]
    assert forced.classifier[0].in_features == 25088  # type: ignore[union-attr]
    assert forced(torch.empty(2, 3, 32, 32, device="meta")).shape == (2, 3)
    assert mob_big.feature_layers[0][0].stride == (2, 2)  # type: ignore[index]
    assert mob.feature_layers[0][0].stride == (1, 1)  # type: ignore[index]


# ------------------------------------------------------------------------------------------------
# torchvision compatibility: expected keys written from torchvision's layer definitions,
# independently of safereuse's model code
# ------------------------------------------------------------------------------------------------
Shape = tuple[int, ...]


def _bn(prefix: str, c: int) -> list[tuple[str, Shape]]:
    return [
        (f"{prefix}.weight", (c,)),
        (f"{prefix}.bias", (c,)),
        (f"{prefix}.running_mean", (c,)),
        (f"{prefix}.running_var", (c,)),
        (f"{prefix}.num_batches_tracked", ()),
    ]


def tv_resnet_keys(layers: list[int], bottleneck: bool) -> list[tuple[str, Shape]]:
    """torchvision.models.resnet.ResNet(BasicBlock|Bottleneck, layers), 1000 classes."""
    keys = [("conv1.weight", (64, 3, 7, 7)), *_bn("bn1", 64)]
    expansion = 4 if bottleneck else 1
    inplanes = 64
    for stage, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512), strict=True), start=1):
        for b in range(n):
            p = f"layer{stage}.{b}"
            cin = inplanes if b == 0 else planes * expansion
            if bottleneck:
                keys += [(f"{p}.conv1.weight", (planes, cin, 1, 1)), *_bn(f"{p}.bn1", planes)]
                keys += [(f"{p}.conv2.weight", (planes, planes, 3, 3)), *_bn(f"{p}.bn2", planes)]
                keys += [(f"{p}.conv3.weight", (planes * 4, planes, 1, 1)), *_bn(f"{p}.bn3", planes * 4)]
            else:
                keys += [(f"{p}.conv1.weight", (planes, cin, 3, 3)), *_bn(f"{p}.bn1", planes)]
                keys += [(f"{p}.conv2.weight", (planes, planes, 3, 3)), *_bn(f"{p}.bn2", planes)]
            if b == 0 and (stage > 1 or inplanes != planes * expansion):
                keys += [(f"{p}.downsample.0.weight", (planes * expansion, cin, 1, 1))]
                keys += _bn(f"{p}.downsample.1", planes * expansion)
        inplanes = planes * expansion
    return keys + [("fc.weight", (1000, 512 * expansion)), ("fc.bias", (1000,))]


def tv_vgg_bn_keys(cfg: list[int | str]) -> list[tuple[str, Shape]]:
    """torchvision.models.vgg.VGG(make_layers(cfg, batch_norm=True)), 1000 classes."""
    keys: list[tuple[str, Shape]] = []
    i, cin = 0, 3
    for v in cfg:
        if v == "M":
            i += 1  # MaxPool2d
            continue
        assert isinstance(v, int)
        keys += [(f"features.{i}.weight", (v, cin, 3, 3)), (f"features.{i}.bias", (v,))]
        keys += _bn(f"features.{i + 1}", v)
        i += 3  # conv, BN, ReLU
        cin = v
    return keys + [
        ("classifier.0.weight", (4096, 512 * 7 * 7)),
        ("classifier.0.bias", (4096,)),
        ("classifier.3.weight", (4096, 4096)),
        ("classifier.3.bias", (4096,)),
        ("classifier.6.weight", (1000, 4096)),
        ("classifier.6.bias", (1000,)),
    ]


def tv_mobilenet_v2_keys() -> list[tuple[str, Shape]]:
    """torchvision.models.mobilenet_v2(), width_mult 1.0, 1000 classes."""
    keys = [("features.0.0.weight", (32, 3, 3, 3)), *_bn("features.0.1", 32)]
    cin, idx = 32, 1
    for t, c, n, _s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                        (6, 160, 3, 2), (6, 320, 1, 1)]:  # fmt: skip
        for _ in range(n):
            hid, p, j = cin * t, f"features.{idx}.conv", 0
            if t != 1:
                keys += [(f"{p}.0.0.weight", (hid, cin, 1, 1)), *_bn(f"{p}.0.1", hid)]
                j = 1
            keys += [(f"{p}.{j}.0.weight", (hid, 1, 3, 3)), *_bn(f"{p}.{j}.1", hid)]
            keys += [(f"{p}.{j + 1}.weight", (c, hid, 1, 1)), *_bn(f"{p}.{j + 2}", c)]
            cin, idx = c, idx + 1
    keys += [("features.18.0.weight", (1280, 320, 1, 1)), *_bn("features.18.1", 1280)]
    return keys + [("classifier.1.weight", (1000, 1280)), ("classifier.1.bias", (1000,))]


VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]

# (our name, expected keys, number of keys, parameter count published by torchvision)
TORCHVISION = [
    ("resnet18", tv_resnet_keys([2, 2, 2, 2], bottleneck=False), 122, 11_689_512),
    ("resnet34", tv_resnet_keys([3, 4, 6, 3], bottleneck=False), 218, 21_797_672),
    ("resnet50", tv_resnet_keys([3, 4, 6, 3], bottleneck=True), 320, 25_557_032),
    ("vgg11", tv_vgg_bn_keys(VGG11), 62, 132_868_840),
    ("vgg16", tv_vgg_bn_keys(VGG16), 97, 138_365_992),
    ("mobilenet_v2", tv_mobilenet_v2_keys(), 314, 3_504_872),
]


def _meta_model(name: str) -> ReusableModel:
    with torch.device("meta"):
        return create_model(name, num_classes=1000, in_channels=3, image_size=224)


def test_expected_key_lists_are_sane() -> None:
    """Hand-checked anchors for the generated torchvision key lists."""
    tables = {name: dict(keys) for name, keys, _, _ in TORCHVISION}
    for name, keys, n_keys, n_params in TORCHVISION:
        assert len(keys) == n_keys == len(tables[name]), name
        params = sum(
            torch.Size(s).numel()
            for k, s in keys
            if not k.endswith(("running_mean", "running_var", "tracked"))
        )
        assert params == n_params, name
    r18, vgg, mob = tables["resnet18"], tables["vgg11"], tables["mobilenet_v2"]
    assert r18["conv1.weight"] == (64, 3, 7, 7)
    assert r18["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
    assert r18["layer4.1.bn2.running_var"] == (512,)
    assert r18["fc.weight"] == (1000, 512)
    assert "layer1.0.downsample.0.weight" not in r18
    assert tables["resnet50"]["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert vgg["features.0.weight"] == (64, 3, 3, 3)
    assert vgg["features.25.weight"] == (512, 512, 3, 3) and vgg["features.26.running_mean"] == (512,)
    assert vgg["classifier.0.weight"] == (4096, 25088)
    assert tables["vgg16"]["features.40.weight"] == (512, 512, 3, 3)
    assert mob["features.1.conv.0.0.weight"] == (32, 1, 3, 3)
    assert mob["features.1.conv.1.weight"] == (16, 32, 1, 1)
    assert mob["features.2.conv.0.0.weight"] == (96, 16, 1, 1)
    assert mob["features.17.conv.2.weight"] == (320, 960, 1, 1)
    assert mob["features.18.0.weight"] == (1280, 320, 1, 1)
    assert mob["classifier.1.weight"] == (1000, 1280)


@pytest.mark.parametrize(
    "name, expected", [(n, k) for n, k, _, _ in TORCHVISION], ids=[t[0] for t in TORCHVISION]
)
def test_torchvision_keys_and_shapes(name: str, expected: list[tuple[str, Shape]]) -> None:
    m = _meta_model(name)
    ours = [(k, tuple(v.shape)) for k, v in m.state_dict().items()]
    assert ours == expected  # same keys, same shapes, same order
    assert m(torch.empty(2, 3, 224, 224, device="meta")).shape == (2, 1000)


@pytest.mark.parametrize(
    "name, expected", [(n, k) for n, k, _, _ in TORCHVISION], ids=[t[0] for t in TORCHVISION]
)
def test_torchvision_checkpoint_loads_strict(name: str, expected: list[tuple[str, Shape]], tmp_path) -> None:
    """A torchvision-format checkpoint (built from the expected list, not from our model) saved with
    ``torch.save`` loads with ``weights_only=True`` and ``strict=True``. Tensors are zero-stride views,
    so the file is a few kB even for VGG; the model lives on ``meta`` and takes them with ``assign``."""

    def tensor(key: str, shape: Shape) -> torch.Tensor:
        if key.endswith("num_batches_tracked"):
            return torch.tensor(0, dtype=torch.long)
        return torch.zeros(()).expand(shape)

    path = tmp_path / f"{name}.pth"
    torch.save({k: tensor(k, s) for k, s in expected}, path)
    state = torch.load(path, weights_only=True)
    m = _meta_model(name)
    result = m.load_state_dict(state, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert m.head.weight.shape == (1000, m.feature_dim) and m.head.weight.device.type == "cpu"
    # a wrong shape is caught (the check is not vacuous)
    key, shape = expected[0]
    state[key] = torch.zeros(()).expand((shape[0] + 1, *shape[1:]))
    with pytest.raises(RuntimeError, match="size mismatch"):
        _meta_model(name).load_state_dict(state, strict=True, assign=True)


# ------------------------------------------------------------------------------------------------
# adapt(): any nn.Module behind the contract
# ------------------------------------------------------------------------------------------------
def test_adapt_sequential(assert_no_trace: Any) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    spec = InputSpec(1, (2, 2), (0.5,), (0.25,))
    m = adapt(net, spec, head="3")
    x = torch.rand(5, 1, 2, 2)
    trace = assert_no_trace(net, state=True)
    with torch.no_grad():
        f = m.features(x)
        assert f.shape == (5, 8) and m.feature_dim == 8
        torch.testing.assert_close(f, torch.relu(net[1](((x - 0.5) / 0.25).flatten(1))))
        torch.testing.assert_close(m.head(f), m(x))
    assert m.head is net[3]
    trace.check()  # features() captures with a hook: it must be gone
    # default blocks: the top-level children, head last; every parameter exactly once
    assert [n for n, _ in m.blocks()] == ["module.0", "module.1", "module.2", "module.3"]
    params = [id(p) for _, b in m.blocks() for p in b.parameters()]
    assert sorted(params) == sorted(id(p) for p in m.parameters()) and len(set(params)) == len(params)
    assert "_norm_mean" not in m.state_dict()
    # explicit blocks and last-k
    m2 = adapt(net, spec, head="3", blocks=["1", "3"])
    assert [n for n, _ in m2.blocks()] == ["module.1", "module.3"]
    assert last_k_parameters(m2, 1) == ["module.3.weight", "module.3.bias"]
    # the hook is removed even when the forward pass fails
    with pytest.raises(RuntimeError):
        m.features(torch.rand(5, 1, 3, 3))
    trace.check()
    # reset_head swaps the Linear inside the wrapped module
    m.reset_head(6, seed=0)
    assert net[3].out_features == 6 and m(x).shape == (5, 6)


def test_adapt_rejects_non_linear_head() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU())
    with pytest.raises(SafeReuseError, match="nn.Linear"):
        adapt(net, InputSpec(1, (2, 2)), head="2")


def test_resnet18_cifar_layout() -> None:
    """``small_input=True``: the CIFAR ResNet-18 (3×3 stride-1 stem, no max-pool, total stride 8) that
    CIFAR-10 work such as NNSlicer uses; the default stays torchvision's ImageNet layout."""
    cifar = create_model("resnet18", num_classes=10, in_channels=3, image_size=32, small_input=True)
    tv = create_model("resnet18", num_classes=10, in_channels=3, image_size=32)
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)  # type: ignore[union-attr]
    assert isinstance(cifar.maxpool, torch.nn.Identity) and isinstance(tv.maxpool, torch.nn.MaxPool2d)
    assert tv.conv1.kernel_size == (7, 7)  # type: ignore[union-attr]
    spatial: dict[str, tuple[int, ...]] = {}
    h = cifar.layer4.register_forward_hook(lambda _m, _a, y: spatial.__setitem__("l4", tuple(y.shape[-2:])))
    try:
        with torch.no_grad():
            assert cifar.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    finally:
        h.remove()
    assert spatial["l4"] == (4, 4)
    assert set(cifar.state_dict()) == set(tv.state_dict())

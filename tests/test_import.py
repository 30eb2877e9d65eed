"""``safereuse import``: checkpoints made elsewhere become artifacts that give the same logits.

Every checkpoint here is made in the test from a zoo model (``torch.save(state_dict)`` in the layout a
public library writes), imported, and compared bit for bit with the model it came from. A student is
fine-tuned with plain PyTorch code, imported with ``--parent`` and audited from the command line.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from cli_helpers import assert_one_line_error
from cli_helpers import run_cli as run
from safereuse import api
from safereuse.artifacts import load_model
from safereuse.data import DataSpec, load_data
from safereuse.errors import SafeReuseError
from safereuse.importing import map_keys, native_layout, read_checkpoint
from safereuse.models import IMAGENET_MEAN, IMAGENET_STD, MODELS, create_model
from safereuse.utils import sha256_file

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)


def _source(arch: str, seed: int = 0, **kwargs) -> nn.Module:
    """A zoo model with random weights *and* non-trivial BatchNorm statistics (so a lost buffer shows)."""
    torch.manual_seed(seed)
    m = create_model(arch, **kwargs)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
                mod.num_batches_tracked.fill_(7)
    return m.eval()


def _same_logits(art_dir: Path, source: nn.Module, n: int = 2) -> None:
    imported = load_model(art_dir).model
    spec = imported.input_spec
    x = torch.rand(n, spec.channels, *spec.size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(imported(x), source(x))


@pytest.fixture(scope="module")
def r18() -> nn.Module:
    """torchvision's resnet18 layout with a 7-class head, ImageNet input."""
    return _source("resnet18", num_classes=7, in_channels=3, image_size=224)


# -- round trips -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "wrap, fmt, unwrapped",
    [
        (lambda sd: sd, "pth", []),
        (lambda sd: {f"module.{k}": v for k, v in sd.items()}, "pth", ["module."]),
        (lambda sd: {"state_dict": sd, "epoch": 90, "best_acc1": 69.8}, "pt", ["state_dict"]),
        (lambda sd: {"net": {f"module.{k}": v for k, v in sd.items()}}, "bin", ["net", "module."]),
        (lambda sd: sd, "safetensors", []),
    ],
    ids=["plain", "dataparallel", "state_dict-wrapped", "net-wrapped-dataparallel", "safetensors"],
)
def test_torchvision_resnet18_imports_with_identical_logits(r18, tmp_path, wrap, fmt, unwrapped):
    path = tmp_path / f"resnet18.{fmt}"
    state = wrap(r18.state_dict())
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    m = api.import_model(path, "resnet18", out=tmp_path / "t")
    _same_logits(tmp_path / "t", r18)
    assert m["role"] == "teacher" and m["parent"] is None and m["num_classes"] == 7  # read from fc
    assert m["input"]["size"] == [224, 224] and m["input"]["channels"] == 3
    assert tuple(m["input"]["mean"]) == IMAGENET_MEAN and tuple(m["input"]["std"]) == IMAGENET_STD
    src = m["source"]
    assert src["sha256"] == sha256_file(path) and src["path"] == str(path.resolve())
    assert src["format"] == ("safetensors" if fmt == "safetensors" else "torch")
    assert src["layout"] == "torchvision" and src["unwrapped"] == unwrapped and src["input_from"] == "layout"
    assert json.loads((tmp_path / "t" / "manifest.json").read_text())["source"] == src


@pytest.mark.parametrize(
    "arch, kwargs, flags",
    [
        ("vgg11", {"num_classes": 4, "in_channels": 3, "image_size": 32}, {"image_size": 32}),
        ("mobilenet_v2", {"num_classes": 3, "in_channels": 3, "image_size": 224, "width_mult": 0.5},
         {"arch_kwargs": {"width_mult": 0.5}}),
        ("resnet8", {"num_classes": 5, "width": 8}, {"arch_kwargs": {"width": 8}}),
        ("smallcnn", {"num_classes": 3, "in_channels": 3}, {}),  # 3 channels read from the stem
    ],
    ids=["vgg11-small-input", "mobilenet_v2", "resnet8-width8", "smallcnn-rgb"],
)  # fmt: skip
def test_other_zoo_layouts_import_with_identical_logits(tmp_path, assert_no_trace, arch, kwargs, flags):
    source = _source(arch, **kwargs)
    source.set_normalization((0.25,) * source.input_spec.channels, (0.5,) * source.input_spec.channels)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    m = api.import_model(tmp_path / "w.pth", arch, out=tmp_path / "t", mean=[0.25], std=[0.5], **flags)
    _same_logits(tmp_path / "t", source)
    assert m["num_classes"] == kwargs["num_classes"] and m["source"]["input_from"] == "arguments"
    assert m["source"]["layout"] == ("safereuse" if arch in ("resnet8", "smallcnn") else "torchvision")
    assert not assert_no_trace.hooks(load_model(tmp_path / "t").model)


@pytest.fixture(scope="module")
def wrn() -> nn.Module:
    return _source("wrn-28-4", num_classes=10, in_channels=3, image_size=32)


def test_robustbench_wide_resnet_imports_as_raw_pixels(wrn, tmp_path):
    # RobustBench / TRADES: DataParallel keys, TRADES' unused sub_block1 copy, raw [0, 1] pixels
    sd = wrn.state_dict()
    assert {
        "conv1.weight",
        "block1.layer.0.bn1.weight",
        "block1.layer.0.convShortcut.weight",
        "fc.weight",
    } <= set(sd)
    ckpt = {f"module.{k}": v for k, v in sd.items()}
    ckpt.update(
        {f"module.sub_block1.{k[len('block1.') :]}": v for k, v in sd.items() if k.startswith("block1.")}
    )
    torch.save({"state_dict": ckpt}, tmp_path / "Carmon2019Unlabeled.pt")
    m = api.import_model(tmp_path / "Carmon2019Unlabeled.pt", "wrn-28-4", out=tmp_path / "t")
    assert m["source"]["layout"] == "robustbench" and m["source"]["input_from"] == "layout"
    assert m["input"]["mean"] == [0.0] * 3 and m["input"]["std"] == [1.0] * 3
    assert m["input"]["size"] == [32, 32]
    assert any("sub_block1" in n for n in m["source"]["notes"])
    wrn.set_normalization((0.0,) * 3, (1.0,) * 3)
    _same_logits(tmp_path / "t", wrn)


def test_robustbench_normalisation_buffers_become_the_input_spec(wrn, tmp_path):
    # some RobustBench models carry their normalisation as mu / sigma buffers
    sd = dict(wrn.state_dict())
    sd["mu"] = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    sd["sigma"] = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    save_file(sd, str(tmp_path / "w.safetensors"))
    m = api.import_model(tmp_path / "w.safetensors", "wrn-28-4", out=tmp_path / "t")
    assert m["source"]["input_from"] == "checkpoint"
    assert m["input"]["mean"] == pytest.approx(CIFAR_MEAN) and m["input"]["std"] == pytest.approx(CIFAR_STD)
    wrn.set_normalization(tuple(sd["mu"].flatten().tolist()), tuple(sd["sigma"].flatten().tolist()))
    _same_logits(tmp_path / "t", wrn)


def test_robustness_library_checkpoint(r18, tmp_path):
    # MadryLab robustness: {"model": AttackerModel state}, weights twice, normaliser stats beside them
    sd = r18.state_dict()
    inner = {f"module.model.{k}": v for k, v in sd.items()}
    inner.update({f"module.attacker.model.{k}": v.clone() for k, v in sd.items()})
    for pre in ("module.normalizer", "module.attacker.normalize"):
        inner[f"{pre}.new_mean"] = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        inner[f"{pre}.new_std"] = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.save({"model": inner, "epoch": 90, "schedule": None}, tmp_path / "imagenet_l2_3_0.pt")
    m = api.import_model(tmp_path / "imagenet_l2_3_0.pt", "resnet18", out=tmp_path / "t")
    src = m["source"]
    assert src["layout"] == "robustness" and src["unwrapped"] == ["model", "module.", "model."]
    assert src["input_from"] == "checkpoint"
    assert m["input"]["mean"] == pytest.approx(IMAGENET_MEAN)
    r18.set_normalization(
        tuple(torch.tensor(IMAGENET_MEAN).tolist()), tuple(torch.tensor(IMAGENET_STD).tolist())
    )
    _same_logits(tmp_path / "t", r18)
    r18.set_normalization(IMAGENET_MEAN, IMAGENET_STD)


def test_old_checkpoints_without_batchnorm_counters_load(tmp_path):
    source = _source("resnet8", num_classes=3)
    sd = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "w.pth")
    m = api.import_model(tmp_path / "w.pth", "resnet8", out=tmp_path / "t", mean=[0.5], std=[0.5])
    assert any("num_batches_tracked" in n for n in m["source"]["notes"])
    _same_logits(tmp_path / "t", source)


def test_every_zoo_architecture_has_a_layout():
    # a new architecture gets safereuse's layout unless it is added to torchvision's / RobustBench's
    layouts = {}
    for name in MODELS.names():
        with torch.device("meta"):
            layouts[name] = native_layout(create_model(name))
    assert {n for n, lay in layouts.items() if lay == "torchvision"} == {
        "resnet18", "resnet34", "resnet50", "vgg11", "vgg16", "mobilenet_v2"
    }  # fmt: skip
    assert {n for n, lay in layouts.items() if lay == "robustbench"} == {"wrn", "wrn-28-4", "wrn-34-10"}


def test_map_keys_never_strips_a_prefix_the_model_has():
    w = torch.zeros(1)
    assert sorted(map_keys({"module.fc.bias": w}, ["module.fc.bias"]).state) == ["module.fc.bias"]
    assert sorted(map_keys({"model.fc.bias": w, "fc.bias": w}, ["fc.bias"]).state) == [
        "fc.bias",
        "model.fc.bias",
    ]


# -- a pair made with the user's own code ------------------------------------------------------------
class PlainNet(nn.Module):
    """The user's own network: smallcnn's layers under their own class, trained on normalised input."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.fc1, self.fc = nn.Linear(32 * 7 * 7, 64), nn.Linear(64, num_classes)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = nn.functional.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        return self.fc(torch.relu(self.fc1(torch.flatten(x, 1))))


def test_student_finetuned_outside_safereuse_is_audited_from_the_cli(digits_teacher_dir, tmp_path, capsys):
    # the "downloaded" teacher: a bare state dict and the normalisation its card states
    t_art = load_model(digits_teacher_dir)
    mean, std = t_art.model.input_spec.mean, t_art.model.input_spec.std
    torch.save(t_art.model.state_dict(), tmp_path / "teacher.pth")
    stats = [",".join(map(str, mean)), ",".join(map(str, std))]
    code, out, err = run(capsys, "import", "--arch", "smallcnn", "--weights", str(tmp_path / "teacher.pth"),
                         "--mean", stats[0], "--std", stats[1], "--data", "digits", "--classes", "0-4",
                         "--out", str(tmp_path / "T"))  # fmt: skip
    assert code == 0, err
    assert "teacher smallcnn (5 classes)" in out and "test acc" in out and "from arguments" in out
    t_man = json.loads((tmp_path / "T" / "manifest.json").read_text())
    assert t_man["metrics"]["test_acc"] == pytest.approx(t_art.manifest["metrics"]["test_acc"])

    # fine-tuned with plain PyTorch: load the weights, new head, a few SGD steps on normalised digits
    torch.manual_seed(0)
    net = PlainNet(5)
    net.load_state_dict(torch.load(tmp_path / "teacher.pth", weights_only=True))
    net.fc = nn.Linear(64, 5)
    bundle = load_data(DataSpec("digits", classes=[5, 6, 7, 8, 9], train_size=100))
    m_t, s_t = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    x, y = (bundle.train.x - m_t) / s_t, bundle.train.y
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    net.train()
    for step in range(10):
        idx = torch.arange(step * 10, step * 10 + 10) % len(y)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    net.eval()
    torch.save({"model_state_dict": net.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "student.pt")

    code, out, err = run(capsys, "import", "--parent", str(tmp_path / "T"),
                         "--weights", str(tmp_path / "student.pt"),
                         "--data", "digits", "--classes", "5-9", "--out", str(tmp_path / "S"))  # fmt: skip
    assert code == 0, err
    assert out.startswith("student smallcnn (5 classes)") and "(from parent)" in out
    s_man = json.loads((tmp_path / "S" / "manifest.json").read_text())
    assert s_man["role"] == "student" and s_man["parent"]["hash"] == t_man["hash"]
    assert s_man["parent"]["path"] == str(tmp_path / "T") and s_man["parent"]["data"]["classes"] == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert s_man["source"]["unwrapped"] == ["model_state_dict"]
    test_x = bundle.test.x[:16]
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "S").model(test_x), net((test_x - m_t) / s_t))

    code, out, err = run(capsys, "audit", "--teacher", str(tmp_path / "T"), "--student", str(tmp_path / "S"),
                         "--defect", "penultimate", "--max-samples", "32", "--json")  # fmt: skip
    assert code == 0, err
    rep = json.loads(out)
    (row,) = rep["rows"]
    assert row["defect"] == "penultimate" and row["crafted_on"] == "teacher"
    assert rep["teacher"]["hash"] == t_man["hash"] and rep["student"]["hash"] == s_man["hash"]
    assert rep["n_samples"] == 32 and 0 < row["n"] <= 32 and 0 <= row["dir"] <= 100

    # and the imported teacher is a teacher like any other: transfer from it
    code, out, err = run(capsys, "transfer", "--teacher", str(tmp_path / "T"),
                         "--data", "digits", "--classes", "5-9", "--train-size", "50",
                         "--method", "finetune", "-p", "epochs=1", "-q",
                         "--out", str(tmp_path / "S2"))  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "S2" / "manifest.json").read_text())["parent"]["hash"] == t_man["hash"]


# -- bad input ---------------------------------------------------------------------------------------
class _Evil:
    ran = False

    def __reduce__(self):
        return (_mark_ran, ())


def _mark_ran():
    _Evil.ran = True
    return 0


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A resnet8 (5 classes) in several bad and good files."""
    d = tmp_path_factory.mktemp("bad")
    sd = _source("resnet8", num_classes=5).state_dict()
    torch.save(sd, d / "r8.pth")
    torch.save({"args": argparse.Namespace(lr=0.1), "state_dict": sd}, d / "with_args.pth")
    (d / "evil.pth").write_bytes(pickle.dumps({"conv1.weight": _Evil()}, protocol=2))
    (d / "notes.pth").write_text("these are not weights\n")
    (d / "truncated.pth").write_bytes((d / "r8.pth").read_bytes()[:2000])
    save_file({k: v.contiguous() for k, v in sd.items()}, str(d / "r8.safetensors"))
    (d / "truncated.safetensors").write_bytes((d / "r8.safetensors").read_bytes()[:3000])
    torch.save({"epoch": 3, "lr": 0.1}, d / "no_tensors.pth")
    (d / "classes4.txt").write_text("a\nb\nc\nd\n")
    (d / "dup.txt").write_text("a\nb\na\n")
    torch.save(_source("resnet8", num_classes=5, width=8).state_dict(), d / "r8w8.pth")
    api.import_model(d / "r8.pth", "resnet8", out=d / "art", mean=[0.5], std=[0.5])
    return d


R8 = "--arch resnet8 --weights {d}/r8.pth"
BAD = [
    # (name, arguments ({d}: the folder of bad files), words the one line must contain)
    ("missing file", "--arch resnet8 --weights {d}/nope.pth", ["does not exist"]),
    ("not a checkpoint", "--arch resnet8 --weights {d}/notes.pth", ["is not a checkpoint"]),
    ("pickled Namespace", "--arch resnet8 --weights {d}/with_args.pth",
     ["arbitrary unpickling", "argparse.Namespace", "state_dict()"]),
    ("pickle with code", "--arch resnet8 --weights {d}/evil.pth", ["arbitrary unpickling", "refused"]),
    ("truncated torch file", "--arch resnet8 --weights {d}/truncated.pth", ["not a readable PyTorch"]),
    ("truncated safetensors", "--arch resnet8 --weights {d}/truncated.safetensors",
     ["not a valid safetensors"]),
    ("no tensors", "--arch resnet8 --weights {d}/no_tensors.pth", ["no state dict of tensors"]),
    ("an artifact folder", "--arch resnet8 --weights {d}/art", ["is a folder", "already a safereuse"]),
    ("wrong architecture", "--arch smallcnn --weights {d}/r8.pth",
     ["does not fit smallcnn", "missing", "unexpected", "--arch resnet8"]),
    ("wrong depth", "--arch resnet10 --weights {d}/r8.pth", ["missing", "layer4.0", "--arch resnet8"]),
    ("unknown architecture", "--arch resnet9 --weights {d}/r8.pth", ["resnet9"]),
    ("wrong width", "--arch resnet8 --weights {d}/r8w8.pth", ["mis-shaped", "conv1.weight", "width"]),
    ("unknown option", f"{R8} -p widht=8", ["widht", "width"]),
    ("class count", f"{R8} --num-classes 3", ["5-class head", "3"]),
    ("classes file", f"{R8} --classes-file {{d}}/classes4.txt", ["5-class head", "4 classes"]),
    ("repeated class", f"{R8} --classes-file {{d}}/dup.txt", ["appears twice"]),
    ("--classes count", f"{R8} --data digits --classes 0-2", ["5-class head"]),
    ("data of another shape", f"{R8} --input-size 32 --data digits --classes 0-4", ["28", "32"]),
    ("--classes alone", f"{R8} --classes 0-4", ["--data"]),
    ("unknown dataset", f"{R8} --data digitz", ["digitz"]),
    ("channels", f"{R8} --channels 3", ["1-channel", "--channels 1"]),
    ("mean alone", f"{R8} --mean 0.5", ["--std"]),
    ("bad mean", f"{R8} --mean a,b --std 1", ["--mean"]),
    ("mean per channel", f"{R8} --mean 0.1,0.2 --std 1", ["normalisation"]),
    ("no architecture", "--weights {d}/r8.pth", ["--arch"]),
    ("parent not a model", "--parent {d}/nope --weights {d}/r8.pth", ["does not exist"]),
    ("existing --out", f"{R8} --out {{d}}/art", ["already exists"]),
]  # fmt: skip


@pytest.mark.parametrize("args, needles", [(a, n) for _, a, n in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_and_writes_nothing(small, tmp_path, capsys, args, needles):
    argv = [a.format(d=small) for a in args.split()]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    code, out, err = run(capsys, "import", *argv)
    assert code == 2
    assert_one_line_error(code, err, *needles)
    assert list(tmp_path.iterdir()) == []  # no artifact, no temporary folder
    assert not _Evil.ran


def test_read_checkpoint_refuses_code_in_python_too(small):
    with pytest.raises(SafeReuseError, match="arbitrary unpickling"):
        read_checkpoint(small / "evil.pth")
    assert not _Evil.ran
    ck = read_checkpoint(small / "r8.safetensors")
    assert ck.format == "safetensors" and ck.sha256 == sha256_file(small / "r8.safetensors")


# -- Hugging Face encoder folders ---------------------------------------------------------------------
# Tiny random checkpoints of each layout, written with transformers itself (save_pretrained with
# safe_serialization=True) next to a tokenizer built from a tiny vocabulary; imported, they must give
# the mean-pooled features the original model gives on its own tokenizer's ids, from the shared ids.
HF_WORDS = ["the", "movie", "was", "good", "bad", "film", "a", "great", "not", "it", "is", "very", "##s", "."]
HF_SIZE = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32}
HF_SENTENCES = ["the movie was good .", "it is not a very great film", "bad"]
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _wordpiece(specials: list[str], tail: tuple[str, ...] = ()) -> dict[str, int]:
    return {t: i for i, t in enumerate([*specials, *HF_WORDS, *tail])}


def _roberta_tokenizer() -> Any:
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer(add_prefix_space=True)
    text = ["the movie was good", "the film was bad", "it is not a great movie .", "very good films"] * 20
    bpe.train_from_iterator(
        text, vocab_size=300, min_frequency=1, show_progress=False,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )  # fmt: skip
    model = json.loads(bpe._tokenizer.to_str())["model"]
    merges = [tuple(m.split()) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return transformers.RobertaTokenizerFast(vocab=model["vocab"], merges=merges, add_prefix_space=True)


def write_hf_folder(folder: Path, layout: str, seed: int = 0) -> tuple[nn.Module, Any]:
    """A tiny random ``layout`` folder; returns (its encoder, its tokenizer)."""
    import transformers as tf

    torch.manual_seed(seed)
    if layout in ("bert", "minilm"):  # BertForSequenceClassification (bert. prefix) / a bare BertModel
        tok = tf.BertTokenizerFast(vocab=_wordpiece(BERT_SPECIALS))
        cfg = tf.BertConfig(vocab_size=len(tok), **HF_SIZE)
        model = tf.BertForSequenceClassification(cfg) if layout == "bert" else tf.BertModel(cfg)
        enc = model.bert if layout == "bert" else model
    elif layout == "distilbert":
        tok = tf.DistilBertTokenizerFast(vocab=_wordpiece(BERT_SPECIALS))
        cfg = tf.DistilBertConfig(vocab_size=len(tok), dim=16, n_layers=2, n_heads=2, hidden_dim=32)
        model = tf.DistilBertForSequenceClassification(cfg)
        enc = model.distilbert
    elif layout == "mpnet":  # MPNet's specials in front, <mask> at the end, like all-mpnet-base-v2
        tok = tf.MPNetTokenizerFast(vocab=_wordpiece(["<s>", "<pad>", "</s>", "<unk>", "[UNK]"], ("<mask>",)))
        model = tf.MPNetForMaskedLM(tf.MPNetConfig(vocab_size=len(tok), **HF_SIZE))
        enc = model.mpnet
    else:  # roberta: byte-level BPE
        tok = _roberta_tokenizer()
        model = tf.RobertaForMaskedLM(
            tf.RobertaConfig(vocab_size=len(tok), max_position_embeddings=40, **HF_SIZE)
        )
        enc = model.roberta
    model.save_pretrained(str(folder), safe_serialization=True)
    tok.save_pretrained(str(folder))
    return enc.eval(), tok


@torch.no_grad()
def _reference_features(enc: nn.Module, tok: Any, length: int = 16) -> torch.Tensor:
    """Mean-pooled last hidden states of the original model on its own tokenizer's ids."""
    b = tok(HF_SENTENCES, padding="max_length", max_length=length, return_tensors="pt")
    hidden = enc(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
    m = b["attention_mask"].unsqueeze(-1).float()
    return (hidden * m).sum(1) / m.sum(1)


HF_LAYOUTS = {  # layout -> (zoo entry it imports as, source layout recorded)
    "bert": ("minilm", "huggingface-bert"),
    "minilm": ("minilm", "huggingface-bert"),
    "distilbert": ("hf-encoder", "huggingface-distilbert"),
    "mpnet": ("mpnet", "huggingface-mpnet"),
    "roberta": ("hf-encoder", "huggingface-roberta"),
}


@pytest.mark.parametrize("layout", sorted(HF_LAYOUTS))
def test_hf_encoder_folder_imports_with_its_own_tokenizer(tmp_path, layout):
    import shutil

    from safereuse.data.text import default_tokenizer

    folder = tmp_path / layout
    enc, tok = write_hf_folder(folder, layout)
    m = api.import_model(folder, out=tmp_path / "art")  # no --arch: read from config.json
    arch, kind = HF_LAYOUTS[layout]
    assert (m["arch"], m["source"]["layout"], m["source"]["format"]) == (arch, kind, "safetensors")
    assert m["arch_kwargs"]["pretrained"] is False and m["source"]["vocabulary"]["exact"] >= len(HF_WORDS)
    assert m["source"]["sha256"] == sha256_file(folder / "model.safetensors")
    shutil.rmtree(folder)  # the artifact needs nothing of the folder
    model = load_model(tmp_path / "art").model.eval()
    x = default_tokenizer().encode(HF_SENTENCES, 16)  # the ids every text dataset holds
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), _reference_features(enc, tok), rtol=1e-5, atol=1e-6)
        assert model(x).shape == (3, 2)


def test_hf_folder_any_layout_as_hf_encoder_and_the_cli(tmp_path, capsys):
    write_hf_folder(tmp_path / "bert", "bert")
    m = api.import_model(tmp_path / "bert", "hf-encoder", out=tmp_path / "a")
    capsys.readouterr()
    assert m["arch"] == "hf-encoder" and m["arch_kwargs"]["model_type"] == "bert"
    code, out, err = run(capsys, "import", "--weights", str(tmp_path / "bert"), "--out", str(tmp_path / "b"))
    assert code == 0, err
    assert "minilm" in out and "huggingface-bert layout" in out


HF_BAD = [
    ("wrong architecture", "--arch resnet8", ["imports as mpnet", "--arch mpnet"]),
    ("pickled weights only", "", ["pytorch_model.bin", "never unpickles", "safe_serialization=True"]),
    ("no tokenizer", "", ["no tokenizer files", "save_pretrained"]),
    ("another model type", "", ["'gpt2'", "not a supported encoder"]),
]


@pytest.mark.parametrize("name, args, needles", HF_BAD, ids=[b[0] for b in HF_BAD])
def test_bad_hf_folder_is_one_line_and_writes_nothing(tmp_path, capsys, name, args, needles):
    folder = tmp_path / "in" / "mpnet"
    write_hf_folder(folder, "mpnet")
    if "pickled" in name:
        (folder / "model.safetensors").unlink()
        torch.save(
            {"mpnet.embeddings.word_embeddings.weight": torch.zeros(2, 2)}, folder / "pytorch_model.bin"
        )
    if "tokenizer" in name:
        for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
            (folder / f).unlink(missing_ok=True)
    if "model type" in name:
        (folder / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    capsys.readouterr()  # transformers' own progress output while writing the folder
    code, _, err = run(
        capsys, "import", "--weights", str(folder), "--out", str(tmp_path / "out"), *args.split()
    )
    assert code == 2
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "out").exists()

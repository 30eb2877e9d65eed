"""Artifacts: round trip, atomic writes, refusal of pickles, truncated and mismatched checkpoints."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from safereuse.artifacts import MODEL_FILE, load_model, read_state_file, save_model
from safereuse.errors import SafeReuseError
from safereuse.models import create_model


def _model(n: int = 3):
    torch.manual_seed(0)
    m = create_model("resnet8", num_classes=n, width=4)
    m.set_normalization((0.3,), (0.4,))
    return m


def test_round_trip_preserves_outputs_manifest_and_extras(tmp_path):
    m = _model().eval()
    extras = {"mask.conv1": torch.ones(4, 1, 3, 3)}
    man = save_model(m, tmp_path / "a", {"role": "teacher", "class_names": ["a", "b", "c"]}, extras)
    art = load_model(tmp_path / "a")
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(m(x), art.model(x))
    assert art.manifest["hash"] == man["hash"] and len(man["hash"]) == 64
    assert art.manifest["input"]["mean"] == [0.3] and art.model.input_spec.std == (0.4,)
    assert torch.equal(art.extras["mask.conv1"], extras["mask.conv1"])
    assert art.manifest["arch"] == "resnet8" and art.manifest["arch_kwargs"]["width"] == 4
    assert sorted(os.listdir(tmp_path)) == ["a"]  # no temp leftovers


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    save_model(_model(), tmp_path / "a")
    with pytest.raises(SafeReuseError, match="already exists"):
        save_model(_model(), tmp_path / "a")
    save_model(_model(4), tmp_path / "a", overwrite=True)
    assert load_model(tmp_path / "a").model.num_classes == 4
    assert sorted(os.listdir(tmp_path)) == ["a"]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import safereuse.artifacts as A

    def broken(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(A, "sha256_file", broken)
    with pytest.raises(OSError):
        save_model(_model(), tmp_path / "a")
    assert os.listdir(tmp_path) == []


def test_truncated_and_garbage_weights_are_refused(tmp_path):
    save_model(_model(), tmp_path / "a")
    f = tmp_path / "a" / MODEL_FILE
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(SafeReuseError, match="not a valid safetensors"):
        load_model(tmp_path / "a")
    f.write_bytes(b"hello, this is not a tensor file at all")
    with pytest.raises(SafeReuseError, match="not a valid safetensors"):
        load_model(tmp_path / "a")
    f.write_bytes(b"")
    with pytest.raises(SafeReuseError, match="truncated"):
        load_model(tmp_path / "a")


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


def test_malicious_pickle_is_never_executed(tmp_path):
    _Evil.marker = str(tmp_path / "pwned")
    save_model(_model(), tmp_path / "a")
    torch.save({"conv1.weight": _Evil()}, tmp_path / "a" / MODEL_FILE)
    with pytest.raises(SafeReuseError, match="pickle"):
        load_model(tmp_path / "a")
    assert not (tmp_path / "pwned").exists()


def test_plain_torch_state_dict_loads_with_weights_only(tmp_path):
    m = _model()
    torch.save(m.state_dict(), tmp_path / "w.pth")
    state = read_state_file(tmp_path / "w.pth")
    fresh = create_model("resnet8", num_classes=3, width=4)
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(fresh.conv1.weight, m.conv1.weight)


def test_checkpoint_that_does_not_fit_the_architecture(tmp_path):
    save_model(_model(3), tmp_path / "a")
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    man["arch_kwargs"]["num_classes"] = 7
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(SafeReuseError, match=r"fc.weight has shape \(3, 16\), expected \(7, 16\)"):
        load_model(tmp_path / "a")


def test_missing_and_corrupt_manifest(tmp_path):
    with pytest.raises(SafeReuseError, match="does not exist"):
        load_model(tmp_path / "nope")
    save_model(_model(), tmp_path / "a")
    (tmp_path / "a" / "manifest.json").write_text("{not json")
    with pytest.raises(SafeReuseError, match="corrupt"):
        load_model(tmp_path / "a")
    shutil.rmtree(tmp_path / "a")
    (tmp_path / "a").mkdir()
    with pytest.raises(SafeReuseError, match="no manifest.json"):
        load_model(tmp_path / "a")


def test_tampered_weights_fail_the_hash_check(tmp_path):
    from safetensors.torch import load_file, save_file

    save_model(_model(), tmp_path / "a")
    f = tmp_path / "a" / MODEL_FILE
    state = load_file(str(f))
    state["fc.bias"] = state["fc.bias"] + 1
    save_file(state, str(f))
    with pytest.raises(SafeReuseError, match="hash"):
        load_model(tmp_path / "a")


def test_torchvision_keyed_file_loads_into_zoo_resnet18(tmp_path):
    # A torchvision resnet18 .pth is a plain state_dict with these keys; ours must load it strictly.
    m = create_model("resnet18", num_classes=1000, in_channels=3, image_size=224)
    torch.save(
        {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in m.state_dict().items()},
        tmp_path / "resnet18.pth",
    )
    fresh = create_model("resnet18", num_classes=1000, in_channels=3, image_size=224)
    fresh.load_state_dict(read_state_file(Path(tmp_path / "resnet18.pth")), strict=True)


# -- Manifest: the one way a manifest is written; the parent record built in one place ---------------
def test_manifest_type_writes_the_core_keys_and_keeps_extra_blocks(tmp_path):
    from safereuse.artifacts import Manifest, parent_record

    save_model(_model(), tmp_path / "t", Manifest("teacher", data={"name": "digits"}, seed=1))
    parent = load_model(tmp_path / "t")
    m = Manifest("student", data={"name": "digits"}, parent=parent, extra={"info": {"k": 1}})
    written = save_model(_model(), tmp_path / "s", m)
    on_disk = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert set(Manifest.CORE) <= set(on_disk) and on_disk["info"] == {"k": 1}
    assert on_disk["parent"] == parent_record(parent) == written["parent"]
    assert on_disk["parent"] == {"hash": parent.hash, "path": str(tmp_path / "t"), "arch": "resnet8",
                                 "data": {"name": "digits"}, "backdoor": False}  # fmt: skip
    with pytest.raises(ValueError, match="repeats the field"):
        Manifest("student", extra={"metrics": {}}).to_dict()


def test_plain_dict_manifests_and_old_artifacts_still_load(tmp_path):
    # a manifest written before the Manifest type (a pruned model's parent had hash/path/arch only)
    old = {"role": "pruned", "parent": {"hash": "x", "path": "p", "arch": "resnet8"}, "pruning": {"a": 1}}
    save_model(_model(), tmp_path / "a", old)
    art = load_model(tmp_path / "a")
    assert art.manifest["parent"] == old["parent"] and art.manifest["pruning"] == {"a": 1}
    again = save_model(art.model, tmp_path / "b", art.manifest)  # a loaded manifest saves as it was
    assert {k: again[k] for k in old} == old

"""Model artifacts: a directory with ``model.safetensors`` + ``manifest.json`` (+ ``extras.safetensors``).

A derived model is a *recipe*: its manifest names the architecture, the classes, the input spec,
the parent teacher's hash, the method and its resolved configuration, the data spec, the seed and
the metrics. Tensors never travel as pickles. A directory is written under a temporary name and
renamed into place, so a crash never leaves a half-written artifact.

A *materialised* model (:func:`safereuse.slicing.materialize`: the zoo architecture with channels
removed) is saved with its pruning record in the manifest (``"pruned": {"format":
"channels-removed/1", "steps": [[layer, [removed output channels]], ...]}``); :func:`load_model` builds
the architecture, replays the record with Torch-Pruning, then loads the weights with the usual
strict shape check.

Example:
    >>> import tempfile, pathlib
    >>> from safereuse.models import create_model
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "m"
    >>> _ = save_model(create_model("smallcnn", 3), out, {"classes": ["a", "b", "c"]})
    >>> load_model(out).model.num_classes
    3
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .errors import SafeReuseError
from .models import InputSpec, ModelInfo, ReusableModel, create_model, untrained_kwargs
from .models.rebuild import PRUNED_ATTR, prune_channels
from .models.stacked import stack_from_extras
from .utils import sha256_file

MODEL_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
EXTRAS_FILE = "extras.safetensors"
FORMAT = "safereuse-model/1"
PRUNED_FORMAT = "channels-removed/1"


@dataclass
class Artifact:
    """A loaded model directory."""

    path: Path
    model: ReusableModel
    manifest: dict[str, Any]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        return str(self.manifest.get("hash", ""))


def parent_record(parent: Artifact) -> dict[str, Any]:
    """How a derived model's manifest names the model it was made from (``manifest["parent"]``).

    The one place this record is built: students, imported students, re-engineered, pruned and
    protected models all name their parent the same way.

    Args:
        parent: the loaded parent artifact.

    Returns:
        ``{"hash", "path", "arch", "data", "backdoor"}``; ``backdoor`` says whether the parent carries
        a planted backdoor.

    Example:
        >>> import tempfile, pathlib
        >>> from safereuse.models import create_model
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "t"
        >>> _ = save_model(create_model("smallcnn", 3), out, Manifest("teacher", data={"name": "digits"}))
        >>> rec = parent_record(load_model(out))
        >>> sorted(rec), rec["arch"], rec["backdoor"]
        (['arch', 'backdoor', 'data', 'hash', 'path'], 'smallcnn', False)
    """
    return {
        "hash": parent.hash,
        "path": str(parent.path),
        "arch": parent.manifest.get("arch"),
        "data": parent.manifest.get("data"),
        "backdoor": bool(parent.manifest.get("backdoor")),
    }


@dataclass
class Manifest:
    """What a model's ``manifest.json`` records beyond its architecture: the only way one is written.

    :func:`save_model` adds the structural part (format, version, architecture, input spec, pruning
    record, weights hash, extras list) to :meth:`to_dict`. Readers get plain dicts
    (:attr:`Artifact.manifest`); the keys below are those of every manifest written so far.

    Args:
        role: ``teacher``, ``student``, ``reengineered``, ``pruned`` or ``protected`` (None: unknown).
        data: the model's task, a :class:`~safereuse.data.DataSpec` dict.
        class_names: class names in label order.
        seed: the seed it was made with (None: not made here, e.g. imported).
        parent: the model it was derived from; pass the loaded :class:`Artifact` (recorded with
            :func:`parent_record`) or None for a teacher.
        method: ``{"name", "config"}`` of the method that made it.
        fit_result: the training record (:meth:`~safereuse.train.FitResult.to_dict`), or None.
        backdoor: the plant record of a backdoor planted in it, or None.
        metrics: its measured numbers.
        extra: the role's own blocks (``source``, ``target_head``, ``search``, ``pruning``,
            ``protection``, ``adversarial``, ``info`` ...), written as top-level keys.

    Example:
        >>> m = Manifest("student", data={"name": "digits"}, metrics={"test_acc": 0.9},
        ...              extra={"info": {"kept": 3}})
        >>> d = m.to_dict()
        >>> d["role"], d["parent"], d["info"], Manifest.from_dict(d) == m
        ('student', None, {'kept': 3}, True)
    """

    role: str | None = None
    data: dict[str, Any] | None = None
    class_names: list[str] | None = None
    seed: int | None = None
    parent: Artifact | dict[str, Any] | None = None
    method: dict[str, Any] | None = None
    fit_result: dict[str, Any] | None = None
    backdoor: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    #: The keys :meth:`to_dict` always writes (in this order), before :attr:`extra`.
    CORE = ("role", "data", "class_names", "seed", "parent", "method", "fit_result", "backdoor", "metrics")

    def to_dict(self) -> dict[str, Any]:
        """The manifest fields as JSON-able values (the parent as its :func:`parent_record`)."""
        parent = parent_record(self.parent) if isinstance(self.parent, Artifact) else self.parent
        core = {
            "role": self.role,
            "data": self.data,
            "class_names": list(self.class_names) if self.class_names is not None else None,
            "seed": self.seed,
            "parent": parent,
            "method": self.method,
            "fit_result": self.fit_result,
            "backdoor": self.backdoor,
            "metrics": self.metrics,
        }
        clash = sorted(set(core) & set(self.extra))
        if clash:
            raise ValueError(f"Manifest.extra repeats the field {clash[0]!r}; set the field instead")
        return {**core, **self.extra}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        """A manifest from a plain dict (e.g. one loaded, or written by older code); unknown keys go
        to :attr:`extra`."""
        d = dict(d)
        core = {k: d.pop(k) for k in cls.CORE if k in d}
        if core.get("metrics") is None:
            core["metrics"] = {}
        return cls(**core, extra=d)


def _tensors_of(model: ReusableModel) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage; clone so tied or viewed tensors save cleanly
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def _pruned_entry(model: ReusableModel) -> dict[str, Any]:
    # a materialised model (safereuse.slicing.materialize) is the zoo architecture minus channels: the
    # manifest records which, so load_model can rebuild the smaller architecture before the weights
    record = getattr(model, PRUNED_ATTR, None)
    if not record:
        return {}
    return {"pruned": {"format": PRUNED_FORMAT, "steps": [[name, list(idxs)] for name, idxs in record]}}


def _rebuild_pruned(model: ReusableModel, entry: Any, spec: InputSpec, mfile: Path) -> None:
    if not isinstance(entry, dict) or entry.get("format") != PRUNED_FORMAT or "steps" not in entry:
        raise SafeReuseError(
            f"{mfile} has a pruned record this version cannot read (expected format {PRUNED_FORMAT})",
            fix="re-create the model",
        )
    example = torch.zeros(1, spec.channels, *spec.size)
    try:
        prune_channels(model, entry["steps"], example)
    except SafeReuseError as exc:
        raise SafeReuseError(f"{mfile}: {exc.problem}", fix=exc.fix) from None


def save_model(
    model: ReusableModel,
    out: str | Path,
    manifest: Manifest | dict[str, Any] | None = None,
    extras: dict[str, torch.Tensor] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``model`` to the directory ``out`` atomically.

    Args:
        model: a model built by :func:`safereuse.models.create_model` (its ``info`` says how to rebuild it).
        out: target directory; must not exist unless ``overwrite``.
        manifest: the :class:`Manifest` (a plain dict is read with :meth:`Manifest.from_dict`).
        extras: named tensors stored beside the weights (masks, triggers, slices).
        overwrite: replace an existing directory.

    Returns:
        The manifest as written (with ``hash`` = SHA-256 of ``model.safetensors``).
    """
    out = Path(out)
    if not isinstance(manifest, Manifest):
        manifest = Manifest.from_dict(manifest or {})
    if model.info is None:
        raise SafeReuseError(
            f"{type(model).__name__} has no architecture record", fix="build it with create_model()"
        )
    if out.exists() and not overwrite:
        raise SafeReuseError(f"output directory {out} already exists", fix="choose a new --out or delete it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the artifact should get normal permissions
    try:
        save_file(_tensors_of(model), str(tmp / MODEL_FILE))
        if extras:
            save_file(
                {k: v.detach().cpu().contiguous().clone() for k, v in extras.items()}, str(tmp / EXTRAS_FILE)
            )
        full = {
            "format": FORMAT,
            "safereuse_version": __version__,
            "arch": model.info.arch,
            "arch_kwargs": model.info.kwargs,
            "num_classes": model.num_classes,
            "input": model.input_spec.to_dict(),
            **manifest.to_dict(),
            **_pruned_entry(model),
            "hash": sha256_file(tmp / MODEL_FILE),
            "extras": sorted(extras) if extras else [],
        }
        if "pruned" not in _pruned_entry(model):
            full.pop("pruned", None)  # a record copied from another manifest must not reshape this model
        (tmp / MANIFEST_FILE).write_text(json.dumps(full, indent=2, sort_keys=True, default=str) + "\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return full


FIX_WEIGHTS_ONLY = (
    "where it was made, save only the weights: torch.save(model.state_dict(), 'weights.pth'), "
    "or safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')"
)


def load_torch_file(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: plain tensors and values only.

    A pickle that refers to code is refused (never executed) with a one-line error naming what it
    wanted; any other failure to read is one line too.

    Raises:
        SafeReuseError: the file needs arbitrary unpickling, or is not a readable torch.save file.
    """
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses anyway
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"it refers to {found.group(1)}" if found else "it holds more than tensors and plain values"
        raise SafeReuseError(
            f"{path} needs arbitrary unpickling to load ({what}); unpickling can run code, so it is refused",
            fix=FIX_WEIGHTS_ONLY,
        ) from None
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/EOFError/... for the same problem
        why = " ".join(str(exc).split())[:80]
        raise SafeReuseError(
            f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {why})",
            fix="re-download it, or check that it is the weights file",
        ) from None


def read_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights from a ``.safetensors`` file or a PyTorch ``.pth`` (with ``weights_only=True``).

    A pickle that needs code to load is refused, never executed.
    """
    path = Path(path)
    if not path.is_file():
        raise SafeReuseError(f"{path} does not exist", fix="check the path")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if len(head) < 8:
        raise SafeReuseError(f"{path} is truncated or empty", fix="re-create or re-download it")
    is_torch = head[:2] in (b"PK", b"\x80\x02") or head[:1] == b"\x80"
    if is_torch:
        obj = load_torch_file(path)
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise SafeReuseError(
                f"{path} does not hold a state_dict of tensors", fix="save model.state_dict()"
            )
        return obj
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SafeReuseError(
            f"{path} is not a valid safetensors file ({' '.join(str(exc).split())[:80]})",
            fix="re-create or re-download it",
        ) from None


def load_state(model: ReusableModel, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``load_state_dict(strict=True)`` with a one-line error on missing, extra or mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shaped = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    arch = model.info.arch if model.info else type(model).__name__
    fix = "use the architecture and class count the checkpoint was trained with"
    if shaped:
        k = shaped[0]
        raise SafeReuseError(
            f"{source} does not fit {arch}: {k} has shape {tuple(state[k].shape)}, "
            f"expected {tuple(own[k].shape)} ({len(shaped)} mismatched)",
            fix=fix,
        )
    if missing or extra:
        raise SafeReuseError(
            f"{source} does not fit {arch}: {len(missing)} missing keys (e.g. {missing[:1]}), "
            f"{len(extra)} unexpected (e.g. {extra[:1]})",
            fix=fix,
        )
    model.load_state_dict(state, strict=True)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Artifact:
    """Load a model directory written by :func:`save_model`.

    Args:
        path: the directory.
        device: where to put the model.

    Returns:
        An :class:`Artifact` with the model (eval mode), manifest and extras.
    """
    path = Path(path)
    if not path.is_dir():
        if path.is_file():
            raise SafeReuseError(f"{path} is a file, not a model directory", fix="pass the directory")
        raise SafeReuseError(f"model directory {path} does not exist", fix="check the path")
    mfile = path / MANIFEST_FILE
    if not mfile.is_file():
        raise SafeReuseError(f"{path} has no {MANIFEST_FILE}", fix="pass a directory written by safereuse")
    try:
        manifest = json.loads(mfile.read_text())
        arch, kwargs, spec = (
            manifest["arch"],
            dict(manifest["arch_kwargs"]),
            InputSpec.from_dict(manifest["input"]),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise SafeReuseError(
            f"{mfile} is corrupt ({type(exc).__name__}: {exc})", fix="re-create the model"
        ) from None
    state = read_state_file(path / MODEL_FILE)
    # the stored weights replace whatever the factory loads: never read published ones (mpnet's 438 MB)
    model = create_model(arch, **untrained_kwargs(ModelInfo(arch, kwargs)))
    model.set_normalization(spec.mean, spec.std)
    if "pruned" in manifest:
        _rebuild_pruned(model, manifest["pruned"], spec, mfile)
    load_state(model, state, str(path / MODEL_FILE))
    expected = manifest.get("hash")
    if expected and sha256_file(path / MODEL_FILE) != expected:
        raise SafeReuseError(
            f"{path / MODEL_FILE} does not match its manifest hash", fix="re-create the model"
        )
    extras = read_state_file(path / EXTRAS_FILE) if (path / EXTRAS_FILE).is_file() else {}
    model.info = ModelInfo(arch, kwargs)
    if manifest.get("target_head"):
        # SeaM's re-engineered model (safereuse reengineer): the stored model under a stacked head
        model = stack_from_extras(model, extras, manifest["target_head"])
    model.to(device).eval()
    return Artifact(path, model, manifest, extras)

"""Turn a checkpoint a user already has into a model behind the safereuse contract.

``safereuse import`` (:func:`safereuse.api.import_model`) reads the weights with this module
(:func:`import_checkpoint`), then writes an artifact. Three steps, each with a one-line error when
the file does not fit:

1. **Read** (:func:`read_checkpoint`): ``.safetensors``, or a PyTorch ``.pth`` / ``.pt`` / ``.bin``
   loaded with ``torch.load(weights_only=True)`` only — a pickle that needs code to load (a pickled
   ``argparse.Namespace``, a whole pickled model, anything with a ``__reduce__``) is refused, never run.
   Training checkpoints are unwrapped: ``{"state_dict": ...}``, ``{"model": ...}``, ``{"net": ...}``,
   ``{"model_state_dict": ...}`` (nested too); the file's format is told by its first bytes, not its name.
2. **Map keys** (:func:`map_keys`) to the zoo's names. The zoo already uses the public layouts:

   - *torchvision*: ``resnet18/34/50``, ``vgg11/16`` (= ``vgg11_bn`` / ``vgg16_bn``), ``mobilenet_v2``;
   - *RobustBench* / TRADES / Madry et al.'s WideResNet: ``wrn-28-4``, ``wrn-34-10`` (``conv1.weight``,
     ``block1.layer.0.bn1.weight`` … ``convShortcut.weight``, ``bn1.*``, ``fc.*``). TRADES' unused
     ``sub_block1.*`` is dropped; RobustBench's ``mu`` / ``sigma`` normalisation buffers become the
     model's input normalisation;
   - the MadryLab *robustness* library (``module.model.*`` weights, a duplicate ``module.attacker.model.*``
     copy and ``module.normalizer.new_mean`` / ``new_std``): the copy is dropped, the normaliser becomes the
     input normalisation;
   - *safereuse*'s own (the other zoo models; an artifact's ``model.safetensors``).

   Prefixes of wrappers are stripped: ``module.`` (``DataParallel`` / ``DistributedDataParallel``),
   ``_orig_mod.`` (``torch.compile``), and ``model.`` when every key has it (Lightning, robustness).
   BatchNorm's ``num_batches_tracked`` counters, which checkpoints older than PyTorch 0.4.1 lack, are
   filled with 0 (they do not change the outputs).
3. **Build** (:func:`import_weights`): architecture options are read from the weights where they show
   (classes from the head, channels from the stem), the input normalisation comes from, in order, the
   caller, the checkpoint, the caller's default (e.g. the parent teacher's), the layout's default
   (ImageNet statistics for torchvision's layouts on RGB input, raw ``[0, 1]`` pixels for RobustBench's,
   the architecture's own otherwise). Missing, unexpected or mis-shaped keys give one line naming the
   first few, and the architecture the keys *do* fit when one in the zoo does.

A **Hugging Face encoder folder** (``config.json``, ``model.safetensors``, tokenizer files; BERT,
RoBERTa, MPNet, MiniLM or DistilBERT) imports as a text model instead (:func:`import_hf_folder`): its
vocabulary is aligned, with its own tokenizer, to the one the text datasets are tokenised with.

Example:
    >>> import tempfile, pathlib, torch
    >>> from safereuse.models import create_model
    >>> src = create_model("smallcnn", num_classes=3)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "ckpt.pth"
    >>> torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    >>> imp = import_weights(path, "smallcnn")
    >>> imp.model.num_classes, imp.source["format"], imp.source["unwrapped"]
    (3, 'torch', ['state_dict', 'module.'])
    >>> x = torch.rand(2, 1, 28, 28)
    >>> bool(torch.equal(imp.model.eval()(x), src.eval()(x)))
    True
"""

from __future__ import annotations

import inspect
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .artifacts import Artifact, Manifest, load_torch_file
from .data import DATASETS, DataBundle, DataSpec
from .errors import SafeReuseError
from .models import MODELS, ReusableModel, create_model
from .models.hf_encoder import build_from_folder
from .models.wide_resnet import WideResNet
from .params import validate_params
from .utils import sha256_file

#: Suffixes ``safereuse import`` documents; the format itself is recognised from the file's content.
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")

#: Keys under which training scripts nest the state dict, tried in this order.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")

#: Prefixes that wrappers put in front of every key (DataParallel, torch.compile).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")

#: Zoo architectures whose keys and shapes equal torchvision's (``vgg*`` are the ``*_bn`` variants).
TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "vgg11", "vgg16", "mobilenet_v2")

#: Options ``import_weights`` sets itself; the rest of a factory's parameters go through ``arch_kwargs``.
SHAPE_OPTIONS = ("num_classes", "in_channels", "image_size")


@dataclass
class Checkpoint:
    """A checkpoint file read without running code.

    Attributes:
        path: the file.
        state: its tensors by key, after unwrapping (keys not yet mapped).
        format: ``safetensors`` or ``torch`` (a ``torch.save`` file, zip or legacy).
        sha256: SHA-256 of the file.
        unwrapped: the wrapper keys that were opened, in order (e.g. ``["state_dict"]``).
    """

    path: Path
    state: dict[str, torch.Tensor]
    format: str
    sha256: str
    unwrapped: list[str] = field(default_factory=list)


@dataclass
class Mapped:
    """A state dict renamed to the zoo's keys (see :func:`map_keys`).

    Attributes:
        state: tensors under the zoo's key names.
        layout: ``torchvision``, ``robustbench``, ``robustness`` or ``safereuse``.
        normalization: ``(mean, std)`` found in the checkpoint, or None.
        unwrapped: prefixes stripped (``module.``, ``model.`` ...).
        notes: what else was changed (dropped keys, filled counters), for the manifest.
    """

    state: dict[str, torch.Tensor]
    layout: str
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    unwrapped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Imported:
    """A model built from a checkpoint, and where it came from.

    Attributes:
        model: the contract model (``info`` set, eval mode, on the CPU).
        source: ``{path, sha256, format, layout, unwrapped, notes, input_from}`` for the manifest;
            ``input_from`` says where the normalisation came from (``arguments``, ``checkpoint``,
            the default given, e.g. ``parent``, or ``layout``).
    """

    model: ReusableModel
    source: dict[str, Any]
    class_names: list[str] | None = None


# -- reading ---------------------------------------------------------------------------------------
def _sniff(path: Path) -> str | None:
    """``safetensors``, ``torch`` or None, from the first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # a zip (torch >= 1.6) or a pickle (legacy)
        return "torch"
    if len(head) == 9:
        (n,) = struct.unpack("<Q", head[:8])
        # an 8-byte header length, then the JSON header; a length past the end is a truncated file
        if n > 0 and head[8:9] == b"{":
            return "safetensors"
    return None


def unwrap_state(obj: Any, where: str = "the checkpoint") -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state dict inside a training checkpoint, and the wrapper keys opened to reach it.

    Args:
        obj: what ``torch.load`` returned.
        where: the file, for messages.

    Returns:
        ``(state, unwrapped)``.

    Raises:
        SafeReuseError: no dict of tensors inside.

    Example:
        >>> w = torch.zeros(2)
        >>> unwrap_state({"epoch": 3, "model": {"net": {"fc.weight": w}}})[1]
        ['model', 'net']
    """
    opened: list[str] = []
    while isinstance(obj, dict) and not (obj and all(isinstance(v, torch.Tensor) for v in obj.values())):
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if key is None or len(opened) > 4:
            break
        obj, opened = obj[key], [*opened, key]
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        top = sorted(map(str, obj))[:4] if isinstance(obj, dict) else []
        found = f"keys {top}" if top else f"a {type(obj).__name__}"
        raise SafeReuseError(
            f"{where} holds no state dict of tensors (found {found})",
            fix="save model.state_dict(), alone or under 'state_dict' / 'model'",
        )
    return dict(obj), opened


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a ``.safetensors`` file or a ``torch.save`` file (``weights_only=True``), unwrapped.

    Args:
        path: the file.

    Returns:
        The :class:`Checkpoint`.

    Raises:
        SafeReuseError: missing file, a folder, neither format, a pickle that needs code, a corrupt
            file, no tensors inside.
    """
    path = Path(path)
    if path.is_dir():
        inside = path / "model.safetensors"
        fix = (
            "it is already a safereuse model: pass the folder to --teacher / --student"
            if (path / "manifest.json").is_file() and inside.is_file()
            else "pass the weights file itself"
        )
        raise SafeReuseError(f"{path} is a folder, not a weights file", fix=fix)
    if not path.is_file():
        raise SafeReuseError(f"weights file {path} does not exist", fix="check the path")
    fmt = _sniff(path)
    if fmt is None:
        raise SafeReuseError(
            f"{path} is not a checkpoint (neither safetensors nor a torch.save file)",
            fix=f"pass the weights file ({', '.join(CHECKPOINT_SUFFIXES)})",
        )
    if fmt == "torch":
        state, opened = unwrap_state(load_torch_file(path), str(path))
    else:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state, opened = load_file(str(path)), []
        except (SafetensorError, OSError, ValueError) as exc:
            raise SafeReuseError(
                f"{path} is not a valid safetensors file ({' '.join(str(exc).split())[:80]})",
                fix="re-download it",
            ) from None
        if not state:
            raise SafeReuseError(f"{path} holds no tensors", fix="pass the model's weights file")
    return Checkpoint(path, state, fmt, sha256_file(path), opened)


# -- key layouts -----------------------------------------------------------------------------------
def native_layout(model: ReusableModel) -> str:
    """The public key layout a zoo model follows: ``torchvision``, ``robustbench`` or ``safereuse``.

    Example:
        >>> from safereuse.models import create_model
        >>> native_layout(create_model("resnet18")), native_layout(create_model("resnet8"))
        ('torchvision', 'safereuse')
    """
    if isinstance(model, WideResNet):
        return "robustbench"
    arch = model.info.arch if model.info is not None else ""
    return "torchvision" if arch in TORCHVISION_ARCHS else "safereuse"


def _stats(t: torch.Tensor) -> tuple[float, ...]:
    return tuple(float(v) for v in t.detach().float().flatten())


def map_keys(state: dict[str, torch.Tensor], target: Collection[str], native: str = "safereuse") -> Mapped:
    """Rename a checkpoint's keys to a zoo model's (see the module docstring for the layouts).

    Args:
        state: the unwrapped state dict.
        target: the zoo model's state-dict keys (prefixes it has itself are never stripped).
        native: the model's own layout name (recorded when no other layout is recognised).

    Returns:
        The :class:`Mapped` state.

    Example:
        >>> w = torch.zeros(1)
        >>> m = map_keys({"module.model.fc.bias": w, "module.attacker.model.fc.bias": w,
        ...               "module.normalizer.new_mean": torch.full((3, 1, 1), 0.5),
        ...               "module.normalizer.new_std": torch.ones(3, 1, 1)}, ["fc.bias"])
        >>> sorted(m.state), m.layout, m.normalization, m.unwrapped
        (['fc.bias'], 'robustness', ((0.5, 0.5, 0.5), (1.0, 1.0, 1.0)), ['module.', 'model.'])
    """
    target = set(target)
    out = dict(state)
    unwrapped: list[str] = []
    notes: list[str] = []
    layout = native
    norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def strip(prefix: str) -> None:
        nonlocal out
        if out and all(k.startswith(prefix) for k in out) and not any(k.startswith(prefix) for k in target):
            out = {k[len(prefix) :]: v for k, v in out.items()}
            unwrapped.append(prefix)

    for _ in range(3):  # DataParallel around a compiled model around ..., in any order
        for p in WRAPPER_PREFIXES:
            strip(p)
    if any(k.startswith(("attacker.", "normalizer.")) for k in out):
        layout = "robustness"  # MadryLab's AttackerModel: model.*, attacker.model.* (a copy), normalizer.*
        mean, std = out.get("normalizer.new_mean"), out.get("normalizer.new_std")
        if mean is not None and std is not None:
            norm = (_stats(mean), _stats(std))
        dropped = [k for k in out if k.startswith(("attacker.", "normalizer."))]
        out = {k: v for k, v in out.items() if k not in set(dropped)}
        notes.append(f"dropped {len(dropped)} attacker/normalizer keys")
    strip("model.")
    sub = [k for k in out if k.startswith("sub_block1.") and k not in target]
    if sub:  # TRADES' WideResNet builds an unused copy of block1
        out = {k: v for k, v in out.items() if k not in set(sub)}
        notes.append(f"dropped {len(sub)} unused sub_block1 keys")
        layout = "robustbench"
    for m_key, s_key in (("mu", "sigma"), ("mean", "std")):  # RobustBench's normalisation buffers
        if m_key in out and s_key in out and m_key not in target:
            norm = (_stats(out.pop(m_key)), _stats(out.pop(s_key)))
            layout = "robustbench" if layout == native else layout
            notes.append(f"input normalisation from the checkpoint's {m_key}/{s_key}")
    counters = [k for k in target if k.endswith(".num_batches_tracked") and k not in out]
    if counters and f"{counters[0].rsplit('.', 1)[0]}.running_mean" in out:
        for k in counters:  # saved before PyTorch 0.4.1; a counter never changes eval outputs
            out[k] = torch.tensor(0, dtype=torch.long)
        notes.append(f"filled {len(counters)} missing BatchNorm num_batches_tracked counters with 0")
    return Mapped(out, layout, norm, unwrapped, notes)


def _meta_model(arch: str, kwargs: dict[str, Any]) -> ReusableModel:
    """The model built on the meta device: names and shapes only (no memory, no RNG)."""
    with torch.device("meta"):
        return create_model(arch, **kwargs)


def fitting_archs(keys: Collection[str], exclude: str = "") -> list[str]:
    """Zoo architectures whose state-dict key *names* (default options) equal ``keys``.

    Example:
        >>> from safereuse.models import create_model
        >>> fitting_archs(create_model("resnet18").state_dict())
        ['resnet18']
    """
    keys = set(keys)
    hits = []
    for name in MODELS.names():
        if name == exclude:
            continue
        try:
            state = _meta_model(name, {}).state_dict()
        except Exception:  # noqa: BLE001 - an architecture that cannot be built by default names nothing
            continue
        if set(state) == keys:
            hits.append(name)
    return hits


def _first(items: Sequence[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (", …" if len(items) > n else "")


def check_fits(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], arch: str, where: str
) -> None:
    """Refuse a state dict whose keys or shapes differ from the model's, naming the first few.

    Raises:
        SafeReuseError: with the architecture the keys fit when one in the zoo does.
    """
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    shaped = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if not (missing or extra or shaped):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_first(missing)})")
    if extra:
        parts.append(f"{len(extra)} unexpected ({_first(extra)})")
    if shaped:
        k = shaped[0]
        parts.append(
            f"{len(shaped)} mis-shaped ({k}: {tuple(state[k].shape)} in the file, "
            f"{tuple(expected[k].shape)} in {arch})"
        )
    if missing or extra:
        others = fitting_archs(state, exclude=arch)
        fix = (
            f"the keys are those of {others[0]}: pass --arch {others[0]}"
            if others
            else "pass the architecture it was trained as (safereuse list models); keys must follow "
            "torchvision's, RobustBench's or safereuse's layout"
        )
    else:
        opts = _arch_options(arch)
        extra_opts = f", --param {'/'.join(opts)}=…" if opts else ""
        fix = f"pass the options it was built with (--channels, --input-size{extra_opts})"
    raise SafeReuseError(f"{where} does not fit {arch}: " + "; ".join(parts), fix=fix)


# -- building --------------------------------------------------------------------------------------
def _arch_options(arch: str) -> list[str]:
    return [p for p in inspect.signature(MODELS.get(arch)).parameters if p not in SHAPE_OPTIONS]


def _factory_defaults(arch: str) -> dict[str, Any]:
    params = inspect.signature(MODELS.get(arch)).parameters
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def import_weights(
    weights: str | Path | Checkpoint,
    arch: str | None,
    *,
    num_classes: int | None = None,
    in_channels: int | None = None,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    default_normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    default_origin: str = "default",
) -> Imported:
    """Build the zoo model ``arch`` holding a checkpoint's weights.

    Args:
        weights: the weights file (or a :class:`Checkpoint` already read), or a Hugging Face encoder
            folder (:func:`import_hf_folder`).
        arch: zoo architecture (``safereuse list models``); None only for a Hugging Face folder.
        num_classes: outputs of the head; None: read from the head's weights. A value that does not
            fit them is an error.
        in_channels: input channels; None: read from the stem's weights.
        image_size: side of the square input; None: the architecture's default.
        mean: per-channel input mean (pixels in ``[0, 1]``); with ``std``, overrides everything else.
        std: per-channel input standard deviation.
        arch_kwargs: other architecture options (e.g. ``{"width": 8}``, ``{"activation": "leaky_relu"}``).
        default_normalization: ``(mean, std)`` used when neither the arguments nor the checkpoint give
            one (e.g. the parent teacher's), before the layout's default.
        default_origin: how the source record names ``default_normalization``'s origin.

    Returns:
        The :class:`Imported` model (eval mode, CPU) and its source record.

    Raises:
        SafeReuseError: unreadable file, unknown architecture or option, a class count or key set
            that does not fit.
    """
    if not isinstance(weights, Checkpoint) and is_hf_folder(weights):
        return import_hf_folder(weights, arch, num_classes=num_classes, image_size=image_size)
    if arch is None:
        raise SafeReuseError("no architecture given", fix="pass --arch (see `safereuse list models`)")
    ckpt = weights if isinstance(weights, Checkpoint) else read_checkpoint(weights)
    factory = MODELS.get(arch)
    kwargs = validate_params(
        factory, dict(arch_kwargs or {}), f"architecture {arch!r}", forbidden=SHAPE_OPTIONS
    )
    if (mean is None) != (std is None):
        raise SafeReuseError("--mean and --std go together", fix="pass both, one value per channel")
    default = _meta_model(arch, kwargs)
    default_state = default.state_dict()
    mapped = map_keys(ckpt.state, default_state, native_layout(default))
    head_key = f"{default.head_name}.weight"
    head = mapped.state.get(head_key)
    if head is not None and head.ndim == 2:
        if num_classes is not None and num_classes != head.shape[0]:
            raise SafeReuseError(
                f"{ckpt.path.name} has a {head.shape[0]}-class head ({head_key}) but {num_classes} classes "
                "were given",
                fix=f"give {head.shape[0]} classes (or leave the count out: it is read from the head)",
            )
        num_classes = int(head.shape[0])
    stem_key = next((k for k, v in default_state.items() if v.ndim == 4), None)
    stem = mapped.state.get(stem_key) if stem_key else None
    if stem is not None and stem.ndim == 4:
        if in_channels is not None and in_channels != stem.shape[1]:
            raise SafeReuseError(
                f"{ckpt.path.name} takes {stem.shape[1]}-channel input ({stem_key}) but --channels is "
                f"{in_channels}",
                fix=f"pass --channels {stem.shape[1]} or leave it out",
            )
        in_channels = int(stem.shape[1])
    # the architecture's own defaults (224 px for the ImageNet layouts), not create_model's 28 px grey
    own = _factory_defaults(arch)
    shape_kwargs = {
        k: v if v is not None else own.get(k)
        for k, v in (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size))
    }
    shape_kwargs = {k: v for k, v in shape_kwargs.items() if v is not None}
    for k, v in shape_kwargs.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise SafeReuseError(f"{k}={v!r} must be a positive integer", fix="e.g. 10")
    all_kwargs = {**kwargs, **shape_kwargs}
    try:
        expected = _meta_model(arch, all_kwargs).state_dict()
    except SafeReuseError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. an input too small for the architecture's strides
        raise SafeReuseError(
            f"{arch} cannot be built with {all_kwargs} ({type(exc).__name__})", fix="check --input-size"
        ) from None
    check_fits(mapped.state, expected, arch, str(ckpt.path.name))
    model = create_model(arch, **all_kwargs)
    if mean is not None and std is not None:
        norm, origin = (tuple(mean), tuple(std)), "arguments"
    elif mapped.normalization is not None:
        norm, origin = mapped.normalization, "checkpoint"
    elif default_normalization is not None:
        norm = (tuple(default_normalization[0]), tuple(default_normalization[1]))
        origin = default_origin
    elif mapped.layout == "robustbench":  # RobustBench / TRADES models take raw [0, 1] pixels
        c = model.input_spec.channels
        norm, origin = ((0.0,) * c, (1.0,) * c), "layout"
    else:
        norm, origin = (model.input_spec.mean, model.input_spec.std), "layout"
    model.set_normalization(tuple(float(v) for v in norm[0]), tuple(float(v) for v in norm[1]))
    with torch.no_grad():
        model.load_state_dict(mapped.state, strict=True)
    model.eval()
    source = {
        "path": str(ckpt.path.resolve()),
        "sha256": ckpt.sha256,
        "format": ckpt.format,
        "layout": mapped.layout,
        "unwrapped": [*ckpt.unwrapped, *mapped.unwrapped],
        "notes": mapped.notes,
        "input_from": origin,
    }
    return Imported(model, source)


def import_checkpoint(
    weights: str | Path,
    arch: str | None = None,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    in_channels: int | None = None,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    parent: Artifact | None = None,
    data: DataSpec | None = None,
) -> Imported:
    """:func:`import_weights` with what ``safereuse import`` knows besides the file: a parent, a task.

    With ``parent`` (the teacher the model was fine-tuned from) the architecture, its options, the
    input size and the normalisation default to the parent's (the stem's channels and the head's
    classes are still read from the weights); the class count must agree with ``class_names`` and
    ``data.classes`` when given.

    Args:
        weights: the checkpoint file (or a Hugging Face encoder folder).
        arch: zoo architecture; None: the parent's (a Hugging Face folder's: by its ``model_type``).
        num_classes: outputs of the head (default: from the class names, the data's classes, the
            head's weights).
        class_names: class names in label order.
        in_channels: input channels (default: read from the stem's weights).
        image_size: side of the square input (default: the parent's, else the architecture's).
        mean: per-channel input mean (with ``std``, overrides every default).
        std: per-channel input standard deviation.
        arch_kwargs: other architecture options (over the parent's when the architecture is its).
        parent: the loaded teacher artifact, for a student.
        data: the model's task (its name is checked here, before the weights are read).

    Returns:
        The :class:`Imported` model, its source record and the class names given (as strings).

    Raises:
        SafeReuseError: no architecture, an unknown dataset, class counts that disagree, and what
            :func:`import_weights` raises.

    Example:
        >>> import tempfile, pathlib, torch
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.pth"
        >>> torch.save(create_model("smallcnn", num_classes=3).state_dict(), path)
        >>> imp = import_checkpoint(path, "smallcnn", class_names=["a", "b", "c"])
        >>> imp.model.num_classes, imp.class_names
        (3, ['a', 'b', 'c'])
    """
    if arch is None:
        if parent is None and not is_hf_folder(weights):
            raise SafeReuseError("no architecture given", fix="pass --arch (see `safereuse list models`)")
        arch = str(parent.manifest["arch"]) if parent is not None else None
    base: dict[str, Any] = {}
    default_norm = None
    if parent is not None:
        spec = parent.model.input_spec
        base = {"image_size": spec.size[0]}
        if parent.manifest.get("arch") == arch:
            base = {**dict(parent.manifest.get("arch_kwargs") or {}), **base}
            base.pop("num_classes", None)
            base.pop("in_channels", None)  # read from the student's own stem
        default_norm = (spec.mean, spec.std)
    if data is not None and not data.name.startswith("imagefolder:"):
        DATASETS.get(data.name)  # an unknown name fails here, with its close match
    names = None
    if class_names is not None:
        names = [str(c) for c in class_names]
        if num_classes is not None and num_classes != len(names):
            raise SafeReuseError(
                f"{num_classes} classes were given but the class names list {len(names)}",
                fix="give one of them, or make them agree",
            )
        num_classes = len(names)
    if data is not None and data.classes is not None:
        if num_classes is not None and num_classes != len(data.classes):
            raise SafeReuseError(
                f"--classes names {len(data.classes)} classes but {num_classes} were given",
                fix="make the class list and the class count agree",
            )
        num_classes = len(data.classes)
    kwargs = {**base, **(arch_kwargs or {})}
    image_size = image_size if image_size is not None else kwargs.pop("image_size", None)
    kwargs.pop("image_size", None)
    imported = import_weights(
        weights,
        arch,
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        mean=mean,
        std=std,
        arch_kwargs=kwargs,
        default_normalization=default_norm,
        default_origin="parent",
    )
    imported.class_names = names
    return imported


def check_task(model: ReusableModel, bundle: DataBundle) -> None:
    """Refuse a task whose class count differs from the imported model's head.

    Raises:
        SafeReuseError: the class counts differ.
    """
    if bundle.num_classes != model.num_classes:
        data = bundle.spec
        raise SafeReuseError(
            f"{data.name} {data.classes or 'all classes'} has {bundle.num_classes} classes but the "
            f"model's head has {model.num_classes}",
            fix="pass --classes with the classes the model was trained on, in its label order",
        )


def import_manifest(
    imported: Imported,
    parent: Artifact | None = None,
    data: DataSpec | None = None,
    class_names: Sequence[str] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Manifest:
    """The manifest of an imported model: a teacher, or with ``parent`` that teacher's student.

    Example:
        >>> imp = Imported(create_model("smallcnn", num_classes=2), {"layout": "safereuse"})
        >>> m = import_manifest(imp).to_dict()
        >>> m["role"], m["method"]["name"], m["source"]["layout"]
        ('teacher', 'import', 'safereuse')
    """
    model = imported.model
    return Manifest(
        "student" if parent is not None else "teacher",
        data=data.to_dict() if data is not None else None,
        class_names=list(class_names) if class_names is not None else None,
        seed=None,
        parent=parent,
        method={"name": "import", "config": {"arch": model.info.arch, "arch_kwargs": model.info.kwargs}},
        metrics=dict(metrics or {}),
        extra={"source": imported.source},
    )


def is_hf_folder(path: str | Path) -> bool:
    """Whether ``path`` is a Hugging Face model folder (``config.json`` next to its weights, not a
    safereuse artifact); a folder with only pickled weights counts, so that it is refused by name.

    Example:
        >>> import tempfile
        >>> is_hf_folder(tempfile.mkdtemp())
        False
    """
    p = Path(path)
    weights = ("model.safetensors", "pytorch_model.bin")
    return (
        p.is_dir()
        and (p / "config.json").is_file()
        and any((p / w).is_file() for w in weights)
        and not (p / "manifest.json").is_file()
    )


def import_hf_folder(
    folder: str | Path,
    arch: str | None = None,
    *,
    num_classes: int | None = None,
    image_size: int | None = None,
) -> Imported:
    """A local Hugging Face encoder folder (BERT, RoBERTa, MPNet, MiniLM, DistilBERT; e.g. a
    sentence-transformers download) as a zoo text model: the encoder from the folder, mean pooling, a
    new head (:func:`safereuse.models.hf_encoder.build_from_folder`).

    BERT folders import as ``minilm``, MPNet as ``mpnet``, the others as ``hf-encoder`` (which also
    takes any of them). The folder's own tokenizer (``AutoTokenizer``, offline) aligns its vocabulary
    to the one every text dataset is tokenised with; the counts go into the source record. Only
    safetensors weights are read (a folder with just ``pytorch_model.bin`` is refused: convert it). A
    ``…For…`` checkpoint's ``bert.`` / ``roberta.`` / … prefix is stripped; its pooler and task heads
    are dropped (the contract's features are the mean-pooled tokens).

    Args:
        folder: ``config.json``, ``model.safetensors`` and the tokenizer files.
        arch: ``minilm``, ``mpnet`` or ``hf-encoder``; None: by the folder's ``model_type``.
        num_classes: outputs of the new head (default 2).
        image_size: the token length of the inputs (default 64).

    Returns:
        The :class:`Imported` model; its source record holds the layout (``huggingface-<type>``) and the
        vocabulary alignment counts.

    Raises:
        SafeReuseError: another architecture, pickled weights, a config, weights or tokenizer that do
            not fit.
    """
    folder = Path(folder)
    model, record = build_from_folder(folder, arch, num_classes=num_classes or 2, max_len=image_size or 64)
    voc = record["vocabulary"]
    note = (
        "vocabulary: the data's own"
        if voc.get("identity")
        else f"vocabulary aligned with the folder's {voc.get('tokenizer')}: {voc.get('exact')} tokens exact, "
        f"{voc.get('composed')} as the mean of their pieces, {voc.get('unknown')} unknown"
    )
    source = {
        "path": str(folder.resolve()),
        "sha256": sha256_file(folder / "model.safetensors"),
        "format": "safetensors",
        "layout": f"huggingface-{record['model_type']}",
        "unwrapped": [],
        "notes": ["encoder from the folder; mean pooling; new head", note],
        "input_from": "layout",
        "vocabulary": voc,
    }
    return Imported(model, source)


def read_class_names(path: str | Path) -> list[str]:
    """Class names from a text file, one a line (blank lines and surrounding spaces ignored).

    Raises:
        SafeReuseError: missing or empty file, a repeated name.
    """
    path = Path(path)
    if not path.is_file():
        raise SafeReuseError(f"classes file {path} does not exist", fix="check the path")
    try:
        names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except UnicodeDecodeError:
        raise SafeReuseError(
            f"{path} is not a UTF-8 text file", fix="write one class name per line"
        ) from None
    if not names:
        raise SafeReuseError(f"classes file {path} is empty", fix="write one class name per line")
    dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if dup is not None:
        raise SafeReuseError(f"class {dup!r} appears twice in {path}", fix="list each class once")
    return names


def parse_floats(text: str | None, what: str) -> tuple[float, ...] | None:
    """``"0.485,0.456,0.406"`` → a tuple of floats (None stays None).

    Example:
        >>> parse_floats("0.5, 0.25", "--mean")
        (0.5, 0.25)
    """
    if text is None:
        return None
    try:
        out = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        out = ()
    if not out:
        raise SafeReuseError(
            f"{what} {text!r} is not a list of numbers", fix=f"write e.g. {what} 0.5,0.5,0.5"
        )
    return out

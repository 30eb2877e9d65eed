"""Batched crafting (:func:`craft_batched`) and the on-disk cache of crafted defect sets, keyed by content.

This module sits below the defect classes (it imports no other defect module but the range checks):
the probe context crafts through it, and :mod:`.attacks` re-exports :func:`craft_batched`.

Crafting is the expensive part of an audit (40 PGD iterations over the test set per defect), and a
grid audits the same teacher against many students. An entry is keyed by the SHA-256 of

- the model's weights (``state_dict``) and input normalisation — the model the inputs were crafted on;
- the clean images and labels;
- the defect's resolved configuration (``Defect.config()``, which includes its seed) and the crafting
  batch size (mimic inputs depend on the batch they are crafted in);
- :data:`CACHE_VERSION` (bumped when crafting code changes its output).

so the same inputs always map to the same file and any change to the teacher, the data or a
parameter makes a new entry. An entry is ``<root>/<defect>/<key>.safetensors`` (the crafted images,
``x_adv``) plus ``<key>.json`` (what the key was made of), both written atomically; the JSON is
written last, so its presence marks a complete entry. A corrupt or mismatched entry is re-crafted.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .. import __version__
from ..device import model_device
from ..utils import atomic_path, config_hash, tensor_hash, weights_hash, write_json_atomic
from .checks import check_positive_int


class DefectLike(Protocol):
    """What the cache and the probe context need of a defect: its registry name and resolved config
    (every :class:`~safereuse.defects.Defect` has both)."""

    name: str

    def config(self) -> dict[str, Any]: ...


class CraftingDefect(DefectLike, Protocol):
    """A defect that crafts inputs (:class:`~safereuse.defects.attacks.ExploratoryDefect`)."""

    def craft(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor: ...


CACHE_VERSION = 3  # 2: nc-guided keeps its coverage state per input; 3: PGD keeps the strongest iterate
"""Part of every key; bump when a change to crafting code changes its output."""


def model_hash(model: nn.Module) -> str:
    """Content hash of a model's weights/buffers and, for contract models, its input normalisation."""
    spec = getattr(model, "input_spec", None)
    extra = spec.to_dict() if spec is not None and hasattr(spec, "to_dict") else {}
    return config_hash({"weights": weights_hash(model, 32), "input": extra}, 32)


def data_hash(x: torch.Tensor, y: torch.Tensor) -> str:
    """Content hash of images and labels."""
    return tensor_hash({"x": x, "y": y}, 32)


def craft_batched(
    defect: CraftingDefect,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 256,
    seed: int | None = None,
) -> torch.Tensor:
    """Run ``defect.craft`` over ``x`` in chunks of ``batch_size`` with one RNG stream.

    Args:
        defect: the exploratory defect.
        model: the model to craft on (inputs are moved to its device chunk by chunk).
        x: images ``[N, C, H, W]`` (kept where they are; the result is on the CPU).
        y: labels ``[N]``.
        batch_size: images per craft call.
        seed: RNG seed (default: the defect's ``seed`` field, else 0).

    Returns:
        Crafted images ``[N, C, H, W]`` on the CPU.

    Example:
        >>> from safereuse.defects import DEFECTS
        >>> from safereuse.models import create_model
        >>> model, x = create_model("smallcnn", num_classes=3).eval(), torch.rand(5, 1, 28, 28)
        >>> pgd = DEFECTS.create("pgd", steps=2)
        >>> torch.equal(craft_batched(pgd, model, x, torch.zeros(5, dtype=torch.long), batch_size=2),
        ...             craft_batched(pgd, model, x, torch.zeros(5, dtype=torch.long), batch_size=2))
        True
    """
    check_positive_int(batch_size, "batch_size")
    gen = torch.Generator().manual_seed(int(seed if seed is not None else getattr(defect, "seed", 0)))
    dev = model_device(model)
    outs = [
        defect.craft(model, x[i : i + batch_size].to(dev), y[i : i + batch_size].to(dev), gen).cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(outs) if outs else x.detach().cpu().clone()


class DefectCache:
    """A folder of crafted defect sets.

    Args:
        root: the cache folder (created on first write).

    Example:
        >>> import tempfile, torch
        >>> from safereuse.defects import FGSM
        >>> from safereuse.models import create_model
        >>> cache = DefectCache(tempfile.mkdtemp())
        >>> m, x, y = create_model("smallcnn", 3), torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 0])
        >>> a, hit_a = cache.craft(FGSM(), m, x, y)
        >>> b, hit_b = cache.craft(FGSM(), m, x, y)
        >>> hit_a, hit_b, torch.equal(a, b)
        (False, True, True)
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def key(
        self,
        defect: CraftingDefect,
        model_digest: str,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int = 256,
    ) -> dict[str, Any]:
        """The components of an entry's key and the key itself (``key["key"]``)."""
        parts = {
            "version": CACHE_VERSION,
            "model": model_digest,
            "data": data_hash(x, y),
            "defect": defect.config(),
            "batch_size": int(batch_size),
        }
        return {**parts, "key": config_hash(parts, 32)}

    def _paths(self, defect: CraftingDefect, key: str) -> tuple[Path, Path]:
        folder = self.root / (defect.name or type(defect).__name__)
        return folder / f"{key}.safetensors", folder / f"{key}.json"

    def load(
        self, defect: CraftingDefect, key: dict[str, Any], shape: tuple[int, ...]
    ) -> torch.Tensor | None:
        """The cached set for ``key``, or None when absent, corrupt or of the wrong shape."""
        tfile, jfile = self._paths(defect, key["key"])
        if not (tfile.is_file() and jfile.is_file()):
            return None
        try:
            meta = json.loads(jfile.read_text())
            x_adv = load_file(str(tfile))["x_adv"]
        except (OSError, ValueError, KeyError, SafetensorError):
            return None
        if meta.get("key") != key["key"] or tuple(x_adv.shape) != tuple(shape):
            return None
        return x_adv

    def save(self, defect: CraftingDefect, key: dict[str, Any], x_adv: torch.Tensor, seconds: float) -> Path:
        """Write an entry atomically (tensor first, then the JSON that marks it complete)."""
        tfile, jfile = self._paths(defect, key["key"])
        with atomic_path(tfile) as tmp:
            save_file({"x_adv": x_adv.detach().cpu().contiguous()}, str(tmp))
        meta = {
            **key,
            "shape": list(x_adv.shape),
            "seconds": seconds,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "safereuse_version": __version__,
        }
        write_json_atomic(jfile, meta)
        return tfile

    def craft(
        self,
        defect: CraftingDefect,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        batch_size: int = 256,
        model_digest: str | None = None,
    ) -> tuple[torch.Tensor, bool]:
        """The crafted set for ``(model, x, y, defect)``: from the cache, or crafted and stored.

        Args:
            defect: the exploratory defect (its ``config()`` is part of the key).
            model: the model to craft on.
            x: clean images ``[N, C, H, W]``.
            y: labels ``[N]``.
            batch_size: images per craft call.
            model_digest: a precomputed :func:`model_hash` (computed when None).

        Returns:
            ``(x_adv on the CPU, cache_hit)``.
        """
        key = self.key(defect, model_digest or model_hash(model), x, y, batch_size)
        hit = self.load(defect, key, tuple(x.shape))
        if hit is not None:
            return hit, True
        t0 = time.perf_counter()
        x_adv = craft_batched(defect, model, x, y, batch_size)
        self.save(defect, key, x_adv, time.perf_counter() - t0)
        return x_adv, False


def cached_craft(
    defect: CraftingDefect,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
    model_digest: str | None = None,
) -> tuple[torch.Tensor, bool]:
    """:meth:`DefectCache.craft` when ``cache_dir`` is given, else plain :func:`craft_batched`.

    Returns:
        ``(x_adv on the CPU, cache_hit)``.
    """
    if cache_dir is None:
        return craft_batched(defect, model, x, y, batch_size), False
    return DefectCache(cache_dir).craft(defect, model, x, y, batch_size=batch_size, model_digest=model_digest)


__all__ = [
    "CACHE_VERSION",
    "CraftingDefect",
    "DefectCache",
    "DefectLike",
    "cached_craft",
    "craft_batched",
    "data_hash",
    "model_hash",
]

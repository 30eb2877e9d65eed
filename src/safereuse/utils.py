"""Small shared helpers: seeding, atomic writes, hashing, a model's analysis mode."""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success rename it over ``path`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n")


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for what configs and manifests hold: paths, numpy and 0-d tensor
    scalars, sets and tuples (as lists)."""
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, torch.Tensor) and o.numel() == 1:
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def config_hash(obj: Any, length: int = 16) -> str:
    """Stable short hash of a JSON-able config (key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, default=json_default, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def tensor_hash(tensors: dict[str, torch.Tensor], length: int = 16) -> str:
    """Content hash of named tensors (order-independent), for caching by content."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous().reshape(-1)  # 0-d tensors cannot be viewed as bytes
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(tensors[name].shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:length]


def weights_hash(model: nn.Module, length: int = 16) -> str:
    """Content hash of a model's weights and buffers (its ``state_dict``), for caching by content.

    Args:
        model: any ``nn.Module``.
        length: hex digits kept.

    Returns:
        :func:`tensor_hash` of the state dict (order-independent; the same weights give the same hash).

    Example:
        >>> m = nn.Linear(2, 2)
        >>> len(weights_hash(m)), weights_hash(m, 32)[:16] == weights_hash(m)
        (16, True)
    """
    return tensor_hash(dict(model.state_dict()), length)


@contextmanager
def preserve_modes(*modules: nn.Module) -> Iterator[None]:
    """Restore every submodule's ``training`` flag and every parameter's ``requires_grad`` on exit.

    The flags are saved per module and per parameter, not as ``model.train(flag)``: a mixed state (a
    frozen BatchNorm kept in eval inside a training model) comes back exactly as it was, also when
    the block raises. What the block does in between (``train()``, ``eval()``, freezing) is its own.

    Args:
        modules: the models whose state to keep (a model and its separate head, say).

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
        >>> _ = m[1].eval()
        >>> with preserve_modes(m):
        ...     _ = m.train(), m[0].weight.requires_grad_(False)
        >>> m.training, m[1].training, m[0].weight.requires_grad
        (True, False, True)
    """
    mods = {id(m): m for mod in modules for m in mod.modules()}
    flags = [(m, m.training) for m in mods.values()]
    params = {id(p): (p, p.requires_grad) for mod in modules for p in mod.parameters()}
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag
        for p, flag in params.values():
            p.requires_grad_(flag)


@contextmanager
def analysis_mode(
    model: nn.Module, *, grad: bool = False, extra: Iterable[nn.Module] = ()
) -> Iterator[nn.Module]:
    """Analysis mode: ``eval()``, frozen parameters and (by default) no autograd; all restored on exit.

    The one helper for "look at the model without changing it" (prediction, profiling, crafting
    adversarial inputs): on exit every module's ``training`` flag and every parameter's
    ``requires_grad`` are what they were before (:func:`preserve_modes`), also on exceptions.

    Args:
        model: the model to analyse.
        grad: keep autograd on (gradients w.r.t. the *inputs*, as attacks need); the parameters stay
            frozen either way, so no parameter's ``.grad`` is touched.
        extra: further modules (a separate head, say) put in analysis mode alongside.

    Returns:
        A context manager yielding ``model``.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
        >>> _ = m[1].eval()
        >>> with analysis_mode(m):
        ...     m.training, m[0].weight.requires_grad, torch.is_grad_enabled()
        (False, False, False)
        >>> m.training, m[1].training, m[0].weight.requires_grad, torch.is_grad_enabled()
        (True, False, True, True)
    """
    extra = tuple(extra)
    with preserve_modes(model, *extra):
        for mod in (model, *extra):
            mod.eval()
            for p in mod.parameters():
                p.requires_grad_(False)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            yield model

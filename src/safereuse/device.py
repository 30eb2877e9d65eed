"""Device selection: ``auto`` picks CUDA (then Apple MPS) when present, else the CPU."""

from __future__ import annotations

import torch

from .errors import SafeReuseError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Map ``"auto"``/``"cpu"``/``"cuda"``/``"cuda:1"``/``"mps"`` to a usable ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise SafeReuseError(f"unknown device {device!r}", fix="use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SafeReuseError("CUDA was requested but is not available", fix="use --device auto or cpu")
    return dev


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (then first buffer); the CPU for a state-free module.

    Args:
        model: any ``nn.Module``.

    Returns:
        Where the model's tensors live (inputs must be moved there).

    Example:
        >>> model_device(torch.nn.Linear(2, 2)), model_device(torch.nn.ReLU())
        (device(type='cpu'), device(type='cpu'))
    """
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")

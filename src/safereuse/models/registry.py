"""The model registry (``safereuse list models``); each architecture file registers its factories."""

from __future__ import annotations

from typing import Any

from ..registry import Registry

MODELS: Registry[Any] = Registry("model", "safereuse list models")

__all__ = ["MODELS"]

"""The dataset registry (``safereuse list datasets``); each source registers its loader."""

from __future__ import annotations

from collections.abc import Callable

from ..registry import Registry
from .core import RawData

DATASETS: Registry[Callable[..., RawData]] = Registry("dataset", "safereuse list datasets")

__all__ = ["DATASETS"]

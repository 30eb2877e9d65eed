"""Dataset registry (``safereuse list datasets``) and loading with class subsets and splits."""

from __future__ import annotations

import os
from typing import Any

from ..errors import SafeReuseError
from ..registry import check_kwargs
from . import cifar, gtsrb, svhn, text  # noqa: F401  (register the loaders)
from .core import DataBundle, DataSpec, RawData, Split, build_bundle, check_finite, parse_classes
from .registry import DATASETS
from .sources import load_digits, load_fashion_mnist  # noqa: F401  (registers the loaders)

_RAW_CACHE: dict[tuple[str, str | None, str | None], RawData] = {}


def load_raw(name: str, data_dir: str | None = None) -> RawData:
    """The raw dataset by registry name, cached per process.

    Args:
        name: a registry name, or ``imagefolder:PATH`` for a folder of images.
        data_dir: extra folder to look in first.

    Returns:
        The :class:`RawData`; shared between calls, so never modify it in place.
    """
    key = (name, data_dir, os.environ.get("SAFEREUSE_DATA"))
    if key not in _RAW_CACHE:
        if name.startswith("imagefolder:"):
            from .imagefolder import load_imagefolder

            raw = load_imagefolder(name.split(":", 1)[1])
        elif name == "imagefolder":
            raise SafeReuseError("imagefolder needs a path", fix="write imagefolder:/path/to/images")
        else:
            raw = DATASETS.get(name)(data_dir=data_dir)
        _RAW_CACHE[key] = raw
    return _RAW_CACHE[key]


def load_data(spec: DataSpec | str, **kwargs: Any) -> DataBundle:
    """Load a dataset slice.

    Args:
        spec: a :class:`DataSpec` or a dataset name (then ``kwargs`` fill the spec).
        **kwargs: :class:`DataSpec` fields (``classes`` may be a string such as ``"0-4"``).

    Returns:
        The :class:`DataBundle` with train / validation / test splits.

    Example:
        >>> b = load_data("digits", classes=[0, 1, 2], train_size=30)
        >>> b.num_classes, len(b.train) + len(b.val)
        (3, 30)
    """
    if not isinstance(spec, str) and kwargs:
        raise SafeReuseError(
            "load_data takes keyword options only with a dataset name", fix="set them in the DataSpec"
        )
    if isinstance(spec, str):
        if "classes" in kwargs:  # "0-4" → [0, 1, 2, 3, 4] before the type check
            kwargs["classes"] = parse_classes(kwargs["classes"])
        spec = DataSpec(spec, **check_kwargs(DataSpec, kwargs, "load_data"))
    return build_bundle(load_raw(spec.name, spec.data_dir), spec)


__all__ = [
    "DATASETS",
    "DataBundle",
    "DataSpec",
    "RawData",
    "Split",
    "build_bundle",
    "check_finite",
    "load_data",
    "load_raw",
    "parse_classes",
]

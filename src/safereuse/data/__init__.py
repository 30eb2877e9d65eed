"""Dataset registry (``safereuse list datasets``) and loading with class subsets and splits."""

from __future__ import annotations

import inspect
import os
from typing import Any

import numpy as np

from ..errors import SafeReuseError
from ..registry import check_kwargs
from . import cifar, gtsrb, svhn, text  # noqa: F401  (register the loaders)
from .core import DataBundle, DataSpec, RawData, Split, build_bundle, check_finite, parse_classes
from .imagefolder import load_imagefolder
from .registry import DATASETS
from .sources import load_digits, load_fashion_mnist  # noqa: F401  (registers the loaders)

_RAW_CACHE: dict[tuple[str, str | None, str | None, int | None], RawData] = {}

MAX_LEN_LIMIT = 512
"""Longest ``max_len`` accepted: BERT-family position embeddings stop at 512."""


def check_max_len(name: str, max_len: Any) -> int | None:
    """Check a ``max_len`` option (text data only) before any data is read.

    Args:
        name: the dataset's registry name.
        max_len: None (the dataset's default) or the token length.

    Returns:
        ``max_len`` as an ``int`` (or None).

    Raises:
        SafeReuseError: not an integer in 2..512, or ``name`` is not a text dataset.

    Example:
        >>> check_max_len("movie-sentences", 32), check_max_len("digits", None)
        (32, None)
        >>> check_max_len("digits", 32)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        safereuse.errors.SafeReuseError: max_len applies to text data, but digits holds images ...
    """
    if max_len is None:
        return None
    integer = isinstance(max_len, (int, np.integer)) and not isinstance(max_len, bool)
    if not integer or not 2 <= max_len <= MAX_LEN_LIMIT:
        raise SafeReuseError(
            f"max_len {max_len!r} must be an integer from 2 to {MAX_LEN_LIMIT}",
            fix="use e.g. 32 or 64 tokens ([CLS] and [SEP] included)",
        )
    if not _takes_max_len(name):
        raise SafeReuseError(
            f"max_len applies to text data, but {name} holds images", fix="remove max_len / --max-len"
        )
    return int(max_len)


def _takes_max_len(name: str) -> bool:
    if name.startswith("imagefolder") or name not in DATASETS:
        return False
    return "max_len" in inspect.signature(DATASETS.get(name)).parameters


def load_raw(name: str, data_dir: str | None = None, max_len: int | None = None) -> RawData:
    """The raw dataset by registry name, cached per process.

    Args:
        name: a registry name, or ``imagefolder:PATH`` for a folder of images.
        data_dir: extra folder to look in first.
        max_len: text datasets only: the token length (None: the dataset's default).

    Returns:
        The :class:`RawData`; shared between calls, so never modify it in place.

    Raises:
        SafeReuseError: an unknown dataset, or a bad ``max_len`` (:func:`check_max_len`).
    """
    max_len = check_max_len(name, max_len)
    key = (name, data_dir, os.environ.get("SAFEREUSE_DATA"), max_len)
    if key not in _RAW_CACHE:
        if name.startswith("imagefolder:"):
            raw = load_imagefolder(name.split(":", 1)[1])
        elif name == "imagefolder":
            raise SafeReuseError("imagefolder needs a path", fix="write imagefolder:/path/to/images")
        elif max_len is not None:
            raw = DATASETS.get(name)(data_dir=data_dir, max_len=max_len)
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
    return build_bundle(load_raw(spec.name, spec.data_dir, spec.max_len), spec)


__all__ = [
    "DATASETS",
    "DataBundle",
    "DataSpec",
    "RawData",
    "Split",
    "build_bundle",
    "check_finite",
    "check_max_len",
    "load_data",
    "load_raw",
    "parse_classes",
]

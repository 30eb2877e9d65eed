"""Reader for the idx format of (Fashion-)MNIST, with checks on magic numbers and sizes."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import SafeReuseError

_DTYPES = {0x08: np.uint8}


def read_idx(path: Path, expect_dims: int, expect_count: int | None = None) -> torch.Tensor:
    """Read a (gzipped) idx file into a tensor.

    Args:
        path: ``*.gz`` or raw idx file.
        expect_dims: 1 for labels, 3 for images.
        expect_count: number of items the file must hold (None: any).

    Returns:
        A ``uint8`` tensor of shape ``[count, *dims]``.

    Raises:
        SafeReuseError: the file is unreadable, not gzip (for ``.gz``), truncated, has a bad magic
            number or the wrong item count; the message names the file.
    """
    path = Path(path)
    fix = "delete the file and get it again (or reinstall Debian's dataset-fashion-mnist)"
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise SafeReuseError(f"{path} is corrupt or unreadable ({exc})", fix=fix) from None
    if len(data) < 4:
        raise SafeReuseError(f"{path} is truncated", fix=fix)
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code not in _DTYPES or ndim != expect_dims:
        raise SafeReuseError(f"{path} has a bad idx magic number", fix=fix)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise SafeReuseError(f"{path} is truncated", fix=fix)
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if expect_count is not None and dims[0] != expect_count:
        raise SafeReuseError(f"{path} holds {dims[0]} items, expected {expect_count}", fix=fix)
    size = int(np.prod(dims))
    if len(data) - header != size:
        raise SafeReuseError(f"{path} has {len(data) - header} bytes of data, expected {size}", fix=fix)
    arr = np.frombuffer(data, dtype=_DTYPES[dtype_code], offset=header).reshape(dims)
    return torch.from_numpy(arr.copy())


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a ``uint8`` array as a gzipped idx file (tests and fixtures).

    Args:
        path: the ``.gz`` file to write.
        array: the items, ``[count, *dims]``; cast to ``uint8``.
    """
    arr = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.tobytes())

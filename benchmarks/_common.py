"""Shared helpers for the benchmarks: machine facts and writing results (atomically) as JSON."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from safereuse.utils import write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write(name: str, figures: dict[str, Any]) -> Path:
    path = RESULTS / f"{name}.json"
    write_json_atomic(path, {"machine": machine(), **figures})
    print(f"wrote {path}")
    return path

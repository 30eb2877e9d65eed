"""Shared fixtures: tiny real data (scikit-learn digits) and tiny saved teacher/student artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def digits_teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smallcnn teacher trained for 2 epochs on digits 0-4 (a few seconds)."""
    from safereuse import api
    from safereuse.data import DataSpec

    out = tmp_path_factory.mktemp("teacher") / "t"
    api.train_teacher(
        "smallcnn",
        DataSpec("digits", classes=[0, 1, 2, 3, 4]),
        out=out,
        fit_params={"epochs": 2, "lr": 0.05},
        seed=0,
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def digits_student_dir(digits_teacher_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finetuned student of ``digits_teacher_dir`` on digits 5-9 (10 images per class)."""
    from safereuse import api
    from safereuse.data import DataSpec

    out = tmp_path_factory.mktemp("student") / "s"
    api.transfer(
        digits_teacher_dir,
        DataSpec("digits", classes=[5, 6, 7, 8, 9], train_size=10, per_class=True),
        "finetune",
        {"epochs": 2},
        out=out,
        seed=0,
        progress=False,
    )
    return out


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Tests never write into the user's cache (crafted-defect cache, downloads)."""
    import os

    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old

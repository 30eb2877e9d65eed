"""Slicing tools: coverage profiles (used by ReMoS; reusable by NNSlicer)."""

from __future__ import annotations

from .coverage import (
    CRITERIA,
    CoverageProfile,
    Criterion,
    coverage_layers,
    coverage_profile,
    make_criterion,
    nc,
    scaled_channel_means,
    snac,
    tknc,
)

__all__ = [
    "CRITERIA",
    "CoverageProfile",
    "Criterion",
    "coverage_layers",
    "coverage_profile",
    "make_criterion",
    "nc",
    "scaled_channel_means",
    "snac",
    "tknc",
]

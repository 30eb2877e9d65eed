"""Range checks shared by the defects' parameters (pixel budgets, counts, norms).

The lowest module of :mod:`safereuse.defects`: it imports no other defect module, so the crafting
cache, the probe context and every defect can use it.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import SafeReuseError


def check_eps(eps: float, what: str = "eps", norm: str = "linf") -> float:
    """Validate a pixel-space budget or step size.

    L∞ values must lie in ``[0, 1]`` (the whole pixel range). L2 values must be finite and ≥ 0 but may
    exceed 1 (a 28×28 image spans an L2 distance of up to 28; MNIST-style L2 budgets are 1–3).

    Raises:
        SafeReuseError: not a number, negative, non-finite, or (L∞) above 1.

    Example:
        >>> check_eps("0.5"), check_eps(3, "eps", norm="l2")
        (0.5, 3.0)
    """
    try:
        v = float(eps)
    except (TypeError, ValueError):
        raise SafeReuseError(f"{what}={eps!r} is not a number", fix="pass e.g. 0.03137 (8/255)") from None
    if not math.isfinite(v) or v < 0 or (norm == "linf" and v > 1):
        rng = "[0, 1]" if norm == "linf" else "[0, ∞)"
        raise SafeReuseError(
            f"{what}={eps!r} is outside {rng} for the {norm} norm",
            fix="budgets are in [0, 1] pixel units, e.g. L∞ 8/255 ≈ 0.0314, L2 1.0",
        )
    return v


def check_positive_int(v: Any, what: str) -> int:
    """``v`` when it is a positive ``int`` (not a bool); else a :class:`SafeReuseError` naming ``what``.

    Example:
        >>> check_positive_int(20, "steps")
        20
        >>> check_positive_int(True, "steps")
        Traceback (most recent call last):
        ...
        safereuse.errors.SafeReuseError: steps=True must be a positive integer (fix: pass e.g. 20)
    """
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise SafeReuseError(f"{what}={v!r} must be a positive integer", fix="pass e.g. 20")
    return v


def check_norm(norm: str) -> str:
    """``norm`` when it is ``linf`` or ``l2``; else a :class:`SafeReuseError`.

    Example:
        >>> check_norm("l2")
        'l2'
    """
    if norm not in ("linf", "l2"):
        raise SafeReuseError(f"norm {norm!r} is not supported", fix="use linf or l2")
    return norm


__all__ = ["check_eps", "check_norm", "check_positive_int"]

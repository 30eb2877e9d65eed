"""safereuse: reuse pretrained neural networks safely.

Audit what a fine-tuned student inherited from its teacher (adversarial vulnerabilities, backdoors),
produce students that inherit less (ReMoS, NNSlicer, SeaM, CARTL and baselines), and compare methods.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import SafeReuseError  # noqa: E402

__all__ = ["SafeReuseError", "__version__"]

"""Building a registered architecture: :func:`create_model` and the options of an untrained copy.

Apart from the package ``__init__`` so that an architecture file (``minilm``'s BERT-folder import)
can build models without importing the package that imports it.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch  # noqa: F401  (used in the doctest)

from .contract import ModelInfo, ReusableModel
from .registry import MODELS


def create_model(
    name: str,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    **kwargs: Any,
) -> ReusableModel:
    """Build a registered architecture.

    Args:
        name: registry name (see ``safereuse list models``).
        num_classes: outputs of the head.
        in_channels: image channels (1 for Fashion-MNIST/digits, 3 for RGB).
        image_size: side of the square input in pixels.
        **kwargs: architecture options (e.g. ``width`` for the small resnets).

    Returns:
        A :class:`ReusableModel` whose ``info`` records how to rebuild it.

    Example:
        >>> m = create_model("resnet8", num_classes=5)
        >>> m(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 5])
    """
    all_kwargs = dict(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)
    model = MODELS.create(name, **all_kwargs)
    model.info = ModelInfo(name, all_kwargs)
    return model


def untrained_kwargs(info: ModelInfo) -> dict[str, Any]:
    """``info``'s architecture options for a freshly initialised copy: ``pretrained=False`` for an
    architecture whose factory loads published weights (``minilm``), so re-initialising never
    brings them back.

    Example:
        >>> untrained_kwargs(ModelInfo("minilm", {"num_classes": 2}))["pretrained"]
        False
        >>> "pretrained" in untrained_kwargs(ModelInfo("smallcnn", {}))
        False
    """
    kwargs = dict(info.kwargs)
    if "pretrained" in inspect.signature(MODELS.get(info.arch)).parameters:
        kwargs["pretrained"] = False
    return kwargs


__all__ = ["create_model", "untrained_kwargs"]

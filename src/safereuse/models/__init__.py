"""Model registry (``safereuse list models``) and the model contract."""

from __future__ import annotations

import torch  # noqa: F401  (used in the doctest)

from . import hf_encoder, minilm, mobilenet, mpnet, resnet, smallcnn, vgg, wide_resnet  # noqa: F401  (each registers its models)
from .contract import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AdaptedModel,
    InputSpec,
    ModelInfo,
    ReusableModel,
    adapt,
    check_contract,
    last_k_parameters,
)
from .factory import create_model, untrained_kwargs
from .registry import MODELS

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODELS",
    "AdaptedModel",
    "InputSpec",
    "ModelInfo",
    "ReusableModel",
    "adapt",
    "check_contract",
    "create_model",
    "last_k_parameters",
    "untrained_kwargs",
]

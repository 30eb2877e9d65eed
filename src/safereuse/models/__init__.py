"""Model registry (``safereuse list models``) and the model contract."""

from __future__ import annotations

from typing import Any

import torch  # noqa: F401  (used in the doctest)

from ..registry import Registry
from . import mobilenet, resnet, smallcnn, vgg, wide_resnet
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

MODELS: Registry[Any] = Registry("model", "safereuse list models")

MODELS.add("smallcnn", smallcnn.smallcnn, "small CNN (2 conv + 2 fc), 28 px")
MODELS.add("resnet8", resnet.resnet8, "small ResNet-8 for 28 px inputs (width configurable)")
MODELS.add("resnet10", resnet.resnet10, "small ResNet-10 for 28 px inputs (width configurable)")
MODELS.add("resnet18", resnet.resnet18, "ResNet-18, ImageNet layout (torchvision keys)")
MODELS.add("resnet34", resnet.resnet34, "ResNet-34, ImageNet layout (torchvision keys)")
MODELS.add("resnet50", resnet.resnet50, "ResNet-50, ImageNet layout (torchvision keys)")
MODELS.add("resnet20", resnet.resnet20, "CIFAR ResNet-20 (3×3 basic blocks, widths 16/32/64), 32 px")
MODELS.add("resnet32", resnet.resnet32, "CIFAR ResNet-32 (3×5 basic blocks, widths 16/32/64), 32 px")
MODELS.add("resnet56", resnet.resnet56, "CIFAR ResNet-56 (3×9 basic blocks, widths 16/32/64), 32 px")
MODELS.add("vgg11", vgg.vgg11, "VGG-11 with BN (torchvision vgg11_bn keys); small layout below 64 px")
MODELS.add("vgg16", vgg.vgg16, "VGG-16 with BN (torchvision vgg16_bn keys); small layout below 64 px")
MODELS.add("mobilenet_v2", mobilenet.mobilenet_v2, "MobileNetV2 (torchvision keys), width_mult option")
MODELS.add("wrn-28-4", wide_resnet.wrn_28_4, "Wide ResNet-28-4, pre-activation (robustness-code keys)")
MODELS.add("wrn-34-10", wide_resnet.wrn_34_10, "Wide ResNet-34-10, pre-activation (robustness-code keys)")


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
]

"""A small, fast CNN for 28 px images (tests, quick experiments)."""

from __future__ import annotations

import torch
from torch import nn

from .contract import InputSpec, ReusableModel
from .registry import MODELS


class SmallCNN(ReusableModel):
    """conv(w)-pool-conv(2w)-pool-fc(hidden)-fc(num_classes).

    Args:
        num_classes: outputs.
        in_channels: image channels.
        image_size: side of the square input.
        width: channels of the first conv.
        hidden: size of the penultimate layer.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        width: int = 16,
        hidden: int = 64,
    ) -> None:
        spec = InputSpec(in_channels, (image_size, image_size), (0.5,) * in_channels, (0.5,) * in_channels)
        super().__init__(spec)
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        side = image_size // 4
        self.fc1 = nn.Linear(2 * width * side * side, hidden)
        self.fc = nn.Linear(hidden, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        x = self.pool(self.relu(self.bn2(self.conv2(x))))
        return self.relu(self.fc1(torch.flatten(x, 1)))

    def block_names(self) -> list[str]:
        return ["conv1+bn1", "conv2+bn2", "fc1", "fc"]


@MODELS.register("smallcnn", "small CNN (2 conv + 2 fc), 28 px")
def smallcnn(
    num_classes: int = 10, in_channels: int = 1, image_size: int = 28, width: int = 16, hidden: int = 64
) -> SmallCNN:
    """Small CNN (2 conv + 2 fc) for 28 px images (LeNet-style; a fast model for tests and demos).

    Args:
        num_classes: outputs of the head (``fc``).
        in_channels: image channels.
        image_size: side of the square input (a multiple of 4).
        width: channels of the first conv (the second has ``2 * width``).
        hidden: size of the penultimate layer (``fc1``).

    Returns:
        A :class:`SmallCNN` with 4 blocks (``conv1+bn1``, ``conv2+bn2``, ``fc1``, ``fc``).
    """
    return SmallCNN(num_classes, in_channels, image_size, width, hidden)

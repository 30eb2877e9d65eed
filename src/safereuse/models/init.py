"""Weight initialisation shared by the zoo's torchvision-layout models."""

from __future__ import annotations

from torch import nn


def torchvision_init(model: nn.Module) -> None:
    """torchvision's VGG / MobileNetV2 initialisation: Kaiming-normal (fan-out) convs, unit BN,
    N(0, 0.01) linears, zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)

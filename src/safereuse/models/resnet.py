"""ResNets with torchvision-compatible state-dict keys.

- ImageNet-style ``resnet18/34/50`` (He et al., CVPR 2016), identical keys to ``torchvision.models``;
- small ``resnet8/resnet10`` for 28 px inputs: 3×3 stride-1 stem, no max-pool, configurable width;
- CIFAR ``resnet20/32/56`` (He et al., CVPR 2016, §4.2): depth 6n+2, three stages of n basic blocks,
  widths 16/32/64, 3×3 stride-1 stem, no max-pool. They reuse :class:`ResNet`, so their keys follow
  torchvision's naming (``conv1``, ``bn1``, ``layerK.i.*``, ``fc``) with three stages.

Shortcuts: where a stage changes width or stride, the shortcut is a 1×1 strided conv + BN
(``layerK.0.downsample.0/1``, the paper's option B). The paper's CIFAR networks use the
parameter-free option A (identity with zero-padded channels); option B adds 2,752 parameters to each
CIFAR ResNet (e.g. ResNet-20: 272,474 instead of 269,722 with 10 classes), so option-A checkpoints
(``shortcut``/``linear`` keys, e.g. akamaster/pytorch_resnet_cifar10) do not load into these models.
"""

from __future__ import annotations

import torch
from torch import nn

from .contract import InputSpec, ReusableModel
from .registry import MODELS


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(ReusableModel):
    """Residual network; module names follow torchvision so its ``.pth`` files load directly.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage (one entry per stage; 3 or 4 stages).
        num_classes: outputs of the head.
        input_spec: input channels/size/normalisation.
        width: channels of the first stage (doubles every stage).
        small_input: 3×3 stride-1 stem without max-pool (for 28–32 px images).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        num_classes: int,
        input_spec: InputSpec,
        width: int = 64,
        small_input: bool = False,
    ) -> None:
        super().__init__(input_spec)
        self.inplanes = width
        c = input_spec.channels
        if small_input:
            self.conv1 = nn.Conv2d(c, width, 3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(c, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, stride=2, padding=1)
        self._stages = []
        for i, n in enumerate(layers):
            stage = self._make_layer(block, width * 2**i, n, stride=1 if i == 0 else 2)
            setattr(self, f"layer{i + 1}", stage)
            self._stages.append(f"layer{i + 1}")
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes: int, n: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        mods = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, n)]
        return nn.Sequential(*mods)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self._stages:
            x = getattr(self, name)(x)
        return torch.flatten(self.avgpool(x), 1)

    def block_names(self) -> list[str]:
        names = ["conv1+bn1"]
        for stage in self._stages:
            names += [f"{stage}.{i}" for i in range(len(getattr(self, stage)))]
        return names + ["fc"]


def _imagenet_layout(
    block: type[BasicBlock] | type[Bottleneck],
    layers: list[int],
    num_classes: int,
    in_channels: int,
    image_size: int,
    small_input: bool,
) -> ResNet:
    spec = InputSpec.imagenet(in_channels, image_size)
    return ResNet(block, layers, num_classes, spec, small_input=small_input)


@MODELS.register("resnet18", "ResNet-18, ImageNet layout (torchvision keys)")
def resnet18(
    num_classes: int = 1000, in_channels: int = 3, image_size: int = 224, small_input: bool = False
) -> ResNet:
    """ResNet-18 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016), ImageNet layout.

    Args:
        num_classes: outputs of the head (``fc``).
        in_channels: image channels (ImageNet statistics are used for 3, 0.5/0.5 otherwise).
        image_size: side of the square input (224 for ImageNet; ≥ 32 works, total stride 32).
        small_input: the CIFAR layout (3×3 stride-1 stem, no max-pool, total stride 8) for 32 px
            images, as in most CIFAR-10 work (e.g. NNSlicer's ResNet-18); the keys stay torchvision's,
            but ``conv1``'s kernel is 3×3, so ImageNet checkpoints do not load.

    Returns:
        A :class:`ResNet` whose state-dict keys and shapes equal torchvision's ``resnet18``
        (with ``in_channels=3``, ``num_classes=1000``).
    """
    return _imagenet_layout(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, image_size, small_input)


@MODELS.register("resnet34", "ResNet-34, ImageNet layout (torchvision keys)")
def resnet34(
    num_classes: int = 1000, in_channels: int = 3, image_size: int = 224, small_input: bool = False
) -> ResNet:
    """ResNet-34 (He et al., CVPR 2016), ImageNet layout.

    Args:
        num_classes: outputs of the head (``fc``).
        in_channels: image channels (ImageNet statistics are used for 3, 0.5/0.5 otherwise).
        image_size: side of the square input (224 for ImageNet; ≥ 32 works, total stride 32).
        small_input: the CIFAR layout (3×3 stride-1 stem, no max-pool, total stride 8) for 32 px
            images, as in most CIFAR-10 work (e.g. NNSlicer's ResNet-18); the keys stay torchvision's,
            but ``conv1``'s kernel is 3×3, so ImageNet checkpoints do not load.

    Returns:
        A :class:`ResNet` whose state-dict keys and shapes equal torchvision's ``resnet34``
        (with ``in_channels=3``, ``num_classes=1000``).
    """
    return _imagenet_layout(BasicBlock, [3, 4, 6, 3], num_classes, in_channels, image_size, small_input)


@MODELS.register("resnet50", "ResNet-50, ImageNet layout (torchvision keys)")
def resnet50(
    num_classes: int = 1000, in_channels: int = 3, image_size: int = 224, small_input: bool = False
) -> ResNet:
    """ResNet-50 (He et al., CVPR 2016), ImageNet layout with bottleneck blocks.

    Args:
        num_classes: outputs of the head (``fc``).
        in_channels: image channels (ImageNet statistics are used for 3, 0.5/0.5 otherwise).
        image_size: side of the square input (224 for ImageNet; ≥ 32 works, total stride 32).
        small_input: the CIFAR layout (3×3 stride-1 stem, no max-pool, total stride 8) for 32 px
            images, as in most CIFAR-10 work (e.g. NNSlicer's ResNet-18); the keys stay torchvision's,
            but ``conv1``'s kernel is 3×3, so ImageNet checkpoints do not load.

    Returns:
        A :class:`ResNet` whose state-dict keys and shapes equal torchvision's ``resnet50``
        (with ``in_channels=3``, ``num_classes=1000``).
    """
    return _imagenet_layout(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, image_size, small_input)


@MODELS.register("resnet8", "small ResNet-8 for 28 px inputs (width configurable)")
def resnet8(num_classes: int = 10, in_channels: int = 1, image_size: int = 28, width: int = 16) -> ResNet:
    """Small ResNet-8 (after He et al., CVPR 2016) for 28 px images: 3 stages of one basic block
    (widths w, 2w, 4w), 3×3 stride-1 stem, no max-pool.

    Args:
        num_classes: outputs of the head (``fc``).
        in_channels: image channels.
        image_size: side of the square input.
        width: channels of the first stage (doubles every stage).

    Returns:
        A :class:`ResNet` with torchvision-style names (``conv1``, ``bn1``, ``layerK.0``, ``fc``).
    """
    return ResNet(BasicBlock, [1, 1, 1], num_classes, InputSpec.neutral(in_channels, image_size), width, True)


@MODELS.register("resnet10", "small ResNet-10 for 28 px inputs (width configurable)")
def resnet10(num_classes: int = 10, in_channels: int = 1, image_size: int = 28, width: int = 16) -> ResNet:
    """Small ResNet-10 (after He et al., CVPR 2016) for 28 px images: 4 stages of one basic block
    (widths w … 8w), 3×3 stride-1 stem, no max-pool.

    Args:
        num_classes: outputs of the head (``fc``).
        in_channels: image channels.
        image_size: side of the square input.
        width: channels of the first stage (doubles every stage).

    Returns:
        A :class:`ResNet` with torchvision-style names (``conv1``, ``bn1``, ``layerK.0``, ``fc``).
    """
    return ResNet(
        BasicBlock, [1, 1, 1, 1], num_classes, InputSpec.neutral(in_channels, image_size), width, True
    )


def _cifar_resnet(n: int, num_classes: int, in_channels: int, image_size: int, width: int) -> ResNet:
    return ResNet(BasicBlock, [n, n, n], num_classes, InputSpec.neutral(in_channels, image_size), width, True)


@MODELS.register("resnet20", "CIFAR ResNet-20 (3×3 basic blocks, widths 16/32/64), 32 px")
def resnet20(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, width: int = 16) -> ResNet:
    """CIFAR ResNet-20 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, §4.2).

    Three stages of 3 basic blocks (widths ``width``, 2×, 4×), 3×3 stride-1 stem, no max-pool,
    global average pooling; 1×1-conv (option B) shortcuts where the shape changes.

    Args:
        num_classes: outputs of the head.
        in_channels: image channels.
        image_size: side of the square input (32 for CIFAR; any size ≥ 4 works).
        width: channels of the first stage (16 in the paper).

    Returns:
        A :class:`ResNet` (stem ``conv1+bn1``, 9 residual blocks, ``fc``: 11 blocks).
    """
    return _cifar_resnet(3, num_classes, in_channels, image_size, width)


@MODELS.register("resnet32", "CIFAR ResNet-32 (3×5 basic blocks, widths 16/32/64), 32 px")
def resnet32(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, width: int = 16) -> ResNet:
    """CIFAR ResNet-32 (He et al., CVPR 2016, §4.2): three stages of 5 basic blocks.

    Args:
        num_classes: outputs of the head.
        in_channels: image channels.
        image_size: side of the square input (32 for CIFAR; any size ≥ 4 works).
        width: channels of the first stage (16 in the paper).

    Returns:
        A :class:`ResNet` (stem, 15 residual blocks, ``fc``: 17 blocks).
    """
    return _cifar_resnet(5, num_classes, in_channels, image_size, width)


@MODELS.register("resnet56", "CIFAR ResNet-56 (3×9 basic blocks, widths 16/32/64), 32 px")
def resnet56(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, width: int = 16) -> ResNet:
    """CIFAR ResNet-56 (He et al., CVPR 2016, §4.2): three stages of 9 basic blocks.

    Args:
        num_classes: outputs of the head.
        in_channels: image channels.
        image_size: side of the square input (32 for CIFAR; any size ≥ 4 works).
        width: channels of the first stage (16 in the paper).

    Returns:
        A :class:`ResNet` (stem, 27 residual blocks, ``fc``: 29 blocks).
    """
    return _cifar_resnet(9, num_classes, in_channels, image_size, width)

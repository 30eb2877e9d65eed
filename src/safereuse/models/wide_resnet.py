"""Wide residual networks (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016) in the
pre-activation layout used by adversarial-robustness code (Madry et al.'s CIFAR challenge port,
TRADES, and CARTL — Chen et al., "Cooperative Adversarially-Robust Transfer Learning", ICML 2021).

WRN-d-k: a 3×3 stem conv to 16 channels, three stages (``block1/2/3``) of ``n = (d - 4) / 6``
pre-activation basic blocks with ``16k/32k/64k`` channels (strides 1/2/2), a final BN + activation
(``bn1``), global average pooling and ``fc``. State-dict keys match those repositories::

    conv1.weight
    block1.layer.0.bn1.* / conv1.weight / bn2.* / conv2.weight / convShortcut.weight
    ...
    bn1.*, fc.weight, fc.bias

(``convShortcut`` — a 1×1 strided conv, no BN — exists only where the width changes.) Differences:
pooling is adaptive (identical to their ``avg_pool2d(out, 8)`` at 32 px, and it also works at 28 px);
TRADES' unused ``sub_block1`` is not built (drop ``sub_block1.*`` keys before loading such a
checkpoint); those checkpoints expect raw ``[0, 1]`` pixels, so call
``model.set_normalization((0.0,) * 3, (1.0,) * 3)`` after loading them. CARTL's own code uses
LeakyReLU(0.1) activations: pass ``activation="leaky_relu"``.

Blocks (for last-k freezing): the stem conv is merged into the first residual block
(``"conv1+block1.layer.0"``), then one block per residual block, then ``bn1`` and ``fc``. WRN-34-10 thus
has 15 residual blocks + ``bn1`` + ``fc`` = 17 blocks, the split CARTL uses.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import SafeReuseError
from .contract import InputSpec, ReusableModel
from .registry import MODELS

_ACTIVATIONS = ("relu", "leaky_relu")


def _activation(name: str) -> nn.Module:
    return nn.ReLU(inplace=True) if name == "relu" else nn.LeakyReLU(0.1, inplace=True)


class WideBasicBlock(nn.Module):
    """Pre-activation basic block: BN → act → conv3×3 → BN → act → (dropout) → conv3×3, plus shortcut.

    When the width changes, the shortcut is a 1×1 conv applied to the *activated* input (as in the
    reference implementations); otherwise it is the raw input.
    """

    def __init__(self, cin: int, cout: int, stride: int, drop_rate: float = 0.0, activation: str = "relu"):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = _activation(activation)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = _activation(activation)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = cin == cout and stride == 1
        self.convShortcut = (
            None if self.equal_in_out else nn.Conv2d(cin, cout, 1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = nn.functional.dropout(out, p=self.drop_rate, training=self.training)
        return self.conv2(out) + shortcut


class NetworkBlock(nn.Module):
    """One stage: ``layer`` is an ``nn.Sequential`` of :class:`WideBasicBlock` (key ``blockK.layer.i``)."""

    def __init__(self, n: int, cin: int, cout: int, stride: int, drop_rate: float, activation: str):
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, drop_rate, activation)
                for i in range(n)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(ReusableModel):
    """WRN-depth-widen_factor behind the model contract (see the module docstring for keys/blocks).

    Args:
        depth: total depth ``6n + 4``.
        widen_factor: ``k``; stage widths are ``16k, 32k, 64k``.
        num_classes: outputs of the head.
        input_spec: input channels/size/normalisation.
        drop_rate: dropout between the two convs of every block.
        activation: ``"relu"`` (paper, TRADES) or ``"leaky_relu"`` (slope 0.1, CARTL's code).
    """

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        num_classes: int,
        input_spec: InputSpec,
        drop_rate: float = 0.0,
        activation: str = "relu",
    ) -> None:
        if depth < 10 or (depth - 4) % 6 != 0 or widen_factor < 1:
            raise SafeReuseError(
                f"WRN-{depth}-{widen_factor} is not a wide ResNet",
                fix="use depth = 6n + 4 (10, 16, 22, 28, 34, 40, …) and widen_factor >= 1",
            )
        if activation not in _ACTIVATIONS:
            raise SafeReuseError(
                f"unknown activation {activation!r}", fix=f"use one of: {', '.join(_ACTIVATIONS)}"
            )
        if not 0.0 <= drop_rate < 1.0:
            raise SafeReuseError(f"drop_rate={drop_rate} is out of range", fix="use 0 <= drop_rate < 1")
        super().__init__(input_spec)
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.depth, self.widen_factor = depth, widen_factor
        self.conv1 = nn.Conv2d(input_spec.channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1, drop_rate, activation)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2, drop_rate, activation)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2, drop_rate, activation)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = _activation(activation)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():  # the reference initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return torch.flatten(self.avgpool(self.relu(self.bn1(x))), 1)

    def block_names(self) -> list[str]:
        names = [
            f"{stage}.layer.{i}"
            for stage in ("block1", "block2", "block3")
            for i in range(len(self.get_submodule(stage).layer))
        ]
        names[0] = "conv1+" + names[0]
        return names + ["bn1", "fc"]


def wide_resnet(
    depth: int,
    widen_factor: int,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    drop_rate: float = 0.0,
    activation: str = "relu",
) -> WideResNet:
    """Generic WRN-``depth``-``widen_factor`` (Zagoruyko & Komodakis, BMVC 2016).

    Args:
        depth: total depth ``6n + 4`` (n pre-activation basic blocks per stage).
        widen_factor: width multiplier ``k`` (stage widths ``16k, 32k, 64k``).
        num_classes: outputs of the head (``fc``).
        in_channels: image channels.
        image_size: side of the square input (32 for CIFAR; any size ≥ 4 works).
        drop_rate: dropout between the two convs of each block (0 in the robustness code).
        activation: ``"relu"`` or ``"leaky_relu"`` (slope 0.1, as in CARTL's code).

    Returns:
        A :class:`WideResNet` with ``3n + 2`` blocks (stem merged into the first residual block).
    """
    return WideResNet(
        depth, widen_factor, num_classes, InputSpec.neutral(in_channels, image_size), drop_rate, activation
    )


@MODELS.register("wrn", "Wide ResNet-depth-k, pre-activation (depth, widen_factor; robustness-code keys)")
def wrn(
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    depth: int = 10,
    widen_factor: int = 1,
    drop_rate: float = 0.0,
    activation: str = "relu",
) -> WideResNet:
    """A small pre-activation WRN-``depth``-``widen_factor`` (default WRN-10-1: one block per stage,
    widths 16/32/64, about resnet8's cost on 28 px images).

    Pre-activation matters for CARTL's NEFT: in a post-activation ResNet every conv feeds a
    BatchNorm, which undoes any rescaling of the conv's weight, so NEFT there can only act on the
    head; here each block's last conv feeds the residual sum directly.

    Args:
        num_classes: outputs of the head (``fc``).
        in_channels: image channels.
        image_size: side of the square input.
        depth: ``6n + 4``.
        widen_factor: width multiplier.
        drop_rate: dropout between the two convs of each block.
        activation: ``"relu"`` or ``"leaky_relu"``.

    Returns:
        A :class:`WideResNet` with ``3n + 2`` blocks.

    Example:
        >>> m = wrn(num_classes=5)
        >>> m.block_names()
        ['conv1+block1.layer.0', 'block2.layer.0', 'block3.layer.0', 'bn1', 'fc']
    """
    return wide_resnet(depth, widen_factor, num_classes, in_channels, image_size, drop_rate, activation)


@MODELS.register("wrn-28-4", "Wide ResNet-28-4, pre-activation (robustness-code keys)")
def wrn_28_4(
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    drop_rate: float = 0.0,
    activation: str = "relu",
) -> WideResNet:
    """WRN-28-4 (Zagoruyko & Komodakis, BMVC 2016): 3 stages × 4 blocks, widths 64/128/256.

    Args:
        num_classes: outputs of the head (``fc``).
        in_channels: image channels.
        image_size: side of the square input.
        drop_rate: dropout between the two convs of each block.
        activation: ``"relu"`` or ``"leaky_relu"``.

    Returns:
        A :class:`WideResNet` with 14 blocks (12 residual blocks, ``bn1``, ``fc``); 5.85 M parameters.
    """
    return wide_resnet(28, 4, num_classes, in_channels, image_size, drop_rate, activation)


@MODELS.register("wrn-34-10", "Wide ResNet-34-10, pre-activation (robustness-code keys)")
def wrn_34_10(
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    drop_rate: float = 0.0,
    activation: str = "relu",
) -> WideResNet:
    """WRN-34-10 (Zagoruyko & Komodakis, BMVC 2016), the robust CIFAR backbone of Madry et al.
    (ICLR 2018), TRADES (ICML 2019) and CARTL (ICML 2021): 3 stages × 5 blocks, widths 160/320/640.

    Args:
        num_classes: outputs of the head (``fc``).
        in_channels: image channels.
        image_size: side of the square input.
        drop_rate: dropout between the two convs of each block.
        activation: ``"relu"`` or ``"leaky_relu"`` (CARTL's code).

    Returns:
        A :class:`WideResNet` with 17 blocks (15 residual blocks, ``bn1``, ``fc``); 46.2 M parameters.
    """
    return wide_resnet(34, 10, num_classes, in_channels, image_size, drop_rate, activation)

"""MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018)
with ``torchvision.models.mobilenet_v2`` state-dict keys.

Keys: ``features.0.{0,1}`` (stem conv + BN), ``features.1 … features.17`` (inverted residual blocks,
``conv.0.0``/``conv.0.1`` = expansion conv + BN, ``conv.1.0``/``conv.1.1`` = depthwise conv + BN,
``conv.2``/``conv.3`` = projection conv + BN; the first block has no expansion, so its keys are
``conv.0.*`` depthwise, ``conv.1`` projection, ``conv.2`` BN), ``features.18.{0,1}`` (1×1 conv to
1280 channels + BN) and ``classifier.1`` (the head; ``classifier.0`` is Dropout).

Small inputs (``small_input=True``, the default for ``image_size < 64``): the stem and the first
downsampling stage (the 24-channel one, ``features.2``) use stride 1 instead of 2, so the total stride
is 8 instead of 32 (28 px → 4×4 before pooling, as in common CIFAR ports). Strides have no parameters,
so the keys and shapes are unchanged and ImageNet checkpoints still load with ``strict=True``.

Naming note: the trunk is the submodule ``features`` (torchvision's name), which is also the contract
method :meth:`ReusableModel.features`; reach the trunk with ``model.feature_layers`` or
``model.get_submodule("features")``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import SafeReuseError
from .contract import InputSpec, ReusableModel
from .init import torchvision_init
from .registry import MODELS

# t (expansion), c (output channels), n (repeats), s (stride of the first repeat) — Table 2 of the paper
INVERTED_RESIDUAL_SETTING: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Round ``v`` to a multiple of ``divisor`` without going below 90 % of it (torchvision's rule)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNReLU6(nn.Sequential):
    """conv (no bias) → BN → ReLU6, indexed 0/1/2 like torchvision's ``Conv2dNormActivation``."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expansion 1×1 → depthwise 3×3 → linear projection 1×1, residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(cin, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(ReusableModel):
    """MobileNetV2 behind the model contract (module names follow torchvision).

    Args:
        num_classes: outputs of the head.
        input_spec: input channels/size/normalisation.
        width_mult: channel multiplier (channels rounded to multiples of 8).
        small_input: stride 1 in the stem and in the first downsampling stage.
        dropout: dropout probability before the head.
    """

    head_name = "classifier.1"

    def __init__(
        self,
        num_classes: int,
        input_spec: InputSpec,
        width_mult: float = 1.0,
        small_input: bool = False,
        dropout: float = 0.2,
    ) -> None:
        super().__init__(input_spec)
        cin = _make_divisible(32 * width_mult)
        last = _make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [ConvBNReLU6(input_spec.channels, cin, stride=1 if small_input else 2)]
        first_downsampling = True
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            cout = _make_divisible(c * width_mult)
            if s == 2 and first_downsampling:
                first_downsampling = False
                s = 1 if small_input else s
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(ConvBNReLU6(cin, last, kernel_size=1))
        # registered through ``_modules``: ``features`` is also the contract method's name, which
        # ``add_module`` refuses and attribute assignment would appear to overwrite
        self._modules["features"] = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(last, num_classes))
        self.small_input = small_input
        torchvision_init(self)

    @property
    def feature_layers(self) -> nn.Sequential:
        """The convolutional trunk (state-dict prefix ``features.``)."""
        return self._modules["features"]  # type: ignore[return-value]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.feature_layers(x), 1)
        return self.classifier[0](torch.flatten(x, 1))  # Dropout; classifier.1 is the head

    def block_names(self) -> list[str]:
        return [f"features.{i}" for i in range(len(self.feature_layers))] + ["classifier.1"]


@MODELS.register("mobilenet_v2", "MobileNetV2 (torchvision keys), width_mult option")
def mobilenet_v2(
    num_classes: int = 1000,
    in_channels: int = 3,
    image_size: int = 224,
    width_mult: float = 1.0,
    small_input: bool | None = None,
    dropout: float = 0.2,
) -> MobileNetV2:
    """MobileNetV2 (Sandler et al., CVPR 2018; torchvision ``mobilenet_v2`` keys).

    Args:
        num_classes: outputs of the head (``classifier.1``).
        in_channels: image channels.
        image_size: side of the square input.
        width_mult: channel multiplier (1.0 = the paper's 3.5 M-parameter network).
        small_input: stride 1 in the stem and the first downsampling stage (total stride 8);
            ``None`` = ``image_size < 64``.
        dropout: dropout probability before the head.

    Returns:
        A :class:`MobileNetV2` with 20 blocks (``features.0`` … ``features.18``, ``classifier.1``).
    """
    if width_mult <= 0 or not 0.0 <= dropout < 1.0:
        raise SafeReuseError(
            f"mobilenet_v2: width_mult={width_mult}, dropout={dropout} are out of range",
            fix="use width_mult > 0 and 0 <= dropout < 1",
        )
    small = image_size < 64 if small_input is None else bool(small_input)
    return MobileNetV2(num_classes, InputSpec.imagenet(in_channels, image_size), width_mult, small, dropout)

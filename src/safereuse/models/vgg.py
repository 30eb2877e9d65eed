"""VGG with batch normalisation (Simonyan & Zisserman, "Very Deep Convolutional Networks for
Large-Scale Image Recognition", ICLR 2015), with ``torchvision.models.vgg11_bn`` / ``vgg16_bn``
state-dict keys.

Two layouts:

- **ImageNet** (``small_input=False``, the default for ``image_size >= 64``): exactly torchvision's
  ``features.N.*`` (conv with bias, BN, ReLU per 3×3 conv; max-pool 2×2 per stage),
  ``avgpool = AdaptiveAvgPool2d((7, 7))``, ``classifier.0/3/6`` = Linear(25088, 4096), Linear(4096,
  4096), Linear(4096, num_classes) with ReLU + Dropout between them. torchvision ``.pth`` files load
  with ``strict=True``.
- **small input** (``small_input=True``, the default for ``image_size < 64``, e.g. 28 px grey or
  32 px CIFAR): the same ``features.N`` layers with ``ceil_mode=True`` max-pools (so 28 px shrinks
  28→14→7→4→2→1 instead of collapsing to zero), ``avgpool = AdaptiveAvgPool2d(1)`` and a classifier of
  width ``hidden`` (512 by default): Linear(512, hidden), Linear(hidden, hidden), Linear(hidden, n).
  Key *names* are the same as torchvision's, but the ``classifier.*`` shapes differ, so only the
  ``features.*`` part of an ImageNet checkpoint fits (load those keys with ``strict=False``).

The head is ``classifier.6``; :meth:`VGG.forward_features` returns its input (after ``classifier.0``
to ``classifier.5``, i.e. including the second Dropout, which is the identity in eval mode).

Naming note: the convolutional trunk is the submodule ``features`` (torchvision's name), which is
also the contract method :meth:`ReusableModel.features`. ``model.features(x)`` is the contract method;
reach the trunk with ``model.feature_layers`` or ``model.get_submodule("features")``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import SafeReuseError
from .contract import InputSpec, ReusableModel
from .init import torchvision_init
from .registry import MODELS

# torchvision's configurations "A" (VGG-11) and "D" (VGG-16); "M" is a 2×2 max-pool.
CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(ReusableModel):
    """VGG-BN network behind the model contract (module names follow torchvision).

    Args:
        cfg: channels per 3×3 conv, ``"M"`` for a max-pool (see :data:`CFGS`).
        num_classes: outputs of the head.
        input_spec: input channels/size/normalisation.
        small_input: small-image layout (ceil-mode pools, 1×1 pooling, narrow classifier).
        hidden: width of ``classifier.0`` and ``classifier.3`` (4096 in torchvision).
        dropout: dropout probability in the classifier.
    """

    head_name = "classifier.6"

    def __init__(
        self,
        cfg: list[int | str],
        num_classes: int,
        input_spec: InputSpec,
        small_input: bool = False,
        hidden: int = 4096,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(input_spec)
        layers: list[nn.Module] = []
        cin = input_spec.channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=small_input))
            else:
                cout = int(v)
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
                cin = cout
        # registered through ``_modules``: ``features`` is also the contract method's name, which
        # ``add_module`` refuses and attribute assignment would appear to overwrite
        self._modules["features"] = nn.Sequential(*layers)
        pool = 1 if small_input else 7
        self.avgpool = nn.AdaptiveAvgPool2d((pool, pool))
        self.classifier = nn.Sequential(
            nn.Linear(cin * pool * pool, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, num_classes),
        )
        self.small_input = small_input
        torchvision_init(self)

    @property
    def feature_layers(self) -> nn.Sequential:
        """The convolutional trunk (state-dict prefix ``features.``)."""
        return self._modules["features"]  # type: ignore[return-value]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.feature_layers(x)), 1)
        for i in range(6):  # classifier.0 … classifier.5; classifier.6 is the head
            x = self.classifier[i](x)
        return x

    def block_names(self) -> list[str]:
        names = [
            f"features.{i}+features.{i + 1}"
            for i, m in enumerate(self.feature_layers)
            if isinstance(m, nn.Conv2d)
        ]
        return names + ["classifier.0", "classifier.3", "classifier.6"]


def _vgg(
    arch: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    small_input: bool | None,
    hidden: int | None,
    dropout: float,
) -> VGG:
    small = image_size < 64 if small_input is None else bool(small_input)
    width = hidden if hidden is not None else (512 if small else 4096)
    if width < 1 or not 0.0 <= dropout < 1.0:
        raise SafeReuseError(
            f"{arch}: hidden={width}, dropout={dropout} are out of range",
            fix="use hidden >= 1 and 0 <= dropout < 1",
        )
    return VGG(CFGS[arch], num_classes, InputSpec.imagenet(in_channels, image_size), small, width, dropout)


@MODELS.register("vgg11", "VGG-11 with BN (torchvision vgg11_bn keys); small layout below 64 px")
def vgg11(
    num_classes: int = 1000,
    in_channels: int = 3,
    image_size: int = 224,
    small_input: bool | None = None,
    hidden: int | None = None,
    dropout: float = 0.5,
) -> VGG:
    """VGG-11 with batch norm (Simonyan & Zisserman, ICLR 2015, configuration A; torchvision
    ``vgg11_bn`` keys).

    Args:
        num_classes: outputs of the head (``classifier.6``).
        in_channels: image channels.
        image_size: side of the square input.
        small_input: small-image layout (see the module docstring); ``None`` = ``image_size < 64``.
        hidden: classifier width; ``None`` = 4096 (ImageNet layout) or 512 (small layout).
        dropout: dropout probability in the classifier.

    Returns:
        A :class:`VGG` with 11 blocks (8 conv+BN pairs, ``classifier.0``, ``.3``, ``.6``).
    """
    return _vgg("vgg11", num_classes, in_channels, image_size, small_input, hidden, dropout)


@MODELS.register("vgg16", "VGG-16 with BN (torchvision vgg16_bn keys); small layout below 64 px")
def vgg16(
    num_classes: int = 1000,
    in_channels: int = 3,
    image_size: int = 224,
    small_input: bool | None = None,
    hidden: int | None = None,
    dropout: float = 0.5,
) -> VGG:
    """VGG-16 with batch norm (Simonyan & Zisserman, ICLR 2015, configuration D; torchvision
    ``vgg16_bn`` keys).

    Args:
        num_classes: outputs of the head (``classifier.6``).
        in_channels: image channels.
        image_size: side of the square input.
        small_input: small-image layout (see the module docstring); ``None`` = ``image_size < 64``.
        hidden: classifier width; ``None`` = 4096 (ImageNet layout) or 512 (small layout).
        dropout: dropout probability in the classifier.

    Returns:
        A :class:`VGG` with 16 blocks (13 conv+BN pairs, ``classifier.0``, ``.3``, ``.6``).
    """
    return _vgg("vgg16", num_classes, in_channels, image_size, small_input, hidden, dropout)

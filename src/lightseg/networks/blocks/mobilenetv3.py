"""MobileNetV3-Large, written so that its module names and tensor shapes equal torchvision's
``mobilenet_v3_large``: torchvision's published ImageNet checkpoints load into it unchanged (``strict=True``),
without depending on torchvision.

A. Howard et al., "Searching for MobileNetV3", ICCV 2019, arXiv:1905.02244.

Key layout (as torchvision): ``features.0`` = conv 3x3 stride 2 + BN + Hardswish; ``features.1..15`` =
inverted residual blocks ``features.i.block.{j}`` (1x1 expansion when the width changes, depthwise kxk,
optional squeeze-excitation ``fc1``/``fc2``, 1x1 projection without activation); ``features.16`` = conv 1x1 to 960;
``classifier.0`` / ``classifier.3`` = the two linear layers. BatchNorm uses eps 0.001 and momentum 0.01.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lightseg.networks.fused import NormActSequential

__all__ = [
    "LARGE_SPECS",
    "BlockSpec",
    "ConvBNAct",
    "InvertedResidual",
    "MobileNetV3Large",
    "SqueezeExcitation",
    "make_divisible",
]

BN_EPS = 0.001
BN_MOMENTUM = 0.01


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor`` without going more than 10 % below it (MobileNet rule)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


class BlockSpec(NamedTuple):
    """One inverted residual block: input, kernel, expanded and output widths, SE, activation, stride."""

    in_channels: int
    kernel_size: int
    expanded: int
    out_channels: int
    use_se: bool
    act: str  # "RE" (ReLU) or "HS" (Hardswish)
    stride: int


# features[1..15] of MobileNetV3-Large (r1..r15 in the LV-UNet paper).
LARGE_SPECS: tuple[BlockSpec, ...] = (
    BlockSpec(16, 3, 16, 16, False, "RE", 1),
    BlockSpec(16, 3, 64, 24, False, "RE", 2),
    BlockSpec(24, 3, 72, 24, False, "RE", 1),
    BlockSpec(24, 5, 72, 40, True, "RE", 2),
    BlockSpec(40, 5, 120, 40, True, "RE", 1),
    BlockSpec(40, 5, 120, 40, True, "RE", 1),
    BlockSpec(40, 3, 240, 80, False, "HS", 2),
    BlockSpec(80, 3, 200, 80, False, "HS", 1),
    BlockSpec(80, 3, 184, 80, False, "HS", 1),
    BlockSpec(80, 3, 184, 80, False, "HS", 1),
    BlockSpec(80, 3, 480, 112, True, "HS", 1),
    BlockSpec(112, 3, 672, 112, True, "HS", 1),
    BlockSpec(112, 5, 672, 160, True, "HS", 2),
    BlockSpec(160, 5, 960, 160, True, "HS", 1),
    BlockSpec(160, 5, 960, 160, True, "HS", 1),
)


def _activation(name: str | None) -> nn.Module | None:
    if name is None:
        return None
    return {"RE": nn.ReLU(inplace=True), "HS": nn.Hardswish(inplace=True)}[name]


class ConvBNAct(NormActSequential):
    """Conv (no bias) -> BatchNorm -> optional activation, indexed 0, 1, 2 like torchvision."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: str | None = "HS",
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False
            ),
            nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM),
        ]
        activation = _activation(act)
        if activation is not None:
            layers.append(activation)
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Channel attention: global average pool, 1x1 reduce (ReLU), 1x1 expand, Hardsigmoid gate."""

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = self.fc2(F.relu(self.fc1(scale)))
        return x * F.hardsigmoid(scale)


class InvertedResidual(nn.Module):
    """MobileNetV3 inverted residual block; ``block`` holds the layers under torchvision's indices."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        if spec.stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {spec.stride}.")
        self.use_res_connect = spec.stride == 1 and spec.in_channels == spec.out_channels
        layers: list[nn.Module] = []
        if spec.expanded != spec.in_channels:
            layers.append(ConvBNAct(spec.in_channels, spec.expanded, 1, act=spec.act))
        layers.append(
            ConvBNAct(spec.expanded, spec.expanded, spec.kernel_size, spec.stride, groups=spec.expanded, act=spec.act)
        )
        if spec.use_se:
            layers.append(SqueezeExcitation(spec.expanded, make_divisible(spec.expanded // 4, 8)))
        layers.append(ConvBNAct(spec.expanded, spec.out_channels, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = spec.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res_connect else y


class MobileNetV3Large(nn.Module):
    """The full MobileNetV3-Large classifier (5,483,032 parameters with 1000 classes), torchvision's layout.

    Used to validate and load ImageNet checkpoints strictly; segmentation networks take ``features[:n]``.

    Args:
        in_channels: input channels of the stem (3 for the ImageNet weights).
        num_classes: classifier outputs.
        dropout: dropout before the last linear layer.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNAct(in_channels, 16, 3, stride=2, act="HS")]
        layers += [InvertedResidual(spec) for spec in LARGE_SPECS]
        layers.append(ConvBNAct(160, 960, 1, act="HS"))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(960, 1280), nn.Hardswish(inplace=True), nn.Dropout(dropout), nn.Linear(1280, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(x)

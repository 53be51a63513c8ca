"""Reusable block families."""

from __future__ import annotations

from lightseg.networks.blocks.cmunext import (
    CMUNeXtBlock,
    CMUNeXtStage,
    ConvActNorm,
    ConvNormAct,
    ResidualDepthwise,
    SkipFusion,
    UpConv,
)
from lightseg.networks.blocks.mininet import DMResBlock
from lightseg.networks.blocks.mobilenetv3 import ConvBNAct, InvertedResidual, MobileNetV3Large, SqueezeExcitation
from lightseg.networks.blocks.vanilla import FusibleBlock, SeriesActivation, fuse_conv_bn

__all__ = [
    "CMUNeXtBlock",
    "CMUNeXtStage",
    "ConvActNorm",
    "ConvBNAct",
    "ConvNormAct",
    "DMResBlock",
    "FusibleBlock",
    "InvertedResidual",
    "MobileNetV3Large",
    "ResidualDepthwise",
    "SeriesActivation",
    "SkipFusion",
    "SqueezeExcitation",
    "UpConv",
    "fuse_conv_bn",
]

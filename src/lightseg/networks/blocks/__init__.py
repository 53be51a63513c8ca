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

__all__ = [
    "CMUNeXtBlock",
    "CMUNeXtStage",
    "ConvActNorm",
    "ConvNormAct",
    "ResidualDepthwise",
    "SkipFusion",
    "UpConv",
]

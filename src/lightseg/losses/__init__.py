"""Segmentation losses."""

from __future__ import annotations

from lightseg.losses.alpha_weighted import AlphaWeightedLoss, instance_alpha, soft_jaccard_per_sample
from lightseg.losses.bce_dice import BCEDiceLoss, soft_dice_per_sample
from lightseg.losses.marginal import LiteNeXtLoss, MarginalWeightLoss, marginal_weight_map

__all__ = [
    "AlphaWeightedLoss",
    "BCEDiceLoss",
    "LiteNeXtLoss",
    "MarginalWeightLoss",
    "instance_alpha",
    "marginal_weight_map",
    "soft_dice_per_sample",
    "soft_jaccard_per_sample",
]

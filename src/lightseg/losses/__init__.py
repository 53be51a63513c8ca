"""Segmentation losses."""

from __future__ import annotations

from lightseg.losses.alpha_weighted import AlphaWeightedLoss, instance_alpha, soft_jaccard_per_sample
from lightseg.losses.bce_dice import BCEDiceLoss, soft_dice_per_sample

__all__ = ["AlphaWeightedLoss", "BCEDiceLoss", "instance_alpha", "soft_dice_per_sample", "soft_jaccard_per_sample"]

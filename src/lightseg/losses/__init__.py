"""Segmentation losses."""

from __future__ import annotations

from lightseg.losses.bce_dice import BCEDiceLoss, soft_dice_per_sample

__all__ = ["BCEDiceLoss", "soft_dice_per_sample"]

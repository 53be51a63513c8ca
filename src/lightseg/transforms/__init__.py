"""MONAI dictionary transforms for 2D inputs."""

from __future__ import annotations

from lightseg.transforms.prepare import PrepareImageLabeld, binarize_mask, to_channels

__all__ = ["PrepareImageLabeld", "binarize_mask", "to_channels"]

"""MONAI dictionary transforms for 2D inputs."""

from __future__ import annotations

from lightseg.transforms.prepare import PrepareImageLabeld, to_channels

__all__ = ["PrepareImageLabeld", "to_channels"]

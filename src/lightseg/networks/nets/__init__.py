"""One file per architecture; each assembles blocks from :mod:`lightseg.networks.blocks`."""

from __future__ import annotations

from lightseg.networks.nets.cmunext import CMUNeXt
from lightseg.networks.nets.litenext import LiteNeXt
from lightseg.networks.nets.lvunet import LVUNet
from lightseg.networks.nets.mininet import MiniNet

__all__ = ["CMUNeXt", "LVUNet", "LiteNeXt", "MiniNet"]

"""One file per architecture; each assembles blocks from :mod:`lightseg.networks.blocks`."""

from __future__ import annotations

from lightseg.networks.nets.cmunext import CMUNeXt

__all__ = ["CMUNeXt"]

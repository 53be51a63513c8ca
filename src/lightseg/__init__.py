"""lightseg: lightweight 2D medical image segmentation networks as MONAI bundles."""

from __future__ import annotations

from lightseg.networks import CMUNeXt, create_network, list_networks

__version__ = "0.1.0"

__all__ = ["CMUNeXt", "__version__", "create_network", "list_networks"]

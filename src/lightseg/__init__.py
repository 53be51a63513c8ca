"""lightseg: lightweight 2D medical image segmentation networks as MONAI bundles."""

from __future__ import annotations

from lightseg.deploy.runtime import preload_cudart as _preload_cudart
from lightseg.deploy.runtime import sdk_installed as _sdk_installed

if _sdk_installed():  # beside the MONAI Deploy SDK, `import monai` loads Holoscan, which needs libcudart.so.13
    _preload_cudart()

from lightseg.networks import CMUNeXt, create_network, list_networks

__version__ = "0.1.0"

__all__ = ["CMUNeXt", "__version__", "create_network", "list_networks"]

"""A stand-in for torchvision, NOT torchvision (see ../pyproject.toml).

MONAI Label 0.8.5 imports ``torchvision.utils`` at import time; lightseg's MONAI Label environment installs this
package instead of the real torchvision, whose PyPI binary does not load with the CPU torch wheel.
"""

__version__ = "0.0.0+lightseg.standin"
STANDIN = True

"""Layer factory helpers shared by all block families.

Activations and normalizations are given as a name or a ``(name, kwargs)`` pair and looked up in MONAI's
``Act``/``Norm`` factories. MONAI has no Hardswish (used by CMUNeXt-XXS and MobileNetV3), so it is registered
here once, under the name ``"hardswish"``.
"""

from __future__ import annotations

from monai.networks.layers.factories import Act, Norm, split_args
from torch import nn

__all__ = ["get_act", "get_norm"]

if "HARDSWISH" not in Act.components:
    Act.add_factory_class("hardswish", nn.Hardswish, "torch.nn.Hardswish (MobileNetV3).")


def get_act(act: str | tuple) -> nn.Module:
    """An activation module from a name or ``(name, kwargs)``."""
    name, kwargs = split_args(act)
    return Act[name](**kwargs)


def get_norm(norm: str | tuple, channels: int, spatial_dims: int = 2) -> nn.Module:
    """A normalization module over ``channels`` from a name or ``(name, kwargs)``."""
    name, kwargs = split_args(norm)
    return Norm[name, spatial_dims](channels, **kwargs)

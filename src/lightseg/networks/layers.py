"""Layer factory helpers shared by all block families.

Activations and normalizations are given as a name or a ``(name, kwargs)`` pair and looked up in MONAI's
``Act``/``Norm`` factories. MONAI has no Hardswish (used by CMUNeXt-XXS and MobileNetV3), so it is registered
here once, under the name ``"hardswish"``.
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Act, Norm, split_args
from torch import nn

__all__ = ["check_input_size", "get_act", "get_norm"]

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


def check_input_size(x: torch.Tensor, divisor: int, name: str) -> None:
    """Raise a ``ValueError`` naming the nearest valid size unless ``x`` is ``(B, C, H, W)`` with H, W divisible by
    ``divisor`` (TorchScript-compatible)."""
    h, w = x.shape[-2], x.shape[-1]
    if x.dim() != 4 or h % divisor != 0 or w % divisor != 0:
        raise ValueError(
            f"{name} expects input (B, C, H, W) with H and W divisible by {divisor}, got shape {list(x.shape)}; "
            f"resize or pad to ({(h + divisor - 1) // divisor * divisor}, {(w + divisor - 1) // divisor * divisor})."
        )

"""Network registry: build any lightseg network by name.

Each registered entry point fixes a published variant's hyperparameters and passes ``**overrides`` on, so
``create_network("cmunext_xxs", in_channels=1, out_channels=3)`` is the paper's model for 1-channel input
and a 3-channel head.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["create_network", "list_networks", "network_defaults", "register_network"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_DEFAULTS: dict[str, dict] = {}


def register_network(name: str, builder: Callable[..., nn.Module], **defaults) -> None:
    """Register ``builder(**defaults, **overrides)`` under a lowercase snake-case ``name``."""
    if name != name.lower() or " " in name:
        raise ValueError(f"network names are lowercase snake case, got {name!r}.")
    if name in _REGISTRY:
        raise KeyError(f"network {name!r} is already registered.")
    _REGISTRY[name] = builder
    _DEFAULTS[name] = dict(defaults)


def list_networks() -> list[str]:
    """Names accepted by :func:`create_network`, sorted."""
    return sorted(_REGISTRY)


def network_defaults(name: str) -> dict:
    """The hyperparameters a registered variant fixes (a copy)."""
    _check(name)
    return dict(_DEFAULTS[name])


def create_network(name: str, **overrides) -> nn.Module:
    """Build the registered network ``name``; keyword ``overrides`` replace the variant's defaults.

    Raises:
        KeyError: unknown name (the message lists the valid ones).
    """
    _check(name)
    return _REGISTRY[name](**{**_DEFAULTS[name], **overrides})


def _check(name: str) -> None:
    if name not in _REGISTRY:
        raise KeyError(f"unknown network {name!r}; available: {', '.join(list_networks())}.")

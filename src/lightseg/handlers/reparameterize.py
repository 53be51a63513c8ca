"""Switch a network to its deployment form inside a MONAI workflow (evaluation or inference)."""

from __future__ import annotations

import logging

from ignite.engine import Engine, Events
from torch import nn

from lightseg.handlers.checkpoint import unwrap
from lightseg.networks.blocks.vanilla import reparameterize_model
from lightseg.utils import as_bool

__all__ = ["Reparameterize"]

logger = logging.getLogger(__name__)


class Reparameterize:
    """Fuse ``network`` in place (:func:`lightseg.networks.reparameterize_model`) when the engine starts.

    List it after the ``CheckpointLoader`` in an evaluator's handlers: the trained (training-form) weights are
    loaded first, then fused, and the engine runs the deployment form. Never use it on a network that is still
    being trained.

    Args:
        network: the network the engine runs.
        enabled: False (or ``"false"``) to keep the training form.
        allow_inexact: fuse even when deep training has not reached the identity (the result differs).
    """

    def __init__(self, network: nn.Module, enabled: bool | str = True, allow_inexact: bool = False) -> None:
        self.network = network
        self.enabled = as_bool(enabled)
        self.allow_inexact = allow_inexact

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        net = unwrap(self.network)
        before = sum(p.numel() for p in net.parameters())
        reparameterize_model(net, inplace=True, allow_inexact=self.allow_inexact)
        after = sum(p.numel() for p in net.parameters())
        logger.info("deployment form: %s parameters -> %s", f"{before:,}", f"{after:,}")

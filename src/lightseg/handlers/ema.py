"""EMA update of SeRP's target feature extractor after every optimizer step."""

from __future__ import annotations

from ignite.engine import Engine, Events
from torch import nn

from lightseg.handlers.checkpoint import unwrap

__all__ = ["EMAUpdate"]


class EMAUpdate:
    """Call ``serp.update_target()`` at every ``ITERATION_COMPLETED`` of the trainer (after the optimizer step).

    Args:
        serp: a :class:`lightseg.training.SeRP` (or a DDP wrapper of one).
        momentum: overrides the wrapper's momentum when given.
    """

    def __init__(self, serp: nn.Module, momentum: float | None = None) -> None:
        serp = unwrap(serp)
        if not hasattr(serp, "update_target"):
            raise TypeError(f"{type(serp).__name__} has no target to update (expected lightseg.training.SeRP).")
        self.serp = serp
        self.momentum = momentum

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        self.serp.update_target(self.momentum)

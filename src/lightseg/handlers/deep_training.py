"""Deep training (VanillaNet, LV-UNet eq. 3): the LeakyReLU between the two 1x1 convolutions of every fusible
block fades from ReLU to the identity over the deep-training epochs, so the blocks can be fused exactly.

Cosine schedule (LV-UNet): ``a(e) = 1 - cos(pi/2 * (e - 1) / (E - 1))`` for the 1-based epoch ``e`` being trained,
``E`` deep-training epochs: the first epoch trains with a ReLU (``a = 0``), epoch ``E`` and later with the
identity (``a = 1``, exactly). The authors' code evaluates ``1 - cos(pi e / 2E)`` at the 0-based epoch and so
ends at ``a = 0.99476`` after 300 epochs: its "fused" model is not exactly the trained one. Linear schedule
(VanillaNet): ``a(e) = (e - 1) / (E - 1)``.

Within a time budget (``budget``: a :class:`~lightseg.handlers.TimeBudget` with ``minutes`` set) the same curve is
evaluated at the budget's schedule position ``p`` of the epoch instead of ``(e - 1) / (E - 1)``: ``a = 1`` exactly
during the budget's last epoch, which the budget plans so that it runs whole.
"""

from __future__ import annotations

import logging
import math

from ignite.engine import Engine, Events
from torch import nn

from lightseg.handlers.checkpoint import unwrap
from lightseg.networks.blocks.vanilla import set_deep_training_slope

__all__ = ["DeepTrainingSchedule", "deep_training_slope", "slope_at"]

logger = logging.getLogger(__name__)


def slope_at(position: float, schedule: str = "cosine") -> float:
    """Slope ``a`` at schedule position ``position`` in [0, 1] (exactly 1.0 from 1 on)."""
    if schedule not in ("cosine", "linear"):
        raise ValueError(f"schedule must be 'cosine' or 'linear', got {schedule!r}.")
    t = min(max(float(position), 0.0), 1.0)
    if t >= 1.0:
        return 1.0
    return 1.0 - math.cos(math.pi / 2 * t) if schedule == "cosine" else t


def deep_training_slope(epoch: int, total: int, schedule: str = "cosine") -> float:
    """Slope ``a`` for 1-based ``epoch`` of ``total`` deep-training epochs (1.0 from ``total`` on)."""
    if epoch < 1 or total < 1:
        raise ValueError(f"epoch and total must be >= 1, got {epoch}, {total}.")
    return slope_at(1.0 if epoch >= total else (epoch - 1) / (total - 1), schedule)


class DeepTrainingSchedule:
    """Set the deep-training slope of every fusible block at the start of each epoch.

    Args:
        network: the trained network (DDP wrappers are removed); blocks are found through their
            ``set_deep_training_slope`` method.
        epochs: deep-training epochs E (default: the trainer's ``max_epochs``).
        schedule: ``"cosine"`` (LV-UNet) or ``"linear"`` (VanillaNet).
        budget: a :class:`~lightseg.handlers.TimeBudget`; when it has a budget, the slope follows its schedule
            position (``fraction()``) instead of the epoch, and ``epochs`` is not used.

    The value is stored in ``engine.state.deep_training_slope`` (log it with a tracking handler's
    ``state_attributes``). On resume the slope is recomputed from the epoch, so it is never stale.

    Fine-tuning: when training starts (``STARTED``, after a ``CheckpointLoader`` listed before this handler, as
    MONAI Label prepends one) with every block already at slope 1, the weights come from a finished deep
    training; the slope then stays 1 instead of restarting at a ReLU, which would change the loaded network's
    function (``fine_tune_keeps_identity=False`` restores the plain schedule).
    """

    def __init__(
        self,
        network: nn.Module,
        epochs: int | None = None,
        schedule: str = "cosine",
        fine_tune_keeps_identity: bool = True,
        budget=None,
    ) -> None:
        deep_training_slope(1, 1, schedule)  # validates the name
        self.network = network
        self.epochs = epochs
        self.budget = budget if budget is not None and getattr(budget, "enabled", False) else None
        self.schedule = schedule
        self.fine_tune_keeps_identity = fine_tune_keeps_identity
        self.finished_before_start = False

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._check_loaded)
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def _check_loaded(self, engine: Engine) -> None:
        slopes = {float(m.slope) for m in unwrap(self.network).modules() if hasattr(m, "set_deep_training_slope")}
        self.finished_before_start = bool(self.fine_tune_keeps_identity and slopes == {1.0})
        if self.finished_before_start:
            logger.info("deep training already finished in the loaded weights (slope 1): fine-tuning keeps slope 1")

    def __call__(self, engine: Engine) -> None:
        if self.finished_before_start:
            slope = 1.0
        elif self.budget is not None:
            slope = slope_at(self.budget.fraction(), self.schedule)
        else:
            slope = deep_training_slope(int(engine.state.epoch), int(self.epochs or engine.state.max_epochs),
                                        self.schedule)  # fmt: skip
        count = set_deep_training_slope(unwrap(self.network), slope)
        if count == 0:
            raise ValueError(f"{type(unwrap(self.network)).__name__} has no fusible blocks for deep training.")
        engine.state.deep_training_slope = slope
        logger.debug("epoch %d: deep-training slope %.6f on %d blocks", engine.state.epoch, slope, count)

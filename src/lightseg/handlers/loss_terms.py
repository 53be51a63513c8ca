"""Epoch means of the separate terms of a composite loss, as trainer metrics (so StatsHandler prints them and
MLFlowHandler logs them next to the total ``train_loss``)."""

from __future__ import annotations

from collections import defaultdict

from ignite.engine import Engine, Events

__all__ = ["LossTermsLogger"]


class LossTermsLogger:
    """Average ``loss.last_terms`` (a ``{name: float}`` the loss module sets at each call) over the epoch and
    store ``{prefix}{name}`` in ``engine.state.metrics`` at ``EPOCH_COMPLETED``.

    Attach it before the MLflow/TensorBoard handlers in ``train#handlers`` so that they see the values.

    Args:
        loss: a loss module with a ``last_terms`` attribute.
        prefix: metric name prefix.
    """

    def __init__(self, loss, prefix: str = "train_loss_") -> None:
        if not hasattr(loss, "last_terms"):
            raise TypeError(f"{type(loss).__name__} does not record its terms (no 'last_terms' attribute).")
        self.loss = loss
        self.prefix = prefix
        self._sums: dict[str, float] = defaultdict(float)
        self._count = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.publish)

    def reset(self, engine: Engine) -> None:
        self._sums.clear()
        self._count = 0

    def accumulate(self, engine: Engine) -> None:
        for name, value in self.loss.last_terms.items():
            self._sums[name] += float(value)
        self._count += 1

    def publish(self, engine: Engine) -> None:
        for name, total in self._sums.items():
            engine.state.metrics[f"{self.prefix}{name}"] = total / max(self._count, 1)

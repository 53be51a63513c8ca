"""Early stopping on the validation key metric, resumable.

Ignite's ``EarlyStopping`` is driven by the evaluator's ``COMPLETED`` event (so patience counts validations,
whatever ``val_interval`` is) and terminates the trainer. This wrapper is attached to the trainer like
:class:`~lightseg.handlers.ModelSaver` (a bundle config cannot give the evaluator's handlers a reference to the
trainer without a cycle) and keeps Ignite's counter and best score in the trainer's state
(``state_dict_user_keys``), so :class:`~lightseg.handlers.ResumableCheckpoint` saves them and a resumed run keeps
its patience.
"""

from __future__ import annotations

import logging
import math

from ignite.engine import Engine, Events
from ignite.handlers import EarlyStopping as _IgniteEarlyStopping

from lightseg.utils import as_bool

__all__ = ["EarlyStopping"]

logger = logging.getLogger(__name__)


class EarlyStopping:
    """Stop training when the validation metric has not improved for ``patience`` validations.

    Args:
        evaluator: the validation evaluator.
        patience: validations without improvement before stopping (4 in Mini-Net's paper).
        metric_name: metric in ``evaluator.state.metrics`` (higher is better); defaults to the key metric.
        min_delta: an increase of at most ``min_delta`` counts as no improvement.
        cumulative_delta: measure ``min_delta`` from the best score rather than from the previous validation.
        enabled: False to attach nothing (train for all epochs).
        start_above: validations are counted against ``patience`` only from the first whose score exceeds this
            (``0.0``: a model that has not yet predicted any foreground, IoU 0, is not judged; Mini-Net at the
            paper's learning rate needs about 10 epochs on Kvasir-SEG to get there). ``None``: every validation
            counts (Ignite's behaviour).
    """

    STATE_KEYS = ("early_stopping_counter", "early_stopping_best")

    def __init__(
        self,
        evaluator: Engine,
        patience: int = 4,
        metric_name: str | None = None,
        min_delta: float = 0.0,
        cumulative_delta: bool = False,
        enabled: bool = True,
        start_above: float | None = None,
    ) -> None:
        if int(patience) < 1:
            raise ValueError(f"patience must be >= 1, got {patience}.")
        self.evaluator = evaluator
        self.patience = int(patience)
        self.metric_name = metric_name
        self.min_delta = float(min_delta)
        self.cumulative_delta = as_bool(cumulative_delta)
        self.enabled = as_bool(enabled)
        self.start_above = None if start_above is None else float(start_above)
        self._trainer: Engine | None = None
        self._stopper: _IgniteEarlyStopping | None = None

    def _score(self, evaluator: Engine) -> float:
        name = self.metric_name or getattr(evaluator.state, "key_metric_name", None)
        if name is None:
            raise ValueError("EarlyStopping needs metric_name: the evaluator has no key metric.")
        return float(evaluator.state.metrics[name])

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        self._trainer = engine
        for key in self.STATE_KEYS:
            if key not in engine.state_dict_user_keys:
                engine.state_dict_user_keys.append(key)
        engine.state.early_stopping_counter = 0
        engine.state.early_stopping_best = math.nan  # nan: no validation yet
        self._stopper = _IgniteEarlyStopping(
            self.patience, self._score, engine, min_delta=self.min_delta, cumulative_delta=self.cumulative_delta
        )
        self._stopper.logger.setLevel(logging.WARNING)  # its per-validation counter messages are INFO noise
        self.evaluator.add_event_handler(Events.COMPLETED, self.validated)

    def validated(self, evaluator: Engine) -> None:
        trainer, stopper = self._trainer, self._stopper
        best = float(trainer.state.early_stopping_best)
        if math.isnan(best) and self.start_above is not None:
            score = self._score(evaluator)
            if score <= self.start_above:
                logger.info(
                    "early stopping: validation score %.4f at epoch %d is not above %g, not counted against the "
                    "patience", score, trainer.state.epoch, self.start_above,
                )  # fmt: skip
                return
        state = stopper.state_dict()
        state.update(counter=int(trainer.state.early_stopping_counter), best_score=None if math.isnan(best) else best)
        stopper.load_state_dict(state)
        stopper(evaluator)
        trainer.state.early_stopping_counter = int(stopper.counter)
        trainer.state.early_stopping_best = math.nan if stopper.best_score is None else float(stopper.best_score)
        if trainer.should_terminate:
            logger.info(
                "early stopping at epoch %d: no improvement of the validation metric for %d validations (best %.4f)",
                trainer.state.epoch, self.patience, trainer.state.early_stopping_best,
            )  # fmt: skip

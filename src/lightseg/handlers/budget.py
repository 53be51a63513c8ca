"""Training within a wall-clock budget (``--time_budget <minutes>``): the best model a machine trains in N minutes.

:class:`TimeBudget` is attached to the trainer. With a budget (``minutes`` set) it

- counts the wall-clock time from the trainer's ``STARTED`` event (the datasets are cached before it, so their
  caching does not count; starting MLflow, validation and checkpoint writing do), plus the time of the earlier
  sessions of a resumed run (its :meth:`~TimeBudget.state_dict` is part of the checkpoint);
- estimates an epoch's cost (training time, the longest of this session's last three epochs, its warm-up epoch
  excluded once another was measured, plus the last validation's time) and from it the **last** epoch;
- exposes the **schedule position** of the current epoch, :meth:`~TimeBudget.fraction`, in [0, 1]: the time used
  when the epoch started divided by the time at which the last epoch is expected to start (with epochs of equal
  length, the epoch fraction ``(e - 1) / (E - 1)`` of those epochs), never decreasing, at least the epoch fraction
  of the ``epochs`` cap, and exactly 1.0 in the last epoch. The cosine learning rate (:class:`BudgetCosineLR`,
  made by :func:`budget_lr_scheduler`) and LV-UNet's deep-training slope
  (:class:`~lightseg.handlers.DeepTrainingSchedule` with ``budget``) read it: the last epoch runs at the final
  learning rate and at slope 1.0 exactly;
- stops the training through Ignite's ``terminate``, so the ``COMPLETED`` handlers (final model, settings,
  promotion, MLflow) run as after a full run. Two ways, by ``final_epoch``:

  - ``final_epoch=False`` (default): the last epoch is the one the budget is expected to end in; training stops
    in the middle of an epoch as soon as the time used plus one validation reaches the budget (Ignite's
    ``terminate_epoch``: the epoch's end handlers, validation and checkpoint, still run). It ends on time.
  - ``final_epoch=True`` (LV-UNet's deep training, whose model fuses only at slope 1): epochs always run whole;
    the last is the one after which another epoch would not fit, and training stops after it, up to one epoch
    before the budget. When the budget runs out before a last epoch could be planned (a budget shorter than two
    epochs, or epochs that became slower), one more epoch runs as the last, past the budget, with a warning;

- validates (it replaces the bundle's ``ValidationHandler``) every ``val_interval`` epochs, skipping a due
  validation while the validations so far took more than ``val_share`` (10 %) of the time used, and always after
  the final epoch, so the model at the end of the schedule is always a candidate for the best checkpoint;
- records ``time_budget_elapsed_s``, ``time_budget_position`` and ``epochs_reached`` in the trainer's state (the
  bundles log them to MLflow; :class:`~lightseg.handlers.RunRecorder` writes them, with ``time_budget_stopped_by``,
  into ``settings.json``).

Without a budget it attaches nothing: the paper's epoch recipe runs exactly as before. The ``epochs`` setting
stays an upper bound. In a distributed run every decision (last epoch, stop, validate) is rank 0's, broadcast.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events

__all__ = [
    "BudgetCosineLR",
    "TimeBudget",
    "budget_handler",
    "budget_lr_scheduler",
    "parse_time_budget",
    "resolve_time_budget",
]

logger = logging.getLogger(__name__)

_OFF_WORDS = ("off", "false", "none", "null", "no", "")


class _Off:
    """``parse_time_budget``'s answer for an explicit "no budget" (``--time_budget off``)."""

    def __repr__(self) -> str:
        return "OFF"


OFF = _Off()


def parse_time_budget(value: Any) -> float | _Off | None:
    """``--time_budget`` as minutes: None when not given, :data:`OFF` for an explicit ``off``/``false``/``0``.

    Raises:
        ValueError: not a number of minutes (or a negative one).
    """
    if value is None:
        return None
    if value is False or (isinstance(value, str) and value.strip().lower() in _OFF_WORDS):
        return OFF
    try:
        minutes = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"--time_budget {value!r}: give the training time in minutes (e.g. 15), or off.") from None
    if not math.isfinite(minutes) or minutes < 0:
        raise ValueError(f"--time_budget {value!r}: give a positive number of minutes (e.g. 15), or off.")
    return OFF if minutes == 0 else minutes


def resolve_time_budget(value: Any, resume: Any = False, ckpt_dir: str | os.PathLike | None = None) -> float | None:
    """The budget (minutes) of this training, or None.

    ``value`` is the ``time_budget`` setting. When it is not given (null) and the run is resumed, the budget the
    run was started with (its ``settings.json`` in ``ckpt_dir``) is continued, so ``--resume true`` alone finishes
    a budget run within its budget; ``--time_budget off`` resumes without one.
    """
    from lightseg.utils import as_bool

    minutes = parse_time_budget(value)
    if minutes is OFF:
        return None
    if minutes is not None:
        return float(minutes)
    if not as_bool(resume) or not ckpt_dir:
        return None
    from lightseg.settings import read_settings

    try:
        previous = read_settings(ckpt_dir) or {}
    except ValueError:
        return None
    recorded = parse_time_budget(previous.get("time_budget"))
    if recorded is None or recorded is OFF:
        return None
    logger.info("resuming a run started with --time_budget %g: continuing that budget (--time_budget off: none)",
                recorded)  # fmt: skip
    return float(recorded)


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _rank0(values: Sequence[float]) -> list[float]:
    """``values`` as rank 0 has them (a broadcast in a distributed run; the values themselves otherwise)."""
    if not _distributed():
        return [float(v) for v in values]
    import torch.distributed as dist

    nccl = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return tensor.tolist()


class TimeBudget:
    """Stop the training when a wall-clock budget is used, with the schedules laid over the budget.

    See the module docstring for the rules.

    Args:
        minutes: the budget in minutes; None (or ``off``) attaches nothing.
        validator: the validation evaluator (``run(epoch)``), run by this handler instead of a
            ``ValidationHandler`` when there is a budget; None: no validation.
        val_interval: validate every N epochs (the last epoch is always validated).
        val_share: skip a due validation while the validations so far took more than this share of the time.
        final_epoch: run every epoch whole and end with a planned last epoch, even past the budget (LV-UNet's
            deep training, whose model fuses only at slope 1); False: stop mid-epoch when the budget is used.
        clock: seconds, monotonic (tests pass a fake clock).
    """

    STATE_ATTRIBUTES = ("time_budget_elapsed_s", "time_budget_position", "epochs_reached")
    RECENT = 3

    def __init__(
        self,
        minutes: Any = None,
        validator: Any = None,
        val_interval: int = 1,
        val_share: float = 0.1,
        final_epoch: Any = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from lightseg.utils import as_bool

        parsed = parse_time_budget(minutes)
        self.minutes = None if parsed is None or parsed is OFF else float(parsed)
        self.validator = validator
        self.val_interval = max(1, int(val_interval))
        if not 0.0 <= float(val_share) <= 1.0:
            raise ValueError(f"val_share must be in [0, 1], got {val_share}.")
        self.val_share = float(val_share)
        self.final_epoch = as_bool(final_epoch)
        self.clock = clock
        self._engine: Engine | None = None
        self._schedulers: list[Any] = []
        self._offset = 0.0  # seconds used by earlier sessions (from the checkpoint)
        self._start: float | None = None
        self._epoch_start: float | None = None
        self._session_epochs = 0  # epochs started in this session
        self._val_in_epoch = 0.0
        self._iteration_end: float | None = None
        self._iteration_time = 0.0  # the last iteration's duration (s)
        self._recent: list[float] = []  # training time (s, validation excluded) of this session's last epochs
        self._train_cost: float | None = None  # estimated training time of one epoch (s)
        self._val_time = 0.0  # seconds spent validating, all sessions
        self._val_cost: float | None = None  # the last validation's duration (s)
        self._validations = 0
        self._position = 0.0
        self._planned_epoch = -1
        self._last = False  # this epoch runs at the end of the schedule (position 1)
        self._ending = False  # the budget ended this epoch early: it is the final one
        self._next_last = False  # the next epoch is the last (decided when the budget ran out)
        self._overrun_warned = False
        self._logged_end = False
        self.stopped_by: str | None = None

    # ------------------------------------------------------------------------------------------------------------
    # what the schedules read

    @property
    def enabled(self) -> bool:
        return self.minutes is not None

    @property
    def seconds(self) -> float:
        return 60.0 * float(self.minutes or 0.0)

    @property
    def state_attributes(self) -> list[str]:
        """The trainer-state attributes to log (MLflow ``state_attributes``): none without a budget."""
        return list(self.STATE_ATTRIBUTES) if self.enabled else []

    def elapsed(self) -> float:
        """Seconds of the budget used so far (earlier sessions included)."""
        if self._start is None:
            return self._offset
        return self._offset + (self.clock() - self._start)

    def remaining(self) -> float:
        return max(0.0, self.seconds - self.elapsed())

    def fraction(self) -> float:
        """The schedule position of the current epoch in [0, 1]: 1.0 (exactly) during the last epoch.

        The one value every budget-driven schedule reads (the cosine learning rate, the deep-training slope).
        """
        engine = self._engine
        if engine is not None and self._planned_epoch != int(engine.state.epoch) and engine.state.epoch > 0:
            self._plan(engine)
        return 1.0 if self._last else self._position

    @property
    def is_last_epoch(self) -> bool:
        return self._last

    def follow(self, scheduler: Any) -> Any:
        """Refresh (or step) ``scheduler`` at the start of every epoch, once its position is known; returns it."""
        self._schedulers.append(scheduler)
        return scheduler

    # ------------------------------------------------------------------------------------------------------------
    # checkpoint

    def state_dict(self) -> dict:
        return {
            "minutes": self.minutes,
            "elapsed": float(self.elapsed()),
            "train_cost": self._train_cost,
            "val_time": float(self._val_time),
            "val_cost": self._val_cost,
            "validations": int(self._validations),
            "position": float(self._position),
        }

    def start_without_state(self, path: Any) -> None:
        """Called on resuming from a checkpoint written without a budget: this budget starts now, from zero."""
        logger.info("checkpoint %s was written without a time budget: the %g minutes start now", path, self.minutes)

    def load_state_dict(self, state: dict) -> None:
        self._offset = float(state["elapsed"])
        self._train_cost = None if state.get("train_cost") is None else float(state["train_cost"])
        self._val_time = float(state.get("val_time", 0.0))
        self._val_cost = None if state.get("val_cost") is None else float(state["val_cost"])
        self._validations = int(state.get("validations", 0))
        self._position = float(state.get("position", 0.0))
        before = state.get("minutes")
        if before is not None and self.minutes is not None and float(before) != self.minutes:
            logger.info("time budget changed on resuming: %g -> %g minutes", float(before), self.minutes)
        logger.info("time budget: %.1f s of %.1f s already used", self._offset, self.seconds)

    # ------------------------------------------------------------------------------------------------------------
    # engine events

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        if self.seconds <= 0:
            raise ValueError("the time budget must be positive.")
        self._engine = engine
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Engine) -> None:
        self._start = self.clock()
        self._epoch_start, self._session_epochs, self._recent = None, 0, []
        self._planned_epoch, self._last, self._ending, self._next_last = -1, False, False, False
        self.stopped_by = None
        self._logged_end = False
        self._set_state(engine)
        # after every other STARTED handler (ResumableCheckpoint loads the time used before): Ignite runs the
        # handlers added while an event fires in that same firing
        if not engine.has_event_handler(self._check_left, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self._check_left)

    def _check_left(self, engine: Engine) -> None:
        self._set_state(engine)
        (left,) = _rank0([self.remaining()])
        if left <= 0:
            logger.warning("time budget of %g min already used (%.1f s): nothing left to train", self.minutes,
                           self.elapsed())  # fmt: skip
            self.stopped_by = "budget"
            engine.terminate()
            return
        logger.info("time budget: %.1f s left of %g min (at most %s epochs)", left, self.minutes,
                    engine.state.max_epochs)  # fmt: skip

    def _plan(self, engine: Engine) -> None:
        """Decide whether this epoch is the last and its schedule position (once per epoch)."""
        epoch, max_epochs = int(engine.state.epoch), engine.state.max_epochs
        self._planned_epoch = epoch
        t, budget, cost = self.elapsed(), self.seconds, self.epoch_cost()
        capped = max_epochs is not None and epoch >= int(max_epochs)
        by_epochs = (epoch - 1) / (int(max_epochs) - 1) if max_epochs and int(max_epochs) > 1 else 0.0
        last, position = capped, by_epochs
        if self._next_last or self._last:  # the budget ran out before a last epoch was planned / stays at the end
            last = True
        elif cost is not None and cost > 0:
            if self.final_epoch:  # whole epochs: the last is the one after which another would not fit
                planned, last = math.floor(budget / cost), last or t + 2 * cost > budget
            else:  # the last is the one the budget ends in (cut there)
                planned, last = math.ceil(budget / cost), last or t + cost >= budget
            last_start = cost * max(0, planned - 1)  # when the last epoch is expected to start
            position = max(position, 1.0 if last_start <= 0 else min(1.0, t / last_start))
        last_flag, position = _rank0([float(last), position])
        self._last = bool(last_flag)
        self._position = 1.0 if self._last else max(self._position, min(1.0, position))

    def epoch_cost(self) -> float | None:
        """Estimated seconds of one epoch and its validation (None before one epoch was measured)."""
        if self._train_cost is None:
            return None
        return self._train_cost + (float(self._val_cost or 0.0) if self.validator is not None else 0.0)

    def epoch_started(self, engine: Engine) -> None:
        now = self.clock()
        if self._epoch_start is not None and self._session_epochs > 1:
            # the session's first epoch (warm-up) is only the estimate until a second one is measured
            self._recent = [*self._recent, now - self._epoch_start - self._val_in_epoch][-self.RECENT :]
            self._train_cost = max(self._recent)
        self._epoch_start, self._val_in_epoch, self._iteration_end = now, 0.0, now
        self._session_epochs += 1
        if self._planned_epoch != int(engine.state.epoch):
            self._plan(engine)
        for scheduler in self._schedulers:
            scheduler.refresh() if hasattr(scheduler, "refresh") else scheduler.step()
        if self._last and not self._logged_end:
            what = "is the last" if self.final_epoch else "runs at the end of the schedule"
            logger.info("time budget: epoch %d %s (%.1f s used of %.1f s)", engine.state.epoch, what,
                        self.elapsed(), self.seconds)  # fmt: skip
            self._logged_end = True
        self._set_state(engine)

    def _reserve(self) -> float:
        """Seconds kept for the validation after the final epoch (the last validation's duration)."""
        return float(self._val_cost or 0.0) if self.validator is not None else 0.0

    def _out_of_time(self) -> bool:
        """Another iteration (as long as the last) and the final validation would not fit in the budget."""
        return self.elapsed() + self._iteration_time + self._reserve() > self.seconds

    def iteration_completed(self, engine: Engine) -> None:
        now = self.clock()
        if self._iteration_end is not None:
            self._iteration_time = now - self._iteration_end
        self._iteration_end = now
        if self.final_epoch or self._ending:
            return
        (over,) = _rank0([float(self._out_of_time())])
        if over:
            logger.info("time budget used up in epoch %d (iteration %d): validating and stopping",
                        engine.state.epoch, engine.state.iteration)  # fmt: skip
            self._ending = True
            engine.terminate_epoch()

    def _validate(self, engine: Engine, final: bool) -> None:
        if self.validator is None:
            return
        due = int(engine.state.epoch) % self.val_interval == 0
        thrifty = self._validations == 0 or self._val_time <= self.val_share * self.elapsed()
        (run,) = _rank0([float(final or (due and thrifty))])
        if not run:
            if due:
                logger.debug("epoch %d: validation skipped (validations used %.1f s of %.1f s)", engine.state.epoch,
                             self._val_time, self.elapsed())  # fmt: skip
            return
        start = self.clock()
        self.validator.run(engine.state.epoch)
        duration = self.clock() - start
        self._val_time += duration
        self._val_in_epoch += duration
        self._val_cost = duration
        self._validations += 1

    def epoch_completed(self, engine: Engine) -> None:
        max_epochs = engine.state.max_epochs
        capped = max_epochs is not None and engine.state.epoch >= max_epochs
        planned_end = self._ending or (self.final_epoch and self._last)
        over = self.elapsed() >= self.seconds if self.final_epoch else self._out_of_time()
        (planned_end, over) = _rank0([float(planned_end), float(over)])
        final = bool(planned_end) or capped or (bool(over) and not self.final_epoch)
        self._validate(engine, final)
        if self._train_cost is None and self._epoch_start is not None:
            self._train_cost = self.clock() - self._epoch_start - self._val_in_epoch
        if final:
            self.stopped_by = "epochs" if capped and not self._ending else "budget"
            if not capped:
                engine.terminate()
        elif over:  # final_epoch: the budget ran out before a last epoch was planned
            if not self._overrun_warned:
                logger.warning(
                    "time budget used up before a last epoch could be planned (epochs of %.1f s in %.1f s): running "
                    "epoch %d as the last, past the budget", self.epoch_cost() or 0.0, self.seconds,
                    engine.state.epoch + 1,
                )  # fmt: skip
                self._overrun_warned = True
            self._next_last = True
        self._set_state(engine)

    def completed(self, engine: Engine) -> None:
        if self.stopped_by is None:
            max_epochs = engine.state.max_epochs
            self.stopped_by = "epochs" if max_epochs is not None and engine.state.epoch >= max_epochs else "terminated"
        self._set_state(engine)
        engine.state.time_budget_stopped_by = self.stopped_by
        logger.info(
            "time budget: %.1f s used of %g min, %d epochs reached (stopped by %s; %d validations, %.1f s)",
            self.elapsed(), self.minutes, engine.state.epoch, self.stopped_by, self._validations, self._val_time,
        )  # fmt: skip

    def _set_state(self, engine: Engine) -> None:
        engine.state.time_budget_elapsed_s = round(float(self.elapsed()), 3)
        engine.state.time_budget_position = float(1.0 if self._last else self._position)
        engine.state.epochs_reached = int(engine.state.epoch)


def budget_handler(budget: TimeBudget) -> TimeBudget:
    """``budget`` itself, as an item of a bundle's ``train#handlers`` list (whose items are components, so tools
    that edit the list, such as MONAI Label, can read each one's ``_target_``; the budget is defined once, at
    ``train#budget``, where the schedules reference it)."""
    return budget


class BudgetCosineLR(torch.optim.lr_scheduler.LRScheduler):
    """Cosine annealing from each group's initial learning rate to ``eta_min`` over a :class:`TimeBudget`'s
    schedule position ``p`` (instead of the epoch): ``eta_min + (lr0 - eta_min) (1 + cos(pi p)) / 2``, so the last
    epoch of the budget trains at ``eta_min``. Stepping it only re-reads the position (the budget refreshes it at
    the start of each epoch, the bundle's ``LrScheduleHandler`` steps it at each epoch's end)."""

    def __init__(self, optimizer: torch.optim.Optimizer, budget: TimeBudget, eta_min: float = 0.0) -> None:
        self.budget = budget
        self.eta_min = float(eta_min)
        super().__init__(optimizer)

    def refresh(self) -> None:
        """Apply the learning rate of the current position (no step counted: the optimizer may not have stepped)."""
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = lr

    def get_lr(self) -> list[float]:
        p = min(1.0, max(0.0, float(self.budget.fraction())))
        factor = 0.0 if p >= 1.0 else (1.0 + math.cos(math.pi * p)) / 2.0
        return [self.eta_min + (base - self.eta_min) * factor for base in self.base_lrs]

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "budget")}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update({k: v for k, v in state_dict.items() if k not in ("optimizer", "budget")})


LR_SCHEDULES = ("paper", "cosine")
COSINE_ETA_MIN_FACTOR = 0.01


def budget_lr_scheduler(
    scheduler: Any, budget: TimeBudget | None, schedule: str = "paper", epochs: int | None = None
) -> Any:
    """The learning-rate scheduler of a training (the bundles' ``--lr_schedule`` and ``--time_budget``).

    ``schedule="paper"``: ``scheduler``, the paper's, itself. ``schedule="cosine"``: any other scheduler is
    replaced by cosine annealing from the optimizer's initial learning rates to ``COSINE_ETA_MIN_FACTOR`` (1 %) of
    them over ``epochs`` (a ``CosineAnnealingLR`` is kept as it is).

    Then, with a budget, a ``CosineAnnealingLR`` becomes a :class:`BudgetCosineLR` (same optimizer, initial rates
    and ``eta_min``) laid over the budget's schedule position; a constant rate stays constant and
    ``ReduceLROnPlateau`` stays driven by validation; any other scheduler keeps counting epochs (logged).

    Raises:
        ValueError: ``schedule`` is not one of :data:`LR_SCHEDULES`.
    """
    from torch.optim import lr_scheduler as schedulers

    name = str(schedule or "paper").strip().lower()
    if name not in LR_SCHEDULES:
        raise ValueError(f"--lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}.")
    if name == "cosine" and scheduler is not None and not isinstance(scheduler, schedulers.CosineAnnealingLR):
        optimizer = scheduler.optimizer
        initial = [float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups]
        for group, lr in zip(optimizer.param_groups, initial, strict=True):
            group["lr"] = lr
        t_max = max(1, int(epochs or 1))
        scheduler = schedulers.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=COSINE_ETA_MIN_FACTOR * initial[0])
        logger.info("--lr_schedule cosine: %g -> %g over %d epochs%s", initial[0], scheduler.eta_min, t_max,
                    " (over the time budget)" if budget is not None and budget.enabled else "")  # fmt: skip
    if budget is None or not budget.enabled or scheduler is None:
        return scheduler

    if isinstance(scheduler, schedulers.CosineAnnealingLR):
        optimizer = scheduler.optimizer
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
            group["lr"] = base
        cosine = BudgetCosineLR(optimizer, budget, eta_min=scheduler.eta_min)
        logger.info("time budget: the cosine learning rate (%g -> %g) follows the budget, not the epochs",
                    scheduler.base_lrs[0], scheduler.eta_min)  # fmt: skip
        return budget.follow(cosine)
    constant = isinstance(scheduler, schedulers.ConstantLR) and (scheduler.factor == 1.0 or scheduler.total_iters == 0)
    if not constant and not isinstance(scheduler, schedulers.ReduceLROnPlateau):
        logger.warning("time budget: %s keeps counting epochs (only CosineAnnealingLR follows the budget)",
                       type(scheduler).__name__)  # fmt: skip
    return scheduler

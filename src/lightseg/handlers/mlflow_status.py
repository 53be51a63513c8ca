"""Keep the MLflow run's status true: FAILED on an exception, KILLED on SIGTERM/SIGINT, RUNNING again on resume.

MONAI's ``MLFlowHandler`` marks its run FINISHED on completion and nothing else: a crashed or killed training
stays RUNNING forever. On start it reuses the latest run with the same ``run_name`` that is not FINISHED, so a
resumed training (same ``run_name``) continues the KILLED/FAILED run: :class:`MLflowRunStatus` sets it RUNNING
again and counts the resumptions in the tag ``lightseg.resumed``.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["RESUMED_TAG", "MLflowRunStatus"]

logger = logging.getLogger(__name__)

RESUMED_TAG = "lightseg.resumed"
RESUMED_EPOCH_TAG = "lightseg.resumed_at_epoch"
ERROR_TAG = "lightseg.error"


class MLflowRunStatus:
    """Mark the run of the ``MLFlowHandler`` attached to the same engine FAILED or KILLED when training stops
    early, and RUNNING again when a resumed training continues it.

    List it after the trainer's ``MLFlowHandler`` (it finds that handler on the engine when the run starts).

    - exception inside ``engine.run`` (``Events.EXCEPTION_RAISED``, handled first so MONAI's ``StatsHandler``
      cannot skip it): the run is set FAILED, tagged ``lightseg.error`` with the root cause, and the exception is
      re-raised as before.
    - SIGTERM / SIGINT (handlers installed at start, the previous ones restored at the end): the previous handler
      runs (SIGINT: ``KeyboardInterrupt``); where that was the default action, ``SystemExit`` with status 128 +
      signal number is raised (so files are closed). The exception unwinds to the engine, whose
      ``EXCEPTION_RAISED`` sets the run KILLED (not from inside the signal handler: see :meth:`_on_signal`).
    - start of a run that MONAI reused (status KILLED/FAILED) or of a training resumed from a checkpoint (epoch
      > 0): the run is set RUNNING and tagged ``lightseg.resumed`` (count) and ``lightseg.resumed_at_epoch``
      (parameters resumed with another value are tagged by :func:`lightseg.runs.resumable_params`).

    Args:
        signals: names of the signals to mark as KILLED.
    """

    def __init__(self, signals: tuple[str, ...] = ("SIGTERM", "SIGINT")) -> None:
        self.signals = [getattr(signal, s) for s in signals if hasattr(signal, s)]
        self.client: Any = None
        self.run_id: str | None = None
        self._mlflow: Any = None
        self._previous: dict[int, Any] = {}
        self._ended = False
        self._engine: Engine | None = None
        self._start_epoch = 0

    # -- attach / discovery ---------------------------------------------------------------------------------------

    def attach(self, engine: Engine) -> None:
        self._engine = engine
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._bind)
        engine.add_event_handler(Events.COMPLETED, self.completed)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.failed)
        # ignite calls EXCEPTION_RAISED handlers in order and MONAI's StatsHandler re-raises: run first
        handlers = engine._event_handlers[Events.EXCEPTION_RAISED]
        handlers.insert(0, handlers.pop())
        mlflow_handler = self.find_mlflow_handler(engine)
        if mlflow_handler is not None:
            self._mlflow = mlflow_handler

    @staticmethod
    def find_mlflow_handler(engine: Engine) -> Any:
        """The MONAI ``MLFlowHandler`` whose ``start`` is attached to ``engine`` (None if there is none)."""
        from monai.handlers import MLFlowHandler

        for handler, *_ in engine._event_handlers.get(Events.STARTED, []):
            owner = getattr(handler, "__self__", None)
            if isinstance(owner, MLFlowHandler):
                return owner
        return None

    def _bind(self, engine: Engine) -> bool:
        """Take the run id from the MLFlowHandler once it has a run; True when bound."""
        if self.run_id is not None:
            return True
        self._mlflow = self._mlflow or self.find_mlflow_handler(engine)
        run = getattr(self._mlflow, "cur_run", None)
        if run is None:
            return False
        self.client, self.run_id = self._mlflow.client, run.info.run_id
        self._mark_resumed(engine)
        return True

    # -- events ---------------------------------------------------------------------------------------------------

    def started(self, engine: Engine) -> None:
        self._ended = False
        self._start_epoch = int(engine.state.epoch or 0)  # after ResumableCheckpoint loaded the checkpoint
        if not self._bind(engine):
            if self._mlflow is None:
                logger.warning("MLflowRunStatus: no MLFlowHandler on the trainer, run status is not tracked.")
        self._install_signals()

    def _mark_resumed(self, engine: Engine) -> None:
        run = self.client.get_run(self.run_id)
        status, epoch = run.info.status, self._start_epoch
        if status in ("KILLED", "FAILED") or epoch > 0:
            count = int(run.data.tags.get(RESUMED_TAG, "0") or 0) + 1
            if status != "RUNNING":
                self.client.update_run(self.run_id, status="RUNNING")
            self.client.set_tag(self.run_id, RESUMED_TAG, str(count))
            self.client.set_tag(self.run_id, RESUMED_EPOCH_TAG, str(epoch))
            logger.info(
                "MLflow run %s (was %s) continues at epoch %d: resumption %d", self.run_id, status, epoch, count
            )

    def completed(self, engine: Engine) -> None:
        self._ended = True
        self._restore_signals()

    def _terminate(self, status: str, error: BaseException | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        if self._engine is not None and self.run_id is None:
            self._bind(self._engine)
        if self.run_id is None:
            return
        try:
            if error is not None:
                from lightseg.cli import root_cause

                cause = root_cause(error)
                self.client.set_tag(self.run_id, ERROR_TAG, f"{type(cause).__name__}: {cause}"[:4000])
            self.client.set_terminated(self.run_id, status=status)
            logger.info("MLflow run %s marked %s", self.run_id, status)
        except Exception as e:
            logger.warning("could not mark MLflow run %s %s: %s", self.run_id, status, e)

    def failed(self, engine: Engine, e: BaseException) -> None:
        is_interrupt = isinstance(e, (KeyboardInterrupt, SystemExit))
        self._terminate("KILLED" if is_interrupt else "FAILED", None if is_interrupt else e)
        self._restore_signals()
        raise e

    # -- signals --------------------------------------------------------------------------------------------------

    def _install_signals(self) -> None:
        for sig in self.signals:
            try:
                previous = signal.getsignal(sig)
                if previous is signal.SIG_IGN or sig in self._previous:
                    continue
                signal.signal(sig, self._on_signal)
                self._previous[sig] = previous
            except ValueError:  # not the main thread: signals cannot be handled here
                logger.debug("MLflowRunStatus: not in the main thread, %s not handled", sig)

    def _restore_signals(self) -> None:
        for sig, previous in list(self._previous.items()):
            try:
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
            except ValueError:
                pass
            del self._previous[sig]

    def _on_signal(self, signum: int, frame: Any) -> None:
        """Unwind the training; :meth:`failed` marks the run KILLED once the engine sees the exception.

        Nothing is written to MLflow here: the signal can arrive in the middle of MLflow's own SQLite transaction
        (a metric being logged), whose write lock a second session in this handler would wait on for
        ``busy_timeout`` and then fail, leaving the run RUNNING. Raising unwinds that transaction first (its
        session is rolled back and closed), then ignite fires ``EXCEPTION_RAISED``.
        """
        previous = self._previous.get(signum, signal.SIG_DFL)
        logger.warning(
            "received %s: stopping the training, the MLflow run will be marked KILLED", signal.Signals(signum).name
        )
        self._restore_signals()
        if callable(previous):
            previous(signum, frame)  # SIGINT's default raises KeyboardInterrupt
            logger.warning("the previous %s handler let the training go on", signal.Signals(signum).name)
        else:
            raise SystemExit(128 + signum)

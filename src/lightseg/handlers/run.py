"""The run's record beside its model (``settings.json``) and the promotion of a finished run's model.

:class:`RunRecorder` writes the settings evaluation, inference and the exports need (see
:mod:`lightseg.settings`) into the run's model folder when training starts, adds the MLflow run id once the run
exists, and on successful completion adds the result and promotes the run's model files to the bundle's
``models/`` folder with :func:`lightseg.runs.promote`: the bundle's model changes only when a training finished.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from lightseg.runs import find_mlflow_run, promote
from lightseg.settings import read_settings, write_settings
from lightseg.utils import as_bool

__all__ = ["RunRecorder"]

logger = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    """JSON-friendly copies of config values (tuples, tensors, numpy scalars, paths)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


class RunRecorder:
    """Record the run's settings beside its model; promote the model when the training completes.

    Args:
        settings: the values to record (``train.json``'s ``train_settings``); paths are made absolute.
        ckpt_dir: the run's model folder (``settings.json`` is written there); its parent is the run folder.
        models_dir: the bundle's model folder the finished run is promoted to.
        runs_dir: where files of unknown origin replaced by a promotion are kept.
        promote: promote on completion (``--promote false`` keeps the bundle's model as it is).
        save: write files (False on non-zero ranks of a distributed run).
        state_attributes: trainer-state attributes recorded on completion, each when the state has it (e.g.
            :class:`~lightseg.handlers.TimeBudget`'s time used and epochs reached).
    """

    PATH_KEYS = ("datalist", "dataset_dir")

    def __init__(
        self,
        settings: dict,
        ckpt_dir: str | os.PathLike,
        models_dir: str | os.PathLike,
        runs_dir: str | os.PathLike,
        promote: object = True,
        save: object = True,
        state_attributes: tuple[str, ...] | list[str] = (),
    ) -> None:
        self.settings = _plain({k: v for k, v in dict(settings).items() if not str(k).startswith("_")})
        for key in self.PATH_KEYS:
            if self.settings.get(key):
                self.settings[key] = os.path.abspath(self.settings[key])
        self.ckpt_dir = Path(ckpt_dir)
        self.models_dir = Path(models_dir)
        self.runs_dir = Path(runs_dir)
        self.promote = as_bool(promote)
        self.save = as_bool(save)
        self.state_attributes = tuple(state_attributes or ())
        self._run_id_known = False

    def attach(self, engine: Engine) -> None:
        if not self.save:
            return
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def _update(self, **values: Any) -> None:
        current = read_settings(self.ckpt_dir) or {}
        write_settings(self.ckpt_dir, {**current, **_plain(values)})

    def _mlflow_run_id(self) -> str | None:
        return find_mlflow_run(self.settings.get("tracking_uri"), self.settings.get("experiment_name", ""),
                               self.settings.get("run_name", ""))  # fmt: skip

    def started(self, engine: Engine) -> None:
        previous = read_settings(self.ckpt_dir) or {}
        resumed = previous.get("started") is not None and engine.state.epoch > 0
        self._update(
            **self.settings,
            run_dir=str(self.ckpt_dir.resolve().parent),
            started=previous.get("started") or time.strftime("%Y-%m-%dT%H:%M:%S"),
            status="RUNNING",
            **({"resumed_at_epoch": int(engine.state.epoch)} if resumed else {}),
        )

    def epoch_completed(self, engine: Engine) -> None:
        if self._run_id_known:
            return
        run_id = self._mlflow_run_id()
        self._run_id_known = run_id is not None or not self.settings.get("tracking_uri")
        if run_id:
            self._update(mlflow_run_id=run_id)

    def completed(self, engine: Engine) -> None:
        state = engine.state
        values = {
            "status": "FINISHED",
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "epochs_completed": int(state.epoch),
        }
        for key in ("best_model_metric", "best_model_epoch"):
            if hasattr(state, key):
                values[key] = float(getattr(state, key)) if key.endswith("metric") else int(getattr(state, key))
        values.update({k: getattr(state, k) for k in self.state_attributes if getattr(state, k, None) is not None})
        run_id = self._mlflow_run_id()
        if run_id:
            values["mlflow_run_id"] = run_id
        self._update(**values)
        if self.promote:
            promote(self.ckpt_dir, self.models_dir, self.runs_dir)

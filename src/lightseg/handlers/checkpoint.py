"""Ignite handlers that write the bundle's weights and make training resumable.

``ModelSaver`` writes ``models/model.pt`` as a plain ``state_dict`` (loadable with ``weights_only=True``). With
``select="best"`` (default) that is the model of the best validation key metric (or the final one when no
validation ever ran), and ``model_final.pt`` is written at the end. With ``select="final"`` (LV-UNet with deep
training, whose blocks fuse exactly only at the end) ``model.pt`` is the final model and the best one is kept as
``model_best.pt``.

``ResumableCheckpoint`` writes ``checkpoint.pt`` (network, optimizer, LR scheduler, and the trainer state with
the best metric so far) atomically at the end of every epoch, and on start loads it when present, so a killed run
continues from its last completed epoch. Everything in it is tensors and plain Python values: it loads with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn

from lightseg.utils import as_bool, atomic_path

__all__ = ["ModelSaver", "ResumableCheckpoint", "atomic_save", "unwrap"]

logger = logging.getLogger(__name__)


def unwrap(network: nn.Module) -> nn.Module:
    """The module inside a DataParallel/DistributedDataParallel wrapper (or the module itself)."""
    return network.module if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else network


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file then rename: a crash never leaves a truncated file behind."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class ModelSaver:
    """Save the best model by a validation metric, and the final model.

    Attach to the trainer (``train#handlers``); it registers itself on ``evaluator`` too. The best value and
    its epoch live in the trainer's state (``best_model_metric``, ``best_model_epoch``) and are part of the
    trainer's ``state_dict``, so a resumed run (:class:`ResumableCheckpoint`) keeps comparing against the
    best model written before the interruption.

    Args:
        network: the trained network (wrappers are removed before saving).
        save_dir: folder of the model files (the bundle's ``models/``).
        evaluator: the validation evaluator whose metric is watched; None to save only at the end.
        metric_name: metric in ``evaluator.state.metrics``; defaults to the evaluator's key metric.
        mode: ``"max"`` or ``"min"``.
        filename: the file name of the selected model.
        final_filename: the other file: the final model (``select="best"``) or the best one (``"final"``);
            None to skip it.
        select: which model is ``filename``: ``"best"`` or ``"final"``.
        save: write files (False on non-zero ranks of a distributed run, which still track the best metric).
    """

    STATE_KEYS = ("best_model_metric", "best_model_epoch")

    def __init__(
        self,
        network: nn.Module,
        save_dir: str | os.PathLike,
        evaluator: Engine | None = None,
        metric_name: str | None = None,
        mode: str = "max",
        filename: str = "model.pt",
        final_filename: str | None = None,
        select: str = "best",
        save: bool = True,
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}.")
        if select not in ("best", "final"):
            raise ValueError(f"select must be 'best' or 'final', got {select!r}.")
        if final_filename is None:
            final_filename = "model_final.pt" if select == "best" else "model_best.pt"
        self.select = select
        self.network = network
        self.save_dir = Path(save_dir)
        self.evaluator = evaluator
        self.metric_name = metric_name
        self.mode = mode
        self.filename = filename
        self.final_filename = final_filename
        self.save = as_bool(save)
        self._trainer: Engine | None = None

    def attach(self, engine: Engine) -> None:
        self._trainer = engine
        for key in self.STATE_KEYS:
            if key not in engine.state_dict_user_keys:
                engine.state_dict_user_keys.append(key)
        engine.state.best_model_metric = -math.inf if self.mode == "max" else math.inf
        engine.state.best_model_epoch = -1
        engine.add_event_handler(Events.COMPLETED, self.completed)
        if self.evaluator is not None:
            self.evaluator.add_event_handler(Events.EPOCH_COMPLETED, self.validated)

    @property
    def best_metric(self) -> float:
        return float(self._trainer.state.best_model_metric) if self._trainer else math.nan

    @property
    def best_epoch(self) -> int:
        return int(self._trainer.state.best_model_epoch) if self._trainer else -1

    def _metric_name(self, evaluator: Engine) -> str:
        if self.metric_name is not None:
            return self.metric_name
        name = getattr(evaluator.state, "key_metric_name", None)
        if name is None:
            raise ValueError("ModelSaver needs metric_name: the evaluator has no key metric.")
        return name

    def _save(self, filename: str) -> Path:
        path = self.save_dir / filename
        if self.save:
            atomic_save(unwrap(self.network).state_dict(), path)
        return path

    def validated(self, evaluator: Engine) -> None:
        if self._trainer is None:
            raise RuntimeError("ModelSaver must be attached to the trainer.")
        name = self._metric_name(evaluator)
        value = float(evaluator.state.metrics[name])
        better = value > self.best_metric if self.mode == "max" else value < self.best_metric
        if math.isfinite(value) and better:
            epoch = int(self._trainer.state.epoch)
            self._trainer.state.best_model_metric, self._trainer.state.best_model_epoch = value, epoch
            best_file = self.filename if self.select == "best" else self.final_filename
            if best_file:
                path = self._save(best_file)
                logger.info("epoch %d: best %s %.4f, saved %s", epoch, name, value, path)

    def completed(self, engine: Engine) -> None:
        if self.select == "final":
            path = self._save(self.filename)
            logger.info("saved the final model as %s", path)
            return
        if self.final_filename:
            self._save(self.final_filename)
        if self.best_epoch < 0:
            path = self._save(self.filename)
            logger.info("no validation result: saved the final model as %s", path)


class ResumableCheckpoint:
    """Save everything needed to resume at each epoch end; resume from it on start.

    Args:
        save_dir: folder of ``filename``.
        save_dict: objects with ``state_dict``/``load_state_dict`` (network, optimizer, lr_scheduler, ...). An
            entry the checkpoint lacks is an error, unless its object has ``start_without_state(path)``, which is
            then called instead (:class:`~lightseg.handlers.TimeBudget`: a budget given when resuming a run that
            had none starts from zero).
            Networks are unwrapped from DDP. The engine this handler is attached to is added as ``"trainer"``
            (its state includes the user keys of other handlers, such as :class:`ModelSaver`'s best metric).
        resume: load ``filename`` on start when it exists.
        filename: checkpoint file name.
        save: write checkpoints (False on non-zero ranks in distributed runs, which still resume).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: dict[str, Any],
        resume: bool = True,
        filename: str = "checkpoint.pt",
        save: bool = True,
    ) -> None:
        self.path = Path(save_dir) / filename
        self.save_dict = {k: v for k, v in save_dict.items() if v is not None}
        self.resume = as_bool(resume)
        self.save = as_bool(save)

    def attach(self, engine: Engine) -> None:
        self.save_dict.setdefault("trainer", engine)
        engine.add_event_handler(Events.STARTED, self.load)
        if self.save:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def write(self, engine: Engine) -> None:
        state = {k: (unwrap(v) if isinstance(v, nn.Module) else v).state_dict() for k, v in self.save_dict.items()}
        atomic_save(state, self.path)

    def load(self, engine: Engine) -> None:
        if not self.resume or not self.path.is_file():
            return
        from lightseg.handlers.loading import CheckpointError, load_checkpoint

        state = load_checkpoint(self.path, map_location="cpu", what="checkpoint")
        if not isinstance(state, dict):
            raise CheckpointError(f"checkpoint {self.path} holds a {type(state).__name__}, not a training state.")
        max_epochs = engine.state.max_epochs
        for key, obj in self.save_dict.items():
            target = unwrap(obj) if isinstance(obj, nn.Module) else obj
            if key not in state:
                if callable(getattr(target, "start_without_state", None)):  # e.g. a budget added on resuming
                    target.start_without_state(self.path)
                    continue
                raise KeyError(f"checkpoint {self.path} has no {key!r} entry (has {sorted(state)}).")
            if isinstance(obj, Engine):
                # keep the max_epochs of this run: resuming with a larger epoch budget extends training
                target.load_state_dict({**state[key], "max_epochs": max_epochs})
            else:
                try:
                    target.load_state_dict(state[key])
                except (RuntimeError, KeyError, ValueError) as e:
                    first = str(e).splitlines()[0] if str(e) else type(e).__name__
                    raise CheckpointError(
                        f"checkpoint {self.path}: its {key!r} state does not fit this training ({first}"
                        "): it was written by another network or settings; resume with those, or move the file away "
                        "to start from scratch."
                    ) from e
        epoch = engine.state.epoch
        if epoch >= (max_epochs or 0):
            logger.warning(
                "checkpoint %s is already at epoch %d of %s: nothing left to train", self.path, epoch, max_epochs
            )
        logger.info("resumed from %s at epoch %d (iteration %d)", self.path, epoch, engine.state.iteration)

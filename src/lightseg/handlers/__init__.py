"""Ignite handlers referenced from the bundles' configs."""

from __future__ import annotations

from lightseg.handlers.checkpoint import ModelSaver, ResumableCheckpoint, atomic_save, unwrap
from lightseg.handlers.deep_training import DeepTrainingSchedule, deep_training_slope
from lightseg.handlers.early_stopping import EarlyStopping
from lightseg.handlers.ema import EMAUpdate
from lightseg.handlers.loss_terms import LossTermsLogger
from lightseg.handlers.reparameterize import Reparameterize
from lightseg.handlers.report import EvaluationReport
from lightseg.handlers.run import RunRecorder

__all__ = [
    "DeepTrainingSchedule",
    "EMAUpdate",
    "EarlyStopping",
    "EvaluationReport",
    "LossTermsLogger",
    "ModelSaver",
    "Reparameterize",
    "ResumableCheckpoint",
    "RunRecorder",
    "atomic_save",
    "deep_training_slope",
    "unwrap",
]

"""Ignite handlers referenced from the bundles' configs."""

from __future__ import annotations

from lightseg.handlers.budget import (
    BudgetCosineLR,
    TimeBudget,
    budget_handler,
    budget_lr_scheduler,
    parse_time_budget,
    resolve_time_budget,
)
from lightseg.handlers.checkpoint import ModelSaver, ResumableCheckpoint, atomic_save, unwrap
from lightseg.handlers.deep_training import DeepTrainingSchedule, deep_training_slope, slope_at
from lightseg.handlers.early_stopping import EarlyStopping
from lightseg.handlers.ema import EMAUpdate
from lightseg.handlers.loading import CheckpointError, CheckpointLoader, load_checkpoint
from lightseg.handlers.loss_terms import LossTermsLogger
from lightseg.handlers.mlflow_status import MLflowRunStatus
from lightseg.handlers.reparameterize import Reparameterize
from lightseg.handlers.report import EvaluationReport
from lightseg.handlers.run import RunRecorder

__all__ = [
    "BudgetCosineLR",
    "CheckpointError",
    "CheckpointLoader",
    "DeepTrainingSchedule",
    "EMAUpdate",
    "EarlyStopping",
    "EvaluationReport",
    "LossTermsLogger",
    "MLflowRunStatus",
    "ModelSaver",
    "Reparameterize",
    "ResumableCheckpoint",
    "RunRecorder",
    "TimeBudget",
    "atomic_save",
    "budget_handler",
    "budget_lr_scheduler",
    "deep_training_slope",
    "load_checkpoint",
    "parse_time_budget",
    "resolve_time_budget",
    "slope_at",
    "unwrap",
]

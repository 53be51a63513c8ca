"""Ignite handlers referenced from the bundles' configs."""

from __future__ import annotations

from lightseg.handlers.checkpoint import ModelSaver, ResumableCheckpoint, atomic_save, unwrap

__all__ = ["ModelSaver", "ResumableCheckpoint", "atomic_save", "unwrap"]

"""Training strategies that wrap a network for training only (removed before saving and export)."""

from __future__ import annotations

from lightseg.training.serp import SeRP, pooled_embedding, serp_cosine_loss

__all__ = ["SeRP", "pooled_embedding", "serp_cosine_loss"]

"""MONAI/Ignite metrics for binary segmentation, per image (``reduction="mean"``) or pooled over the dataset.

``mean``: the metric of each image, averaged over images (and channels); NaN (undefined AUC) left out.
``pooled``: confusion counts (or probability histograms for AUC) summed over the dataset, then one ratio.
Both are exact under DistributedDataParallel: per-image buffers are gathered across ranks by MONAI.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric

from lightseg.metrics.functional import (
    METRIC_NAMES,
    auc_from_histograms,
    confusion_counts,
    probability_histograms,
    roc_auc,
    scores_from_counts,
)

__all__ = ["SegmentationMetric", "SegmentationMetricHandler"]


class SegmentationMetric(CumulativeIterationMetric):
    """One binary segmentation metric, accumulated over iterations.

    Args:
        metric_name: one of ``iou, dice, precision, recall, specificity, accuracy, aac, auc``.
        reduction: ``"mean"`` (per image, then averaged) or ``"pooled"`` (over all pixels of the dataset).
        threshold: probability threshold for the foreground.
        bins: histogram bins of the pooled AUC (per-image AUC is exact).

    ``y_pred`` are probabilities ``(B, C, H, W)`` (apply the sigmoid first); ``y`` the mask, same shape.
    """

    def __init__(self, metric_name: str, reduction: str = "mean", threshold: float = 0.5, bins: int = 1000) -> None:
        super().__init__()
        if metric_name not in METRIC_NAMES:
            raise ValueError(f"unknown metric {metric_name!r}; available: {', '.join(METRIC_NAMES)}.")
        if reduction not in ("mean", "pooled"):
            raise ValueError(f"reduction must be 'mean' or 'pooled', got {reduction!r}.")
        self.metric_name = metric_name
        self.reduction = reduction
        self.threshold = threshold
        self.bins = bins

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if y is None:
            raise ValueError("SegmentationMetric needs the ground truth y.")
        y_pred, y = torch.as_tensor(y_pred).float(), torch.as_tensor(y).float()
        if self.reduction == "mean":
            if self.metric_name == "auc":
                return roc_auc(y_pred, y)
            return scores_from_counts(confusion_counts(y_pred, y, self.threshold), self.metric_name)
        if self.metric_name == "auc":
            return probability_histograms(y_pred, y, self.bins).flatten(1)
        return confusion_counts(y_pred, y, self.threshold).flatten(1)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor) or data.numel() == 0:
            raise ValueError(f"no data to aggregate for metric {self.metric_name!r}.")
        if self.reduction == "mean":
            return data.nanmean() if torch.isfinite(data).any() else torch.tensor(float("nan"))
        total = data.sum(0)
        if self.metric_name == "auc":
            return auc_from_histograms(total.reshape(-1, 2, self.bins)).nanmean()
        return scores_from_counts(total.reshape(-1, 4), self.metric_name).mean()


class SegmentationMetricHandler(IgniteMetricHandler):
    """Ignite metric (for ``key_val_metric`` / ``additional_metrics``) wrapping :class:`SegmentationMetric`.

    Args:
        metric_name: see :class:`SegmentationMetric`.
        reduction: ``"mean"`` or ``"pooled"``.
        threshold: probability threshold.
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``.
        save_details: keep per-image values in ``engine.state.metric_details`` (for ``MetricsSaver``); only
            meaningful for ``reduction="mean"``.
    """

    def __init__(
        self,
        metric_name: str,
        reduction: str = "mean",
        threshold: float = 0.5,
        output_transform: Callable = lambda x: x,
        save_details: bool | None = None,
    ) -> None:
        if save_details is None:
            save_details = reduction == "mean"
        super().__init__(
            metric_fn=SegmentationMetric(metric_name, reduction, threshold),
            output_transform=output_transform,
            save_details=save_details,
        )

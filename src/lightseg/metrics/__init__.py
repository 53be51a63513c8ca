"""Binary and multi-class segmentation metrics: functional forms and MONAI/Ignite metric handlers."""

from __future__ import annotations

from lightseg.metrics.functional import (
    METRIC_NAMES,
    auc_from_histograms,
    confusion_counts,
    probability_histograms,
    roc_auc,
    scores_from_counts,
)
from lightseg.metrics.segmentation import (
    SegmentationMetric,
    SegmentationMetricHandler,
    evaluation_metrics,
    foreground_channels,
)

__all__ = [
    "METRIC_NAMES",
    "SegmentationMetric",
    "SegmentationMetricHandler",
    "auc_from_histograms",
    "confusion_counts",
    "evaluation_metrics",
    "foreground_channels",
    "probability_histograms",
    "roc_auc",
    "scores_from_counts",
]

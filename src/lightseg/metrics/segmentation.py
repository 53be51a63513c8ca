"""MONAI/Ignite metrics for binary and multi-class segmentation, per image (``reduction="mean"``) or pooled.

Binary: ``y_pred`` has one channel (sigmoid probabilities). Multi-class: ``y_pred`` has N >= 2 channels (softmax
probabilities, channel 0 the background) and ``y`` is a label map ``(B, 1, H, W)`` of 0..N-1 (or one-hot): the
prediction is the argmax, each foreground class is scored one-vs-rest, and the background is left out; the value
is the mean over the foreground classes, or one class with ``class_index``.

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

__all__ = ["SegmentationMetric", "SegmentationMetricHandler", "evaluation_metrics", "foreground_channels"]


def foreground_channels(
    y_pred: torch.Tensor, y: torch.Tensor, scores: bool = False, class_index: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y_pred, y)`` as per-foreground-class binary channels.

    One channel: returned as is. N >= 2 channels (softmax): ``y`` one-hot encoded from its label map, ``y_pred``
    replaced by the one-hot argmax unless ``scores`` (AUC keeps the class probabilities); channel 0 (background)
    dropped; ``class_index`` (1..N-1) keeps that class only.
    """
    n = y_pred.shape[1]
    if n == 1:
        if class_index not in (None, 1):
            raise ValueError(f"class_index {class_index} for a binary prediction (only 1).")
        return y_pred, y
    if y.shape[1] == 1:
        y = torch.nn.functional.one_hot(y[:, 0].round().long().clamp(0, n - 1), n).movedim(-1, 1).to(y_pred.dtype)
    if not scores:
        y_pred = torch.nn.functional.one_hot(y_pred.argmax(1), n).movedim(-1, 1).to(y.dtype)
    if class_index is not None:
        if not 1 <= class_index < n:
            raise ValueError(f"class_index must be in 1..{n - 1}, got {class_index}.")
        return y_pred[:, class_index : class_index + 1], y[:, class_index : class_index + 1]
    return y_pred[:, 1:], y[:, 1:]


class SegmentationMetric(CumulativeIterationMetric):
    """One binary segmentation metric, accumulated over iterations.

    Args:
        metric_name: one of ``iou, dice, precision, recall, specificity, accuracy, aac, auc``.
        reduction: ``"mean"`` (per image, then averaged) or ``"pooled"`` (over all pixels of the dataset).
        threshold: probability threshold for the foreground.
        bins: histogram bins of the pooled AUC (per-image AUC is exact).
        class_index: multi-class only: score this class (1..N-1) instead of the mean over foreground classes.

    ``y_pred`` are probabilities ``(B, C, H, W)`` (apply the sigmoid or softmax first); ``y`` the mask (see the
    module docstring for multi-class).
    """

    def __init__(
        self,
        metric_name: str,
        reduction: str = "mean",
        threshold: float = 0.5,
        bins: int = 1000,
        class_index: int | None = None,
    ) -> None:
        super().__init__()
        if metric_name not in METRIC_NAMES:
            raise ValueError(f"unknown metric {metric_name!r}; available: {', '.join(METRIC_NAMES)}.")
        if reduction not in ("mean", "pooled"):
            raise ValueError(f"reduction must be 'mean' or 'pooled', got {reduction!r}.")
        self.metric_name = metric_name
        self.reduction = reduction
        self.threshold = threshold
        self.bins = bins
        self.class_index = class_index

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if y is None:
            raise ValueError("SegmentationMetric needs the ground truth y.")
        y_pred, y = torch.as_tensor(y_pred).float(), torch.as_tensor(y).float()
        y_pred, y = foreground_channels(y_pred, y, scores=self.metric_name == "auc", class_index=self.class_index)
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
        class_index: see :class:`SegmentationMetric`.
    """

    def __init__(
        self,
        metric_name: str,
        reduction: str = "mean",
        threshold: float = 0.5,
        output_transform: Callable = lambda x: x,
        save_details: bool | None = None,
        class_index: int | None = None,
    ) -> None:
        if save_details is None:
            save_details = reduction == "mean"
        super().__init__(
            metric_fn=SegmentationMetric(metric_name, reduction, threshold, class_index=class_index),
            output_transform=output_transform,
            save_details=save_details,
        )


def evaluation_metrics(labels, exclude=(), per_class=("dice", "iou")) -> dict[str, SegmentationMetricHandler]:
    """The metrics of ``evaluate.json``: ``{mean,pooled}_{metric}`` for every metric, and for a multi-class model
    (more than two ``labels``) ``mean_{metric}_{label}`` and ``pooled_{metric}_{label}`` for each foreground class
    and each metric of ``per_class``. Names in ``exclude`` (the key metric) are left out."""
    from monai.handlers import from_engine

    labels = [str(x) for x in labels]
    out: dict[str, SegmentationMetricHandler] = {}
    transform = from_engine(["pred", "label"])
    for reduction in ("mean", "pooled"):
        for metric in METRIC_NAMES:
            out[f"{reduction}_{metric}"] = SegmentationMetricHandler(metric, reduction, output_transform=transform)
    if len(labels) > 2:
        for k, label in enumerate(labels[1:], start=1):
            safe = "".join(c if c.isalnum() else "_" for c in label)
            for reduction in ("mean", "pooled"):
                for metric in per_class:
                    out[f"{reduction}_{metric}_{safe}"] = SegmentationMetricHandler(
                        metric, reduction, output_transform=transform, class_index=k
                    )
    return {k: v for k, v in out.items() if k not in set(exclude)}

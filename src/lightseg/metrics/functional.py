"""Binary segmentation metrics as plain tensor functions.

All metrics start from the confusion counts of the prediction thresholded at ``threshold`` (probabilities in,
``p >= threshold`` is foreground). Conventions, stated once and used everywhere:

- A ratio whose denominator is 0 has nothing to get wrong and scores **1**: IoU and Dice of an empty
  prediction on an empty mask, precision when nothing is predicted, recall when the mask is empty, specificity
  when the whole image is foreground. (A false positive on an empty mask still scores 0 IoU/Dice/precision.)
- ``dice`` equals F1; ``recall`` is sensitivity; ``accuracy`` is pixel accuracy.
- ``aac`` is the average per-class accuracy of the CMUNeXt-XXS paper, ``mean_i TP_i / (TP_i + FN_i)`` over the
  two classes: ``(recall + specificity) / 2``.
- ``auc`` is the pixel-level area under the ROC curve of the probabilities (ties count one half). It is
  undefined for an image containing one class only: per-image AUC is NaN there and left out of the mean.
"""

from __future__ import annotations

import torch

__all__ = [
    "METRIC_NAMES",
    "auc_from_histograms",
    "confusion_counts",
    "probability_histograms",
    "roc_auc",
    "scores_from_counts",
]

METRIC_NAMES = ("iou", "dice", "precision", "recall", "specificity", "accuracy", "aac", "auc")


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp_min(1e-12), torch.ones_like(num))


def _as_binary(target: torch.Tensor) -> torch.Tensor:
    return target > 0.5


def confusion_counts(probs: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Counts ``[tp, fp, fn, tn]`` per sample and channel: ``(B, C, ...) -> (B, C, 4)`` (float64)."""
    if probs.shape != target.shape:
        raise ValueError(f"prediction shape {list(probs.shape)} does not match target {list(target.shape)}.")
    pred = probs >= threshold
    gt = _as_binary(target)
    dims = tuple(range(2, probs.dim()))
    tp = (pred & gt).sum(dims)
    fp = (pred & ~gt).sum(dims)
    fn = (~pred & gt).sum(dims)
    tn = (~pred & ~gt).sum(dims)
    return torch.stack((tp, fp, fn, tn), dim=-1).double()


def scores_from_counts(counts: torch.Tensor, metric_name: str) -> torch.Tensor:
    """A metric from confusion counts ``(..., 4)`` -> ``(...)``. ``auc`` needs probabilities, not counts."""
    tp, fp, fn, tn = counts.unbind(-1)
    if metric_name == "iou":
        return _ratio(tp, tp + fp + fn)
    if metric_name == "dice":
        return _ratio(2 * tp, 2 * tp + fp + fn)
    if metric_name == "precision":
        return _ratio(tp, tp + fp)
    if metric_name == "recall":
        return _ratio(tp, tp + fn)
    if metric_name == "specificity":
        return _ratio(tn, tn + fp)
    if metric_name == "accuracy":
        return _ratio(tp + tn, tp + fp + fn + tn)
    if metric_name == "aac":
        return 0.5 * (_ratio(tp, tp + fn) + _ratio(tn, tn + fp))
    raise ValueError(f"unknown metric {metric_name!r}; count-based metrics: {METRIC_NAMES[:-1]}.")


def roc_auc(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Exact pixel ROC AUC per sample and channel (Mann-Whitney U with mid-ranks): ``(B, C, ...) -> (B, C)``.

    NaN where the sample has only one class.
    """
    b, c = probs.shape[:2]
    scores = probs.reshape(b * c, -1).double()
    labels = _as_binary(target).reshape(b * c, -1)
    out = torch.full((b * c,), float("nan"), dtype=torch.float64, device=probs.device)
    for i in range(b * c):
        n_pos = int(labels[i].sum())
        n_neg = labels.shape[1] - n_pos
        if n_pos == 0 or n_neg == 0:
            continue
        _, inverse, counts = torch.unique(scores[i], return_inverse=True, return_counts=True)
        # mid-rank of each distinct value (1-based): ranks of tied values are averaged
        ends = torch.cumsum(counts, 0).double()
        mid = ends - (counts.double() - 1) / 2
        rank_sum = mid[inverse][labels[i]].sum()
        out[i] = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return out.reshape(b, c)


def probability_histograms(probs: torch.Tensor, target: torch.Tensor, bins: int = 1000) -> torch.Tensor:
    """Histograms of probabilities for negative and positive pixels: ``(B, C, ...) -> (B, C, 2, bins)``."""
    b, c = probs.shape[:2]
    idx = (probs.reshape(b * c, -1).clamp(0, 1) * bins).long().clamp_max(bins - 1)
    pos = _as_binary(target).reshape(b * c, -1).long()
    flat = (torch.arange(b * c, device=probs.device)[:, None] * 2 + pos) * bins + idx
    hist = torch.bincount(flat.reshape(-1), minlength=b * c * 2 * bins)
    return hist.reshape(b, c, 2, bins).double()


def auc_from_histograms(hist: torch.Tensor) -> torch.Tensor:
    """ROC AUC from ``(..., 2, bins)`` histograms; pixels in the same bin count as ties. NaN for one class."""
    neg, pos = hist[..., 0, :], hist[..., 1, :]
    n_neg, n_pos = neg.sum(-1), pos.sum(-1)
    neg_below = torch.cumsum(neg, -1) - neg
    u = (pos * (neg_below + 0.5 * neg)).sum(-1)
    den = n_neg * n_pos
    return torch.where(den > 0, u / den.clamp_min(1), torch.full_like(u, float("nan")))

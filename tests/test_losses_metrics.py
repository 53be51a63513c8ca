"""Loss and metrics against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine
from monai.handlers import from_engine

from lightseg.losses import BCEDiceLoss
from lightseg.metrics import (
    SegmentationMetric,
    SegmentationMetricHandler,
    auc_from_histograms,
    confusion_counts,
    probability_histograms,
    roc_auc,
    scores_from_counts,
)

# A 3x3 case: prediction (>= 0.5) P and ground truth G
#   probs            G
#   .9  .6  .2       1 0 0
#   .4  .7  .1       1 1 0
#   .3  .05 .0       0 0 0
# TP = 2, FP = 1 (the .6), FN = 1 (the .4), TN = 5.
PROBS = torch.tensor([[0.9, 0.6, 0.2], [0.4, 0.7, 0.1], [0.3, 0.05, 0.0]])[None, None]
GT = torch.tensor([[1.0, 0, 0], [1, 1, 0], [0, 0, 0]])[None, None]
HAND = {
    "iou": 2 / 4,
    "dice": 4 / 6,
    "precision": 2 / 3,
    "recall": 2 / 3,
    "specificity": 5 / 6,
    "accuracy": 7 / 9,
    "aac": (2 / 3 + 5 / 6) / 2,
    # positives .9, .7, .4 against negatives .6 .3 .2 .1 .05 0: 6 + 6 + 5 of 18 pairs ranked correctly
    "auc": 17 / 18,
}


def test_bce_dice_by_hand():
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0], [0, 0]]]])
    # BCE(0, y) = ln 2 for every pixel; soft Dice = (2*0.5 + s) / (2 + 1 + s)
    s = 1e-5
    expected = 0.5 * math.log(2) + 1 - (1 + s) / (3 + s)
    assert BCEDiceLoss()(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_bce_dice_is_per_sample_mean():
    logits = torch.stack([torch.zeros(1, 2, 2), torch.full((1, 2, 2), 30.0)])
    target = torch.stack([torch.tensor([[[1.0, 0], [0, 0]]]), torch.ones(1, 2, 2)])
    s = 1e-5
    bce = (4 * math.log(2) + 4 * math.log1p(math.exp(-30))) / 8
    dice = ((1 + s) / (3 + s) + 1.0) / 2
    assert BCEDiceLoss()(logits, target).item() == pytest.approx(0.5 * bce + 1 - dice, rel=1e-5)


def test_bce_dice_one_hot_for_multichannel():
    logits = torch.zeros(1, 3, 2, 2)
    classes = torch.tensor([[[[0, 1], [2, 1]]]])
    loss = BCEDiceLoss()(logits, classes)
    onehot = torch.nn.functional.one_hot(classes[:, 0], 3).movedim(-1, 1).float()
    assert loss.item() == pytest.approx(BCEDiceLoss()(logits, onehot).item())
    with pytest.raises(ValueError, match="does not match"):
        BCEDiceLoss()(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 3, 3))


@pytest.mark.parametrize("name", [n for n in HAND if n != "auc"])
def test_count_metrics_by_hand(name):
    counts = confusion_counts(PROBS, GT)
    assert counts.tolist() == [[[2.0, 1.0, 1.0, 5.0]]]
    assert scores_from_counts(counts, name).item() == pytest.approx(HAND[name])


def test_auc_exact_and_binned():
    assert roc_auc(PROBS, GT).item() == pytest.approx(HAND["auc"])
    assert auc_from_histograms(probability_histograms(PROBS, GT, bins=1000)).item() == pytest.approx(HAND["auc"])
    # ties count one half
    assert roc_auc(torch.full((1, 1, 2, 2), 0.5), torch.tensor([[[[1.0, 0], [0, 1]]]])).item() == 0.5


def test_empty_masks():
    empty = torch.zeros(1, 1, 3, 3)
    both_empty = confusion_counts(empty, empty)
    for name in ("iou", "dice", "precision", "recall", "specificity", "accuracy", "aac"):
        assert scores_from_counts(both_empty, name).item() == 1.0, name
    assert math.isnan(roc_auc(empty, empty).item())
    # a false positive on an empty mask
    fp = confusion_counts(torch.tensor([[[[1.0, 0, 0], [0, 0, 0], [0, 0, 0]]]]), empty)
    assert scores_from_counts(fp, "iou").item() == 0.0
    assert scores_from_counts(fp, "dice").item() == 0.0
    assert scores_from_counts(fp, "precision").item() == 0.0
    assert scores_from_counts(fp, "recall").item() == 1.0
    assert scores_from_counts(fp, "specificity").item() == pytest.approx(8 / 9)
    # nothing predicted on a non-empty mask
    miss = confusion_counts(empty, GT)
    assert scores_from_counts(miss, "recall").item() == 0.0
    assert scores_from_counts(miss, "iou").item() == 0.0


@pytest.mark.parametrize("name", list(HAND))
def test_mean_versus_pooled(name):
    """Image A (the 3x3 case) and image B (empty mask, empty prediction)."""
    empty = torch.zeros_like(GT)
    mean, pooled = SegmentationMetric(name, "mean"), SegmentationMetric(name, "pooled")
    for m in (mean, pooled):
        m(PROBS, GT)
        m(empty, empty)
    if name == "auc":
        assert mean.aggregate().item() == pytest.approx(HAND["auc"])  # NaN of image B left out
        # pooled: 3 positives vs 6 + 9 negatives; the 9 zeros of image B rank below every positive
        assert pooled.aggregate().item() == pytest.approx((17 + 3 * 9) / (3 * 15))
        return
    assert mean.aggregate().item() == pytest.approx((HAND[name] + 1.0) / 2)
    counts = torch.tensor([2.0, 1, 1, 5 + 9])
    assert pooled.aggregate().item() == pytest.approx(scores_from_counts(counts, name).item())


def test_ignite_handler_and_details():
    batches = [{"pred": PROBS, "label": GT}, {"pred": torch.zeros_like(GT), "label": torch.zeros_like(GT)}]
    engine = Engine(lambda e, b: b)
    SegmentationMetricHandler("iou", output_transform=from_engine(["pred", "label"])).attach(engine, "mean_iou")
    SegmentationMetricHandler("iou", "pooled", output_transform=from_engine(["pred", "label"])).attach(
        engine, "pooled_iou"
    )
    state = engine.run(batches, max_epochs=1)
    assert state.metrics["mean_iou"] == pytest.approx(0.75)
    assert state.metrics["pooled_iou"] == pytest.approx(0.5)
    assert state.metric_details["mean_iou"].flatten().tolist() == pytest.approx([0.5, 1.0])
    assert "pooled_iou" not in state.metric_details


def test_unknown_metric():
    with pytest.raises(ValueError, match="available"):
        SegmentationMetric("hausdorff")
    with pytest.raises(ValueError, match="reduction"):
        SegmentationMetric("iou", "median")

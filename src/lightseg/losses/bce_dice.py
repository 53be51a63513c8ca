"""``0.5 * BCEWithLogits + Dice``: the loss of CMUNeXt and CMUNeXt-XXS (paper eq. 4).

Soft Dice on the sigmoid of the logits, computed per sample over all of its pixels, then averaged:
``1 - mean_b (2 |p*y| + s) / (|p| + |y| + s)`` with ``s = 1e-5`` as in the reference code.

Multi-class (N >= 2 output channels, channel 0 the background; target a label map or one-hot): softmax
cross-entropy replaces the BCE and the Dice is the mean over the foreground classes of the softmax probabilities
(one-vs-rest), per sample. The other losses generalise the same way through :func:`foreground`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BCEDiceLoss", "foreground", "probability_bce", "soft_dice_per_sample"]


def _match_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Float target with the logits' shape; a 1-channel class-index map is one-hot encoded for C > 1."""
    if target.shape[1] == 1 and logits.shape[1] > 1:
        target = F.one_hot(target[:, 0].long(), logits.shape[1]).movedim(-1, 1)
    if target.shape != logits.shape:
        raise ValueError(f"target shape {list(target.shape)} does not match prediction {list(logits.shape)}.")
    return target.to(logits.dtype)


def foreground(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, float target) of the channels a loss scores: the sigmoid of a 1-channel head, or the
    softmax of an N-channel head without the background channel (target one-hot encoded)."""
    target = _match_target(logits, target)
    if logits.shape[1] == 1:
        return torch.sigmoid(logits), target
    return torch.softmax(logits, 1)[:, 1:], target[:, 1:]


def probability_bce(probs: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-pixel binary cross-entropy of probabilities (one-vs-rest on softmax outputs), ``reduction="none"``."""
    return F.binary_cross_entropy(probs.clamp(eps, 1.0 - eps), target, reduction="none")


def soft_dice_per_sample(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """Soft Dice coefficient per (sample, channel): ``(B, C, ...) -> (B, C)``."""
    dims = tuple(range(2, probs.dim()))
    inter = (probs * target).sum(dims)
    return (2.0 * inter + smooth) / (probs.sum(dims) + target.sum(dims) + smooth)


class BCEDiceLoss(nn.Module):
    """``bce_weight * BCEWithLogits + dice_weight * (1 - soft Dice)``.

    Args:
        bce_weight: weight of the binary cross-entropy (0.5 in the paper).
        dice_weight: weight of the Dice loss (1.0 in the paper).
        smooth: additive smoothing of the Dice ratio.

    Shapes: logits ``(B, C, H, W)``; target ``(B, 1, H, W)`` in {0, 1} for ``C = 1``; for ``C > 1`` classes,
    ``(B, 1, H, W)`` class indices (one-hot encoded here) or one-hot ``(B, C, H, W)``: then
    ``bce_weight * CrossEntropy + dice_weight * (1 - foreground soft Dice)``. Returns a scalar.
    """

    def __init__(self, bce_weight: float = 0.5, dice_weight: float = 1.0, smooth: float = 1e-5) -> None:
        super().__init__()
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = _match_target(logits, target)
        if logits.shape[1] > 1:
            pixel = F.cross_entropy(logits, target.argmax(1))
        else:
            pixel = F.binary_cross_entropy_with_logits(logits, target)
        probs, fg = foreground(logits, target)
        dice = soft_dice_per_sample(probs, fg, self.smooth).mean()
        return self.bce_weight * pixel + self.dice_weight * (1.0 - dice)

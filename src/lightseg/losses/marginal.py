"""LiteNeXt's losses: the Marginal Weight Loss (paper section 3.2, Algorithm 1, eq. 8) and the composite
``SeRP + MWL + Dice`` objective (Algorithm 2).

Weight map from a binary ground-truth mask ``S`` and an odd kernel size ``k``:

- dilation ``S_d``: k x k max pooling (Algorithm 1's box sum clipped to [0, 1]);
- erosion ``S_e``: k x k min pooling with zero padding, so the image border counts as background (Algorithm 1's
  box mean, floored);
- ``W = w_m (S_d - S_e) + w_o S_e + w_b (1 - S_d)``: margin, object interior and background weights.

Eq. 8 sums the weighted BCE over the pixels; we divide by the sum of the weights of the image (a weighted mean
per image, then the batch mean), so the loss has the scale of a plain BCE whatever the weights and the image size
(equal weights give exactly ``BCEWithLogits``), and the three terms of the total loss stay commensurate.

Multi-class (N >= 2 channels, softmax): the weight map is computed per foreground class from its one-hot mask
and weights that class's one-vs-rest BCE of the softmax probability; the weighted means are averaged over
classes. The Dice term is the foreground-class mean (see :mod:`lightseg.losses.bce_dice`); the ``bce_dice``
ablation uses softmax cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightseg.losses.bce_dice import _match_target, foreground, probability_bce, soft_dice_per_sample

__all__ = ["LiteNeXtLoss", "MarginalWeightLoss", "marginal_weight_map"]


def marginal_weight_map(
    mask: torch.Tensor, kernel_size: int = 9, w_margin: float = 0.6, w_object: float = 0.3, w_background: float = 0.1
) -> torch.Tensor:
    """Algorithm 1 for a batch ``(B, C, H, W)`` of {0, 1} masks (any device, no Python loop over the batch)."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}.")
    if mask.dim() != 4:
        raise ValueError(f"mask must be (B, C, H, W), got shape {list(mask.shape)}.")
    mask = mask.float()
    pad = kernel_size // 2
    dilated = F.max_pool2d(mask, kernel_size, stride=1, padding=pad)  # max-pool pads with -inf: no effect
    eroded = -F.max_pool2d(-F.pad(mask, (pad, pad, pad, pad), value=0.0), kernel_size, stride=1)
    return w_margin * (dilated - eroded) + w_object * eroded + w_background * (1.0 - dilated)


class MarginalWeightLoss(nn.Module):
    """Eq. 8: BCE weighted by :func:`marginal_weight_map`, normalized per image by the weight sum.

    Args:
        kernel_size: k of the erosion/dilation (9 in the paper).
        w_margin, w_object, w_background: the paper's w_m = 0.6, w_o = 0.3, w_b = 0.1.
    """

    def __init__(
        self, kernel_size: int = 9, w_margin: float = 0.6, w_object: float = 0.3, w_background: float = 0.1
    ) -> None:
        super().__init__()
        if min(w_margin, w_object, w_background) < 0 or w_margin + w_object + w_background <= 0:
            raise ValueError("the weights must be >= 0 and not all 0.")
        self.kernel_size = kernel_size
        self.weights = (w_margin, w_object, w_background)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = _match_target(logits, target)
        if logits.shape[1] > 1:
            probs, target = foreground(logits, target)
            bce = probability_bce(probs, target)
        else:
            bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        w = marginal_weight_map(target, self.kernel_size, *self.weights)
        per_image = (w * bce).flatten(2).sum(2) / w.flatten(2).sum(2).clamp_min(1e-12)
        return per_image.mean()


class LiteNeXtLoss(nn.Module):
    """``serp_weight * L_SeRP + mwl_weight * L_MWL + dice_weight * L_Dice`` (Algorithm 2).

    The SeRP term (eq. 9) is computed by the :class:`lightseg.training.SeRP` wrapper during its forward pass
    (it needs the two views and the target extractor); this loss takes it from ``serp_source.last_serp_loss`` and
    clears it, so a value is never used twice. Without a source (or outside training) the loss is MWL + Dice, or
    ``bce_weight * BCE + Dice`` with ``seg_loss="bce_dice"`` (the ablation; 0.5 BCE + Dice as the CMUNeXt recipe).

    ``last_terms`` holds the unweighted terms of the last call (``mwl`` or ``bce``, ``dice``, ``serp``) for
    :class:`lightseg.handlers.LossTermsLogger`.
    """

    def __init__(
        self,
        serp_source: nn.Module | None = None,
        seg_loss: str = "mwl",
        mwl: MarginalWeightLoss | None = None,
        serp_weight: float = 1.0,
        mwl_weight: float = 1.0,
        dice_weight: float = 1.0,
        bce_weight: float = 0.5,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        if seg_loss not in ("mwl", "bce_dice"):
            raise ValueError(f"seg_loss must be 'mwl' or 'bce_dice', got {seg_loss!r}.")
        self.serp_source = serp_source
        self.seg_loss = seg_loss
        self.mwl = mwl if mwl is not None else MarginalWeightLoss()
        self.serp_weight = serp_weight
        self.mwl_weight = mwl_weight
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.smooth = smooth
        self.last_terms: dict[str, float] = {}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = _match_target(logits, target)
        if self.seg_loss == "mwl":
            name, pixel, weight = "mwl", self.mwl(logits, target), self.mwl_weight
        else:
            if logits.shape[1] > 1:
                pixel = F.cross_entropy(logits, target.argmax(1))
            else:
                pixel = F.binary_cross_entropy_with_logits(logits, target)
            name, weight = "bce", self.bce_weight
        probs, fg = foreground(logits, target)
        dice = 1.0 - soft_dice_per_sample(probs, fg, self.smooth).mean()
        total = weight * pixel + self.dice_weight * dice
        terms = {name: float(pixel.detach()), "dice": float(dice.detach())}
        serp = getattr(self.serp_source, "last_serp_loss", None) if self.serp_source is not None else None
        if serp is not None:
            self.serp_source.last_serp_loss = None
            total = total + self.serp_weight * serp
            terms["serp"] = float(serp.detach())
        self.last_terms = terms
        return total

"""Mini-Net's loss (paper eq. 16): ``alpha * (Dice + BCE + Jaccard)`` with per-instance alpha weights.

The paper describes alpha only as a dynamic weight "corresponding to the learning error of each data instance"
that makes the model "pay more attention to instances with larger errors", driven by an "alpha-scheduler". Our
precise reading, applied at every iteration:

1. every term is computed per sample (soft Dice and soft Jaccard over all pixels of the sample, BCE averaged over
   its pixels; several output channels are averaged), giving ``L_b = Dice_b + BCE_b + Jaccard_b``;
2. ``alpha_b = L_b^gamma / mean_b(L_b^gamma)``, computed without gradient, so the batch mean weight is exactly 1
   (the loss scale, hence the effective learning rate, is that of the plain sum) and a sample with twice the
   error gets twice the weight (``gamma = 1``);
3. the loss is ``mean_b(alpha_b * L_b)``.

The weights are recomputed from the current errors at every step: that is the "scheduler" (hard samples are
up-weighted while they are hard, and lose their weight once learned). ``alpha="none"`` is the plain sum
(ablation), equal to ``mean_b(L_b)``.

Multi-class (N >= 2 channels, softmax): every term is computed per sample AND per foreground class (soft Dice,
soft Jaccard and one-vs-rest BCE of the softmax probability), ``L_{b,c}``, and the alpha weights are taken over
all (sample, class) pairs: a class a sample gets wrong is up-weighted on its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightseg.losses.bce_dice import foreground, probability_bce, soft_dice_per_sample

__all__ = ["AlphaWeightedLoss", "instance_alpha", "soft_jaccard_per_sample"]

TERMS = ("dice", "bce", "jaccard")


def soft_jaccard_per_sample(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """Soft Jaccard (IoU) per (sample, channel): ``(B, C, ...) -> (B, C)``."""
    dims = tuple(range(2, probs.dim()))
    inter = (probs * target).sum(dims)
    union = probs.sum(dims) + target.sum(dims) - inter
    return (inter + smooth) / (union + smooth)


def instance_alpha(per_sample: torch.Tensor, gamma: float = 1.0, eps: float = 1e-12) -> torch.Tensor:
    """Weights proportional to ``per_sample ** gamma`` with mean 1, without gradient; uniform if all are zero."""
    err = per_sample.detach().clamp_min(0.0) ** gamma
    mean = err.mean()
    if mean <= eps:
        return torch.ones_like(err)
    return err / mean


class AlphaWeightedLoss(nn.Module):
    """``mean_b(alpha_b * sum_t L_t,b)`` over the chosen terms (see the module docstring).

    Args:
        terms: any of ``"dice"``, ``"bce"``, ``"jaccard"`` (the paper's eq. 16 uses all three; its ablation
            also tries BCE+Jaccard and BCE+Dice).
        alpha: ``"instance"`` (per-sample error weights) or ``"none"`` (plain sum).
        gamma: focus exponent of the instance weights (1: proportional to the error; 0: uniform).
        smooth: additive smoothing of the Dice and Jaccard ratios.

    Shapes: logits ``(B, C, H, W)``; target ``(B, C, H, W)`` in {0, 1} or ``(B, 1, H, W)`` class indices for
    ``C > 1``. Returns a scalar. After each call ``last_terms`` holds the batch means of the unweighted terms
    and ``last_alpha`` the weights, for logging.
    """

    def __init__(
        self,
        terms: tuple[str, ...] | list[str] = TERMS,
        alpha: str = "instance",
        gamma: float = 1.0,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        terms = tuple(terms)
        unknown = [t for t in terms if t not in TERMS]
        if not terms or unknown or len(set(terms)) != len(terms):
            raise ValueError(f"terms must be distinct names from {TERMS}, got {terms}.")
        if alpha not in ("instance", "none"):
            raise ValueError(f"alpha must be 'instance' or 'none', got {alpha!r}.")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}.")
        self.terms = terms
        self.alpha = alpha
        self.gamma = float(gamma)
        self.smooth = smooth
        self.last_terms: dict[str, float] = {}
        self.last_alpha: torch.Tensor | None = None

    def per_sample_class(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each unweighted term per sample and scored class, ``(B, C')`` (``C' = 1`` for a binary head)."""
        probs, fg = foreground(logits, target)
        out: dict[str, torch.Tensor] = {}
        if "dice" in self.terms:
            out["dice"] = 1.0 - soft_dice_per_sample(probs, fg, self.smooth)
        if "bce" in self.terms:
            if logits.shape[1] == 1:
                bce = F.binary_cross_entropy_with_logits(logits, fg, reduction="none")
            else:
                bce = probability_bce(probs, fg)
            out["bce"] = bce.flatten(2).mean(2)
        if "jaccard" in self.terms:
            out["jaccard"] = 1.0 - soft_jaccard_per_sample(probs, fg, self.smooth)
        return out

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each unweighted term per sample, ``(B,)`` (the mean over scored classes)."""
        return {k: v.mean(1) for k, v in self.per_sample_class(logits, target).items()}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        parts = self.per_sample_class(logits, target)
        total = torch.stack([parts[t] for t in self.terms]).sum(0).flatten()
        weights = instance_alpha(total, self.gamma) if self.alpha == "instance" else torch.ones_like(total)
        self.last_terms = {t: float(v.detach().mean()) for t, v in parts.items()}
        self.last_alpha = weights
        return (weights * total).mean()

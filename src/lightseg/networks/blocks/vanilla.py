"""Fusible VanillaNet-style blocks with deep training and re-parameterization (used by LV-UNet).

H. Chen et al., "VanillaNet: the Power of Minimalism in Deep Learning", NeurIPS 2023, arXiv:2305.12972;
J. Jiang et al., "LV-UNet: A Lightweight and Vanilla Model for Medical Image Segmentation", arXiv:2408.16886.

Training form of a block (d -> d'): 1x1 conv + BN, LeakyReLU with slope ``a`` (deep training), 1x1 conv + BN,
resampling (2x2 max pooling, or x2 bilinear upsampling), then the series-informed activation: ReLU, a
depthwise (2n+1)x(2n+1) convolution without bias, BN. When ``a == 1`` the LeakyReLU is the identity and
:meth:`FusibleBlock.reparameterize` folds everything exactly (paper eq. 4-5) into the deployment form: one 1x1
conv with bias, resampling, ReLU, one depthwise conv with bias. Resampling commutes with neither ReLU nor BN,
but it does commute with a per-pixel affine map (max pooling only with a positive scale), which is why the two
1x1 convolutions are merged across it only as they are placed: both before the resampling.

Blocks expose ``set_deep_training_slope(a)`` and ``reparameterize(allow_inexact=False)``;
:func:`reparameterize_model` and :func:`set_deep_training_slope` drive any network through these two methods.
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import nn

from lightseg.networks.fused import NormActSequential, bn_act

__all__ = [
    "FusibleBlock",
    "SeriesActivation",
    "fuse_conv_bn",
    "reparameterize_model",
    "set_deep_training_slope",
]

logger = logging.getLogger(__name__)
BN_EPS = 1e-6


def fuse_conv_bn(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.modules.batchnorm._BatchNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` as one convolution (paper eq. 4), in float64 then cast back."""
    dtype = weight.dtype
    std = (bn.running_var.double() + bn.eps).sqrt()
    scale = bn.weight.double() / std
    b = bias.double() if bias is not None else torch.zeros_like(bn.running_mean, dtype=torch.float64)
    fused_w = weight.double() * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    fused_b = (b - bn.running_mean.double()) * scale + bn.bias.double()
    return fused_w.to(dtype), fused_b.to(dtype)


class SeriesActivation(nn.Module):
    """Series-informed activation (VanillaNet): ``BN(DWConv_{2n+1}(ReLU(x)))``; deployed: BN folded into a bias.

    Args:
        channels: channels of input and output.
        act_num: n; the depthwise kernel is (2n+1) x (2n+1).
    """

    def __init__(self, channels: int, act_num: int = 1) -> None:
        super().__init__()
        self.channels = channels
        self.act_num = act_num
        self.weight = nn.Parameter(torch.empty(channels, 1, 2 * act_num + 1, 2 * act_num + 1))
        nn.init.trunc_normal_(self.weight, std=0.02)
        self.register_parameter("bias", None)
        self.bn: nn.Module = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.deployed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(F.relu(x), self.weight, self.bias, padding=self.act_num, groups=self.channels)
        if torch.jit.is_scripting():
            return self.bn(y)
        return self._norm(y)

    @torch.jit.unused
    def _norm(self, y: torch.Tensor) -> torch.Tensor:
        return bn_act(y, self.bn)

    @torch.no_grad()
    def reparameterize(self, allow_inexact: bool = False) -> None:
        """Fold the BatchNorm into the depthwise convolution (idempotent; always exact)."""
        if self.deployed:
            return
        weight, bias = fuse_conv_bn(self.weight, None, self.bn)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)
        self.bn = nn.Identity()
        self.deployed = True


class FusibleBlock(nn.Module):
    """A fusible encoder (``resample="down"``) or decoder (``resample="up"``) block of LV-UNet.

    ``(B, in_channels, H, W) -> (B, out_channels, H/2, W/2)`` (down), ``(B, out_channels, 2H, 2W)`` (up), or the
    same size (``resample=None``).

    Args:
        in_channels: d.
        out_channels: d'.
        resample: ``"down"`` (2x2 max pooling), ``"up"`` (x2 bilinear, align_corners=False) or None.
        act_num: n of the series-informed activation.
    """

    def __init__(self, in_channels: int, out_channels: int, resample: str | None = "down", act_num: int = 1) -> None:
        super().__init__()
        if resample not in ("down", "up", None):
            raise ValueError(f"resample must be 'down', 'up' or None, got {resample!r}.")
        self.conv1: nn.Module = NormActSequential(
            nn.Conv2d(in_channels, in_channels, 1), nn.BatchNorm2d(in_channels, eps=BN_EPS)
        )
        self.conv2: nn.Module = NormActSequential(
            nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels, eps=BN_EPS)
        )
        self.resample = resample if resample is not None else "none"
        self.act = SeriesActivation(out_channels, act_num)
        # LeakyReLU negative slope a: 0 = ReLU (start of deep training), 1 = identity (end). A buffer, so that
        # it is saved with the weights: a trained model reloaded elsewhere computes the same function.
        self.register_buffer("slope", torch.zeros(()))
        self.deployed = False

    def set_deep_training_slope(self, slope: float) -> None:
        if not 0.0 <= slope <= 1.0:
            raise ValueError(f"the deep-training slope must be in [0, 1], got {slope}.")
        self.slope.fill_(float(slope))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deployed:
            x = self.conv1(x)
        else:
            x = self.conv1(x)
            x = self.conv2(torch.maximum(x, x * self.slope))  # LeakyReLU(a) = max(x, a x) for 0 <= a <= 1 (eq. 2)
        if self.resample == "down":
            x = F.max_pool2d(x, 2)
        elif self.resample == "up":
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.act(x)

    @torch.no_grad()
    def reparameterize(self, allow_inexact: bool = False) -> None:
        """Merge conv1+BN, (identity), conv2+BN into one 1x1 convolution and fold the activation's BN.

        Exact only when the slope is 1 (the end of deep training); otherwise raises ``ValueError`` unless
        ``allow_inexact``. Idempotent.
        """
        if self.deployed:
            return
        slope = float(self.slope)
        if slope != 1.0:
            if not allow_inexact:
                raise ValueError(
                    f"cannot fuse a block whose LeakyReLU slope is {slope:g} (not 1): the deployment model would "
                    "differ from the trained one. Finish deep training first, or pass allow_inexact=True."
                )
            logger.warning("fusing a block with LeakyReLU slope %g != 1: the result is approximate", slope)
        conv1, bn1 = self.conv1[0], self.conv1[1]
        conv2, bn2 = self.conv2[0], self.conv2[1]
        w1, b1 = fuse_conv_bn(conv1.weight, conv1.bias, bn1)
        w2, b2 = fuse_conv_bn(conv2.weight, conv2.bias, bn2)
        m1, m2 = w1.double().flatten(1), w2.double().flatten(1)  # (d, d), (d', d)
        fused = nn.Conv2d(conv1.in_channels, conv2.out_channels, 1).to(w1.device)
        fused.weight.copy_((m2 @ m1).reshape_as(fused.weight).to(w1.dtype))  # eq. 5
        fused.bias.copy_((m2 @ b1.double() + b2.double()).to(w1.dtype))
        self.conv1 = fused
        self.conv2 = nn.Identity()
        del self.slope  # the deployment form has no nonlinearity left to parameterize
        self.register_buffer("slope", torch.ones(()), persistent=False)
        self.act.reparameterize()
        self.deployed = True


def set_deep_training_slope(model: nn.Module, slope: float) -> int:
    """Set the LeakyReLU slope of every module exposing ``set_deep_training_slope``; returns how many."""
    count = 0
    for module in model.modules():
        if module is not model and hasattr(module, "set_deep_training_slope"):
            module.set_deep_training_slope(slope)
            count += 1
    return count


def reparameterize_model(model: nn.Module, inplace: bool = False, allow_inexact: bool = False) -> nn.Module:
    """The deployment form of ``model``: every module exposing ``reparameterize()`` is fused.

    Idempotent. Returns a fused copy in eval mode (or ``model`` itself when ``inplace``); BatchNorm statistics
    must be final, which eval mode guarantees.
    """
    target = model if inplace else copy.deepcopy(model)
    target.eval()
    for module in list(target.modules()):
        if module is target or not hasattr(module, "reparameterize"):
            continue
        module.reparameterize(allow_inexact=allow_inexact)
    return target

"""Mini-Net: a reconstruction from the paper's equations (1)-(11); the authors published no code.

S. Javed, T. M. Khan, A. Qayyum, H. Alinejad-Rokny, A. Sowmya and I. Razzak, "Advancing Medical Image
Segmentation with Mini-Net: A Lightweight Solution Tailored for Efficient Segmentation of Medical Images".

Every convolution whose kind the text leaves open is a constructor argument, so that the defensible literal
reading (the default, ``mininet``: 38,193 parameters) and the reconstruction that reproduces the published
counts exactly (``mininet_paper_counts``: 36,657 parameters, 514 BatchNorm channels) are the same class. The
arithmetic behind both is in ``bundles/mininet/docs/README.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lightseg.networks.blocks.mininet import DMResBlock, _ConvBN, make_conv
from lightseg.networks.layers import check_input_size

__all__ = ["DMResBlock", "MiniNet", "make_conv"]  # the blocks live in lightseg.networks.blocks.mininet


def _downsample(kind: str, c_in: int, c_out: int) -> nn.Module:
    """Eq. 5's strided convolution f_s: ``conv3x3`` (dense 3x3, stride 2) or ``separable2x2``."""
    if kind == "conv3x3":
        return nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
    if kind == "separable2x2":
        return nn.Sequential(nn.Conv2d(c_in, c_in, 2, stride=2, groups=c_in, bias=False), nn.Conv2d(c_in, c_out, 1))
    raise ValueError(f"unknown downsampling {kind!r}; expected 'conv3x3' or 'separable2x2'.")


class MiniNet(nn.Module):
    """Mini-Net (eqs. 1-11): two encoder blocks, a DMRes bottleneck, two decoder blocks and a two-step head.

    - Stem (eq. 1): ``f1 = BN(conv3x3(x))`` with ``base_channels`` (8) channels, no activation.
    - Encoder block i (eqs. 2-5): DMRes at width c, then a strided conv c -> 2c (8 -> 16 at H/2, 16 -> 32 at
      H/4), no BN, no activation (as eq. 5).
    - Bottleneck: one DMRes at 32 channels, H/4.
    - Decoder block (eqs. 6-9): 3x3 transposed conv stride 2 halving the channels, BN (the published
      BatchNorm count has one BN here), decoder DMRes whose last sum uses stride-1 transposed convs, plus the
      matching encoder DMRes output.
    - Head (eqs. 10-11): ``ReLU(BN(conv1x1(.)))`` to ``head_channels`` (2, fixed by the published counts), then a
      1x1 conv to ``out_channels``. The output is logits; the sigmoid of eq. 11 is applied by the
      post-processing (and inside the loss).

    Input ``(B, in_channels, H, W)`` with H and W divisible by 4; output ``(B, out_channels, H, W)``.

    Args:
        spatial_dims: must be 2.
        in_channels: input channels.
        out_channels: output channels.
        base_channels: the paper's C-hat (8); widths are C, 2C, 4C.
        head_channels: channels of X_out (eq. 10).
        kernel_sizes: multi-scale kernels of the DMRes sums.
        conv: kind of the f^{kxk} of eqs. 2 and 7 (see :func:`make_conv`).
        out_conv: kind of the f^{kxk} of eq. 4 (defaults to ``conv``).
        down: ``conv3x3`` or ``separable2x2`` (eq. 5).
        group_width: channels per group for ``grouped`` convolutions.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        *,
        base_channels: int = 8,
        head_channels: int = 2,
        kernel_sizes: Sequence[int] = (3, 5),
        conv: str = "separable",
        out_conv: str | None = None,
        down: str = "conv3x3",
        group_width: int = 2,
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"Mini-Net is a 2D network, got spatial_dims={spatial_dims}.")
        if in_channels < 1 or out_channels < 1 or head_channels < 1 or base_channels < 1:
            raise ValueError(
                "in_channels, out_channels, head_channels and base_channels must be >= 1, got "
                f"{in_channels}, {out_channels}, {head_channels}, {base_channels}."
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.divisor = 4
        c1, c2, c3 = base_channels, 2 * base_channels, 4 * base_channels
        opts = {"kernel_sizes": tuple(kernel_sizes), "conv": conv, "out_conv": out_conv, "group_width": group_width}

        self.stem = _ConvBN(nn.Conv2d(in_channels, c1, 3, padding=1), c1)
        self.enc1 = DMResBlock(c1, **opts)
        self.down1 = _downsample(down, c1, c2)
        self.enc2 = DMResBlock(c2, **opts)
        self.down2 = _downsample(down, c2, c3)
        self.bottleneck = DMResBlock(c3, **opts)
        self.up1 = _ConvBN(nn.ConvTranspose2d(c3, c2, 3, stride=2, padding=1, output_padding=1), c2)
        self.dec1 = DMResBlock(c2, decoder=True, **opts)
        self.up2 = _ConvBN(nn.ConvTranspose2d(c2, c1, 3, stride=2, padding=1, output_padding=1), c1)
        self.dec2 = DMResBlock(c1, decoder=True, **opts)
        self.x_out = nn.Sequential(nn.Conv2d(c1, head_channels, 1), nn.BatchNorm2d(head_channels), nn.ReLU())
        self.head = nn.Conv2d(head_channels, out_channels, 1)  # eq. 11 (Pred)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.divisor, "Mini-Net")
        s_out1 = self.enc1(self.stem(x))  # C, H
        s_out2 = self.enc2(self.down1(s_out1))  # 2C, H/2
        y = self.bottleneck(self.down2(s_out2))  # 4C, H/4
        y = s_out2 + self.dec1(self.up1(y))  # eq. 9: 2C, H/2
        y = s_out1 + self.dec2(self.up2(y))  # C, H
        return self.head(self.x_out(y))

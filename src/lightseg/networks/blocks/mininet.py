"""Mini-Net's building blocks (paper eqs. 1-8): the DMRes block and the convolution kinds the text leaves open.

Used by :class:`lightseg.networks.nets.mininet.MiniNet`; see that module for the reconstruction's choices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lightseg.networks.fused import NormActSequential

__all__ = ["CONV_KINDS", "DMResBlock", "make_conv"]

CONV_KINDS = ("separable", "separable_squeeze", "grouped", "full")


def make_conv(kind: str, channels: int, kernel_size: int, *, group_width: int = 2) -> nn.Module:
    """A ``channels -> channels`` convolution with "same" padding of the given kind (the paper's f^{kxk}).

    - ``separable``: depthwise kxk (no bias) then pointwise 1x1 (bias), Keras ``SeparableConv2D``.
    - ``separable_squeeze``: ``separable`` followed by a 1x1 convolution (bias): expand and squeeze.
    - ``grouped``: a kxk convolution with ``group_width`` channels per group (bias).
    - ``full``: a dense kxk convolution (bias).
    """
    pad = kernel_size // 2
    if kind in ("separable", "separable_squeeze"):
        layers = [
            nn.Conv2d(channels, channels, kernel_size, padding=pad, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1),
        ]
        if kind == "separable_squeeze":
            layers.append(nn.Conv2d(channels, channels, 1))
        return nn.Sequential(*layers)
    if kind == "grouped":
        if channels % group_width:
            raise ValueError(f"grouped convolution needs channels divisible by {group_width}, got {channels}.")
        return nn.Conv2d(channels, channels, kernel_size, padding=pad, groups=channels // group_width)
    if kind == "full":
        return nn.Conv2d(channels, channels, kernel_size, padding=pad)
    raise ValueError(f"unknown convolution kind {kind!r}; expected one of {CONV_KINDS}.")


def _deconv_same(channels: int, kernel_size: int) -> nn.ConvTranspose2d:
    """The paper's f_d^{kxk} of eq. 9: a stride-1 transposed convolution keeping the size."""
    return nn.ConvTranspose2d(channels, channels, kernel_size, padding=kernel_size // 2)


class _ConvBN(NormActSequential):
    def __init__(self, conv: nn.Module, channels: int) -> None:
        super().__init__(conv, nn.BatchNorm2d(channels))


class DMResBlock(nn.Module):
    """Dual multi-residual block, eqs. 2-4 (encoder) or 7-9 without the skip (decoder, ``decoder=True``).

    ``s1 = ReLU(sum_k BN(f^k(x)))``; ``s2 = ReLU(BN(f^1(s1)) + s1)``;
    ``out = BN(f^1(x)) + sum_k BN(g^k(s2))`` with ``g`` = ``out_conv`` convolutions in the encoder and stride-1
    transposed convolutions (f_d) in the decoder. Six BatchNorms, ``kernel_sizes`` = (3, 5) in the paper
    (k = 2i + 1, i = 1, 2).
    """

    def __init__(
        self,
        channels: int,
        *,
        kernel_sizes: Sequence[int] = (3, 5),
        conv: str = "separable",
        out_conv: str | None = None,
        decoder: bool = False,
        group_width: int = 2,
    ) -> None:
        super().__init__()
        out_conv = conv if out_conv is None else out_conv
        self.branches1 = nn.ModuleList(
            _ConvBN(make_conv(conv, channels, k, group_width=group_width), channels) for k in kernel_sizes
        )
        self.refine = _ConvBN(nn.Conv2d(channels, channels, 1), channels)
        self.shortcut = _ConvBN(nn.Conv2d(channels, channels, 1), channels)
        self.branches2 = nn.ModuleList(
            _ConvBN(
                _deconv_same(channels, k) if decoder else make_conv(out_conv, channels, k, group_width=group_width),
                channels,
            )
            for k in kernel_sizes
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = torch.zeros_like(x)
        for branch in self.branches1:
            s1 = s1 + branch(x)
        s1 = torch.relu(s1)
        s2 = torch.relu(self.refine(s1) + s1)
        out = self.shortcut(x)
        for branch in self.branches2:
            out = out + branch(s2)
        return out

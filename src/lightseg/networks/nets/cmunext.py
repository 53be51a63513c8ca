"""CMUNeXt family: CMUNeXt, CMUNeXt-S, CMUNeXt-L and CMUNeXt-XXS (Mobile-CMUNeXt).

- F. Tang et al., "CMUNeXt: An Efficient Medical Image Segmentation Network based on Large Kernel and Skip
  Fusion", ISBI 2024, arXiv:2308.01239 (concatenation skip fusion, GELU in blocks, ReLU in convs, nearest
  upsampling).
- A. Carvalho and M. Vestias, "Fast Semantic Segmentation of Medical Images" (CMUNeXt-XXS: additive skip
  fusion, Hardswish everywhere, bilinear upsampling, two residual depthwise convolutions per block).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lightseg.networks.blocks.cmunext import CMUNeXtStage, ConvNormAct, SkipFusion, UpConv
from lightseg.networks.layers import check_input_size

__all__ = ["CMUNeXt"]


class CMUNeXt(nn.Module):
    """Configurable CMUNeXt U-shaped network.

    The encoder is a stem (3x3 conv, BN, act) followed by ``len(channels)`` stages; every stage but the first
    starts with a 2x2 max pooling. The decoder upsamples x2 (interpolation, 3x3 conv, BN, act), fuses the
    matching encoder output and ends in a 1x1 head. The output is logits.

    Input ``(B, in_channels, H, W)`` with H and W divisible by ``2 ** (len(channels) - 1)`` (16 for the
    published five-stage models); output ``(B, out_channels, H, W)``.

    Args:
        spatial_dims: must be 2.
        in_channels: input channels.
        out_channels: output channels (1 for binary segmentation with a sigmoid, N for N-class softmax).
        channels: width of each stage (C1..C5).
        depths: CMUNeXt blocks per stage (L1..L5).
        kernel_sizes: depthwise kernel per stage (K1..K5).
        num_mixers: residual depthwise convolutions per block (1 in CMUNeXt, 2 in CMUNeXt-XXS).
        fusion: skip fusion, ``"add"`` or ``"concat"``.
        upsample: ``"bilinear"`` or ``"nearest"``.
        act: activation inside blocks and skip fusion.
        conv_act: activation of stem, stage projections and up-convolutions.
        norm: normalization name or ``(name, kwargs)``.

    Example::

        >>> net = CMUNeXt(2, 3, 1, channels=(8, 10, 12, 16, 24), depths=(3, 1, 1, 1, 2),
        ...               kernel_sizes=(3, 3, 7, 7, 9), num_mixers=2, fusion="add", act="hardswish",
        ...               conv_act="hardswish")
        >>> net(torch.zeros(1, 3, 64, 96)).shape
        torch.Size([1, 1, 64, 96])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        *,
        channels: Sequence[int] = (16, 32, 128, 160, 256),
        depths: Sequence[int] = (1, 1, 1, 3, 1),
        kernel_sizes: Sequence[int] = (3, 3, 7, 7, 7),
        num_mixers: int = 1,
        fusion: str = "concat",
        upsample: str = "nearest",
        act: str | tuple = "gelu",
        conv_act: str | tuple = "relu",
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"CMUNeXt is a 2D network, got spatial_dims={spatial_dims}.")
        if not (len(channels) == len(depths) == len(kernel_sizes)) or len(channels) < 2:
            raise ValueError(
                "channels, depths and kernel_sizes must have the same length (>= 2), got "
                f"{tuple(channels)}, {tuple(depths)}, {tuple(kernel_sizes)}."
            )
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}.")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.divisor = 2 ** (len(channels) - 1)

        self.stem = ConvNormAct(spatial_dims, in_channels, channels[0], 3, act=conv_act, norm=norm)
        widths_in = (channels[0], *channels[:-1])
        self.encoder = nn.ModuleList(
            CMUNeXtStage(spatial_dims, c_in, c_out, d, k, num_mixers=num_mixers, act=act, conv_act=conv_act, norm=norm)
            for c_in, c_out, d, k in zip(widths_in, channels, depths, kernel_sizes, strict=True)
        )
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        # Decoder levels, deepest first: up from channels[i] to channels[i-1], fuse with encoder output i-1.
        self.up = nn.ModuleList(
            UpConv(spatial_dims, channels[i], channels[i - 1], mode=upsample, act=conv_act, norm=norm)
            for i in range(len(channels) - 1, 0, -1)
        )
        self.fuse = nn.ModuleList(
            SkipFusion(spatial_dims, channels[i - 1], fusion=fusion, act=act, norm=norm)
            for i in range(len(channels) - 1, 0, -1)
        )
        self.head = nn.Conv2d(channels[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.divisor, "CMUNeXt")
        x = self.stem(x)
        skips: list[torch.Tensor] = []
        for i, stage in enumerate(self.encoder):
            if i > 0:
                x = self.pool(x)
            x = stage(x)
            skips.append(x)
        for j, (up, fuse) in enumerate(zip(self.up, self.fuse)):  # noqa: B905 (TorchScript has no zip(strict=))
            x = fuse(skips[len(skips) - 2 - j], up(x))
        return self.head(x)

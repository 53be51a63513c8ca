"""LiteNeXt: LGEMixer encoder, residual bottleneck, GCF context module and a one-step decoder.

N.-D. Tran, T.-T. Tran, Q.-H. Nguyen, M.-H. Vu and V.-T. Pham, "LiteNeXt: A Novel Lightweight ConvMixer-based
Model with Self-embedding Representation Parallel for Medical Image Segmentation".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightseg.networks.blocks.litenext import GCF, ConvLNGELU, LGEMixer, ResidualBlock
from lightseg.networks.layers import check_input_size

__all__ = ["LiteNeXt", "LiteNeXtEncoder"]


class LiteNeXtEncoder(nn.Module):
    """The feature extractor (stem + 4 stages) that SeRP trains: returns the four stage outputs
    (C at H/2, 2C at H/4, 4C at H/8, 8C at H/16)."""

    def __init__(self, in_channels: int = 3, width: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        c = width
        self.stem = ConvLNGELU(in_channels, c, kernel_size=2, stride=2)
        self.stage1 = LGEMixer(c, kernel_size)
        self.stage2 = nn.Sequential(nn.MaxPool2d(2), ConvLNGELU(c, 2 * c, 1), LGEMixer(2 * c, kernel_size))
        self.stage3 = nn.Sequential(nn.MaxPool2d(2), ConvLNGELU(2 * c, 4 * c, 1), LGEMixer(4 * c, kernel_size))
        self.stage4 = nn.Sequential(nn.MaxPool2d(2), ConvLNGELU(4 * c, 8 * c, 1), LGEMixer(8 * c, kernel_size))
        self.out_channels = 8 * c

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        e1 = self.stage1(self.stem(x))
        e2 = self.stage2(e1)
        e3 = self.stage3(e2)
        e4 = self.stage4(e3)
        return [e1, e2, e3, e4]


class LiteNeXt(nn.Module):
    """LiteNeXt (inference network; SeRP's target extractor and projectors live in
    :class:`lightseg.training.SeRP`, not here).

    - Encoder (:class:`LiteNeXtEncoder`): 2x2 stride-2 conv + LN + GELU to C at H/2, one LGEMixer; then three
      stages of max pooling, 1x1 conv doubling the width (+ LN, GELU) and one LGEMixer: 2C, 4C, 8C at H/4 ... H/16.
    - Bottleneck: (3x3 conv, LN, GELU) twice plus identity at 8C.
    - GCF: values of the four stages and the bottleneck (1x1 conv to 8C, LN, GELU, bilinear to H/2), keys from
      their pooled vectors, per-channel softmax across the stages; output 16C at H/2.
    - Decoder: 1x1 conv 16C -> C, LN, GELU, bilinear x2, 1x1 head to ``out_channels``. Output: logits.

    Input ``(B, in_channels, H, W)`` with H and W divisible by 16; output ``(B, out_channels, H, W)``.
    711,201 parameters for 3 -> 1 channels with C = 16 and 7x7 depthwise kernels (the paper's 0.71 M).

    Args:
        spatial_dims: must be 2.
        in_channels: input channels (the authors hard-coded 3).
        out_channels: output channels (the authors hard-coded 1).
        width: base width C.
        kernel_size: depthwise kernel of the FarMixer (7 in the paper; the authors' code defaults to 3).
    """

    def __init__(
        self, spatial_dims: int = 2, in_channels: int = 3, out_channels: int = 1, *, width: int = 16,
        kernel_size: int = 7,
    ) -> None:  # fmt: skip
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"LiteNeXt is a 2D network, got spatial_dims={spatial_dims}.")
        if in_channels < 1 or out_channels < 1 or width < 1:
            raise ValueError(
                f"in_channels, out_channels and width must be >= 1, got {in_channels}, {out_channels}, {width}."
            )
        c = width
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.divisor = 16
        self.encoder = LiteNeXtEncoder(in_channels, width, kernel_size)
        self.bottleneck = ResidualBlock(8 * c)
        self.gcf = GCF((c, 2 * c, 4 * c, 8 * c), 8 * c, 8 * c)
        self.decoder = ConvLNGELU(16 * c, c, 1)
        self.head = nn.Conv2d(c, out_channels, 1)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, deepest encoder features)``: SeRP's projector S reads the latter."""
        check_input_size(x, self.divisor, "LiteNeXt")
        features = self.encoder(x)
        context = self.gcf(features, self.bottleneck(features[3]))
        y = F.interpolate(self.decoder(context), size=[x.shape[-2], x.shape[-1]], mode="bilinear", align_corners=False)
        return self.head(y), features[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]

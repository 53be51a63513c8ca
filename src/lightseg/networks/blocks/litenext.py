"""LiteNeXt blocks: channel LayerNorm, LGEMixer, the residual bottleneck block and the GCF context module.

N.-D. Tran, T.-T. Tran, Q.-H. Nguyen, M.-H. Vu and V.-T. Pham, "LiteNeXt: A Novel Lightweight ConvMixer-based
Model with Self-embedding Representation Parallel for Medical Image Segmentation".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GCF",
    "ChannelLayerNorm",
    "ConvLNGELU",
    "LGEMixer",
    "ResidualBlock",
    "ScaleContext",
    "pooled_embedding",
]


def pooled_embedding(features: torch.Tensor) -> torch.Tensor:
    """``GAP(f) + GMP(f)``: ``(B, C, H, W) -> (B, C)`` (GCF keys, SeRP projectors)."""
    return features.mean(dim=(2, 3)) + features.amax(dim=(2, 3))


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels at each pixel of a ``(B, C, H, W)`` tensor (LiteNeXt has no BatchNorm)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), [self.channels], self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class ConvLNGELU(nn.Sequential):
    """Convolution ("same" padding unless ``stride`` > 1), channel LayerNorm, GELU."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 1, stride: int = 1, groups: int = 1) -> None:
        padding = 0 if stride > 1 else kernel_size // 2
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, groups=groups),
            ChannelLayerNorm(c_out),
            nn.GELU(),
        )


class LGEMixer(nn.Module):
    """Paper eqs. 1-3: ``a = GELU(LN(Conv3x3(x)))`` (LocalMixer), ``b = GELU(LN(DWConv_kxk(a)))`` (FarMixer),
    ``y = GELU(LN(Conv1x1(b + a + x)))``. Width-preserving; the max pooling of eq. 4 belongs to the next stage."""

    def __init__(self, channels: int, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"LGEMixer needs an odd depthwise kernel, got {kernel_size}.")
        self.local_mixer = ConvLNGELU(channels, channels, 3)
        self.far_mixer = ConvLNGELU(channels, channels, kernel_size, groups=channels)
        self.channel_mixer = ConvLNGELU(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.local_mixer(x)
        b = self.far_mixer(a)
        return self.channel_mixer(b + a + x)


class ResidualBlock(nn.Module):
    """The bottleneck (Fig. 2d): two (3x3 conv, LN, GELU) plus the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvLNGELU(channels, channels, 3), ConvLNGELU(channels, channels, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class ScaleContext(nn.Module):
    """One GCF input: value = GELU(LN(Conv1x1(x))) resized to the decoding size; key = MLP(GAP(x) + GMP(x)) with
    the MLP a 1x1 conv c -> c, GELU, 1x1 conv c -> ``width`` (applied to the pooled vector)."""

    def __init__(self, c_in: int, width: int) -> None:
        super().__init__()
        self.value = ConvLNGELU(c_in, width, 1)
        self.key = nn.Sequential(nn.Linear(c_in, c_in), nn.GELU(), nn.Linear(c_in, width))

    def forward(self, x: torch.Tensor, size: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.value(x)
        if v.shape[-2] != size[0] or v.shape[-1] != size[1]:
            v = F.interpolate(v, size=size, mode="bilinear", align_corners=False)
        return v, self.key(pooled_embedding(x))


class GCF(nn.Module):
    """Generate-context module: weights the encoder stages' values per channel by a softmax across the stages of
    ``Linear([key_i, key_bottleneck])``, sums them and concatenates the bottleneck's value: ``2 * width`` channels
    at the first stage's resolution."""

    def __init__(self, stage_channels: Sequence[int], bottleneck_channels: int, width: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList(ScaleContext(c, width) for c in stage_channels)
        self.bottleneck = ScaleContext(bottleneck_channels, width)
        self.score = nn.Linear(2 * width, width)

    def forward(self, features: list[torch.Tensor], bottleneck: torch.Tensor) -> torch.Tensor:
        size = [features[0].shape[-2], features[0].shape[-1]]
        values: list[torch.Tensor] = []
        keys: list[torch.Tensor] = []
        for i, ctx in enumerate(self.stages):
            v, k = ctx(features[i], size)
            values.append(v)
            keys.append(k)
        v_b, k_b = self.bottleneck(bottleneck, size)
        key = torch.stack(keys, dim=1)  # (B, S, width)
        key = torch.cat([key, k_b.unsqueeze(1).expand_as(key)], dim=2)  # (B, S, 2 width)
        weights = torch.softmax(self.score(key), dim=1)  # across the S scales, per channel
        # sum_i values[i] * weights[:, i]: the same sum in the same order as stacking the S full-resolution maps
        # into a 5-D tensor and reducing it, without that copy (which also dropped channels_last for the decoder);
        # the training step of LiteNeXt at 256x256 took half the time (tests/test_litenext.py checks it is equal)
        mixed = values[0] * weights[:, 0, :, None, None]
        for i in range(1, len(values)):
            mixed = mixed + values[i] * weights[:, i, :, None, None]
        return torch.cat([mixed, v_b], dim=1)

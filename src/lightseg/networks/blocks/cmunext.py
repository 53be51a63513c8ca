"""Building blocks of the CMUNeXt family.

CMUNeXt: F. Tang et al., "CMUNeXt: An Efficient Medical Image Segmentation Network based on Large Kernel and
Skip Fusion", ISBI 2024 (arXiv:2308.01239). CMUNeXt-XXS (Mobile-CMUNeXt): A. Carvalho and M. Vestias, "Fast
Semantic Segmentation of Medical Images".

Two orderings of convolution, activation and normalization occur in the reference code and both are kept,
because they are not interchangeable once trained weights exist:

- ``ConvNormAct``  (stem, end-of-stage projection, decoder up-convolution): conv -> BN -> act;
- ``ConvActNorm``  (inside the CMUNeXt block and the skip fusion): conv -> act -> BN.
"""

from __future__ import annotations

import torch
from torch import nn

from lightseg.networks.fused import NormActSequential
from lightseg.networks.layers import get_act as _act
from lightseg.networks.layers import get_norm as _norm

__all__ = [
    "CMUNeXtBlock",
    "CMUNeXtStage",
    "ConvActNorm",
    "ConvNormAct",
    "ResidualDepthwise",
    "SkipFusion",
    "UpConv",
]


def _check_spatial_dims(spatial_dims: int) -> None:
    if spatial_dims != 2:
        raise ValueError(f"CMUNeXt blocks are 2D only, got spatial_dims={spatial_dims}.")


class ConvNormAct(NormActSequential):
    """Convolution -> normalization -> activation (the order of the reference ``conv_block``).

    Args:
        spatial_dims: must be 2.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size; padding keeps the spatial size.
        act: activation name or ``(name, kwargs)``.
        norm: normalization name or ``(name, kwargs)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
    ) -> None:
        _check_spatial_dims(spatial_dims)
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=True),
            _norm(norm, out_channels),
            _act(act),
        )


class ConvActNorm(NormActSequential):
    """Convolution -> activation -> normalization (the order inside CMUNeXt blocks and skip fusion).

    Args:
        spatial_dims: must be 2.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size; padding keeps the spatial size.
        groups: convolution groups (``in_channels`` for a depthwise convolution).
        act: activation name or ``(name, kwargs)``.
        norm: normalization name or ``(name, kwargs)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        groups: int = 1,
        act: str | tuple = "gelu",
        norm: str | tuple = "batch",
    ) -> None:
        _check_spatial_dims(spatial_dims)
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups, bias=True),
            _act(act),
            _norm(norm, out_channels),
        )

    act_first = True


class ResidualDepthwise(nn.Module):
    """``x + BN(act(DWConv_kxk(x)))``: the large-kernel token mixer of a CMUNeXt block.

    Args:
        spatial_dims: must be 2.
        channels: input and output channels.
        kernel_size: depthwise kernel size (odd).
        act: activation name or ``(name, kwargs)``.
        norm: normalization name or ``(name, kwargs)``.
    """

    def __init__(
        self, spatial_dims: int, channels: int, kernel_size: int, act: str | tuple = "gelu", norm: str | tuple = "batch"
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"depthwise kernel_size must be odd to keep the spatial size, got {kernel_size}.")
        self.mix = ConvActNorm(spatial_dims, channels, channels, kernel_size, groups=channels, act=act, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(x)


class CMUNeXtBlock(nn.Module):
    """One CMUNeXt block: residual depthwise mixing, then an inverted-bottleneck channel MLP.

    ``num_mixers`` residual depthwise convolutions in series (1 in CMUNeXt, 2 in CMUNeXt-XXS), then
    1x1 C -> ``expansion`` * C (act, BN) and 1x1 back to C (act, BN). Shape-preserving:
    ``(B, C, H, W) -> (B, C, H, W)``.

    Args:
        spatial_dims: must be 2.
        channels: input and output channels.
        kernel_size: depthwise kernel size.
        num_mixers: number of residual depthwise convolutions.
        expansion: channel expansion of the pointwise MLP.
        act: activation name or ``(name, kwargs)``.
        norm: normalization name or ``(name, kwargs)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        kernel_size: int,
        num_mixers: int = 1,
        expansion: int = 4,
        act: str | tuple = "gelu",
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        if num_mixers < 1:
            raise ValueError(f"num_mixers must be >= 1, got {num_mixers}.")
        self.mixers = nn.Sequential(
            *[ResidualDepthwise(spatial_dims, channels, kernel_size, act=act, norm=norm) for _ in range(num_mixers)]
        )
        hidden = channels * expansion
        self.expand = ConvActNorm(spatial_dims, channels, hidden, 1, act=act, norm=norm)
        self.contract = ConvActNorm(spatial_dims, hidden, channels, 1, act=act, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.contract(self.expand(self.mixers(x)))


class CMUNeXtStage(nn.Module):
    """An encoder stage: ``depth`` CMUNeXt blocks at the incoming width, then a 3x3 projection to the new width.

    ``(B, C_in, H, W) -> (B, C_out, H, W)``; downsampling, where used, happens before the stage.

    Args:
        spatial_dims: must be 2.
        in_channels: incoming width (the blocks run at this width).
        out_channels: width after the closing 3x3 convolution.
        depth: number of CMUNeXt blocks.
        kernel_size: depthwise kernel size of the blocks.
        num_mixers: residual depthwise convolutions per block.
        act: activation inside the blocks.
        conv_act: activation of the closing 3x3 convolution.
        norm: normalization name or ``(name, kwargs)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        depth: int,
        kernel_size: int,
        num_mixers: int = 1,
        act: str | tuple = "gelu",
        conv_act: str | tuple = "relu",
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *[
                CMUNeXtBlock(spatial_dims, in_channels, kernel_size, num_mixers=num_mixers, act=act, norm=norm)
                for _ in range(depth)
            ]
        )
        self.project = ConvNormAct(spatial_dims, in_channels, out_channels, 3, act=conv_act, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.blocks(x))


class UpConv(nn.Module):
    """x2 upsampling then 3x3 conv -> BN -> act: ``(B, C_in, H, W) -> (B, C_out, 2H, 2W)``.

    Args:
        spatial_dims: must be 2.
        in_channels: input channels.
        out_channels: output channels.
        mode: ``"bilinear"`` (CMUNeXt-XXS) or ``"nearest"`` (original CMUNeXt).
        act: activation name or ``(name, kwargs)``.
        norm: normalization name or ``(name, kwargs)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        mode: str = "bilinear",
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        if mode not in ("bilinear", "nearest"):
            raise ValueError(f"upsample mode must be 'bilinear' or 'nearest', got {mode!r}.")
        # align_corners=False is nn.Upsample's default, which the reference uses.
        self.up = nn.Upsample(scale_factor=2.0, mode=mode, align_corners=False if mode == "bilinear" else None)
        self.conv = ConvNormAct(spatial_dims, in_channels, out_channels, 3, act=act, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up(x))


class SkipFusion(nn.Module):
    """Skip fusion of encoder and decoder features.

    ``fusion="add"`` (CMUNeXt-XXS): ``f = skip + up`` at C channels; ``fusion="concat"`` (CMUNeXt):
    ``f = cat(skip, up)`` at 2C channels. Then a 3x3 convolution with 2 groups (act, BN), a 1x1 expansion
    to 4C (act, BN) and a 1x1 projection to C (act, BN). ``(B, C, H, W) x 2 -> (B, C, H, W)``.

    Args:
        spatial_dims: must be 2.
        channels: channels C of each of the two inputs and of the output.
        fusion: ``"add"`` or ``"concat"``.
        expansion: expansion of the pointwise MLP (relative to the output channels).
        act: activation name or ``(name, kwargs)``.
        norm: normalization name or ``(name, kwargs)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        fusion: str = "add",
        expansion: int = 4,
        act: str | tuple = "gelu",
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        if fusion not in ("add", "concat"):
            raise ValueError(f"fusion must be 'add' or 'concat', got {fusion!r}.")
        self.concat = fusion == "concat"
        width = 2 * channels if self.concat else channels
        if width % 2:
            raise ValueError(f"the grouped 3x3 convolution needs an even width, got {width} channels.")
        self.group_conv = ConvActNorm(spatial_dims, width, width, 3, groups=2, act=act, norm=norm)
        self.expand = ConvActNorm(spatial_dims, width, channels * expansion, 1, act=act, norm=norm)
        self.contract = ConvActNorm(spatial_dims, channels * expansion, channels, 1, act=act, norm=norm)

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        x = torch.cat((skip, up), dim=1) if self.concat else skip + up
        return self.contract(self.expand(self.group_conv(x)))

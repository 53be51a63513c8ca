"""LV-UNet: a MobileNetV3-Large encoder (ImageNet weights) with fusible VanillaNet-style blocks.

J. Jiang, L. Cheng, M. Wang, H. Tian and Y. Liu, "LV-UNet: A Lightweight and Vanilla Model for Medical Image
Segmentation", arXiv:2408.16886.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from lightseg.networks.blocks.mobilenetv3 import LARGE_SPECS, ConvBNAct, InvertedResidual
from lightseg.networks.blocks.vanilla import FusibleBlock, reparameterize_model, set_deep_training_slope
from lightseg.networks.layers import check_input_size

__all__ = ["LVUNet"]

logger = logging.getLogger(__name__)

# A fused FusibleBlock's single 1x1 convolution is ``<block>.conv1`` itself (``conv1.weight``); in the training form
# ``conv1`` is a conv + BN sequence (``conv1.0.weight``).
_DEPLOYED_KEY = re.compile(r"(^|\.)conv1\.weight$")

# MobileNetV3-Large features[1..9] split into the paper's groups I-III (r1-r2, r3-r5, r6-r9).
_GROUPS = ((0, 2), (2, 5), (5, 9))


class LVUNet(nn.Module):
    """LV-UNet in its training form; :func:`lightseg.networks.reparameterize_model` gives the deployment form.

    Encoder: MobileNetV3-Large ``features[0]`` (16 ch, H/2), ``features[1..2]`` (24 ch, H/4), ``features[3..5]``
    (40 ch, H/8), ``features[6..9]`` (80 ch, H/16), under torchvision's key names ``features.{0..9}`` so that
    :func:`lightseg.networks.pretrained.load_mobilenet_v3_encoder` loads ImageNet weights into it; then fusible
    encoder blocks 80 -> 160 -> 240 -> 480 (down to H/128). Decoder: fusible blocks 480 -> 240 -> 160 -> 80
    adding the encoder outputs of the same size, 80 -> 40 (+ ``features[5]``), 40 -> 24 (+ ``features[2]``),
    24 -> 16, a final 16 -> 16 block to full size and a 1x1 head. All skips are additions.

    Input ``(B, in_channels, H, W)`` with H, W divisible by 128; output ``(B, out_channels, H, W)`` logits.

    Args:
        spatial_dims: must be 2.
        in_channels: input channels (3 for the ImageNet stem; other counts adapt the stem when loading weights).
        out_channels: output channels.
        dims: widths of the fusible encoder path, starting at the MobileNet output width 80.
        decoder_dims: widths of the second decoder part, from 80 down to 16.
        act_num: n of the series-informed activation (kernel 2n+1).
        fuse_on_load: fuse into the deployment form (513,585 parameters for 3->1) right after
            :meth:`load_state_dict` loads training-form weights whose deep training is finished (every block's
            LeakyReLU slope is 1; otherwise the training form is kept, with a warning). For inference configs:
            servers that load ``model.pt`` into ``network_def`` themselves (MONAI Label, MONAI Deploy, zoo tools)
            then run the deployment form without running any fusing handler.

    :meth:`load_state_dict` accepts both forms: deployment-form weights (e.g. a fused model's ``state_dict()``)
    first switch this network to the deployment structure, then load.
    """

    __jit_unused_properties__ = ["deployed"]  # TorchScript skips this property

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        *,
        dims: Sequence[int] = (80, 160, 240, 480),
        decoder_dims: Sequence[int] = (80, 40, 24, 16),
        act_num: int = 1,
        fuse_on_load: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"LV-UNet is a 2D network, got spatial_dims={spatial_dims}.")
        if dims[0] != 80 or decoder_dims[0] != dims[0] or tuple(decoder_dims[1:3]) != (40, 24):
            raise ValueError(
                "dims must start at 80 (MobileNetV3 features[9]) and decoder_dims must be (80, 40, 24, ...) to add "
                f"the encoder skips; got dims={tuple(dims)}, decoder_dims={tuple(decoder_dims)}."
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.divisor = 16 * 2 ** (len(dims) - 1)
        self.features = nn.Sequential(
            ConvBNAct(in_channels, 16, 3, stride=2, act="HS"), *[InvertedResidual(spec) for spec in LARGE_SPECS[:9]]
        )
        self.down = nn.ModuleList(FusibleBlock(dims[i], dims[i + 1], "down", act_num) for i in range(len(dims) - 1))
        self.up = nn.ModuleList(FusibleBlock(dims[i], dims[i - 1], "up", act_num) for i in range(len(dims) - 1, 0, -1))
        self.up2 = nn.ModuleList(
            FusibleBlock(decoder_dims[i], decoder_dims[i + 1], "up", act_num) for i in range(len(decoder_dims) - 1)
        )
        self.final = FusibleBlock(decoder_dims[-1], decoder_dims[-1], "up", act_num)
        self.head = nn.Conv2d(decoder_dims[-1], out_channels, 1)
        self.fuse_on_load = bool(fuse_on_load)

    @property
    def deployed(self) -> bool:
        """True once every fusible block is in its deployment form."""
        return all(m.deployed for m in self.modules() if isinstance(m, FusibleBlock))

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True, assign: bool = False):
        """:meth:`torch.nn.Module.load_state_dict` for weights in either form; fuses after loading when
        ``fuse_on_load`` (see the class docstring)."""
        deployed_weights = any(_DEPLOYED_KEY.search(k) for k in state_dict)
        if deployed_weights and not self.deployed:
            self._to_deployment_structure()
        elif not deployed_weights and self.deployed and any(k.endswith("conv2.0.weight") for k in state_dict):
            raise ValueError(
                "training-form LV-UNet weights cannot be loaded into a fused (deployment-form) network; build a new "
                "network (create_network('lvunet', ...)) and load them into it."
            )
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if self.fuse_on_load and not self.deployed:
            slopes = sorted({float(m.slope) for m in self.modules() if isinstance(m, FusibleBlock)})
            if slopes == [1.0]:
                before = sum(p.numel() for p in self.parameters())
                was_training = self.training
                reparameterize_model(self, inplace=True)
                self.train(was_training)
                after = sum(p.numel() for p in self.parameters())
                logger.info("LV-UNet fused on load: %s parameters -> %s (deployment form)", f"{before:,}", f"{after:,}")
            else:
                logger.warning(
                    "LV-UNet weights not fused on load: deep training is not finished (LeakyReLU slopes %s, fusing "
                    "needs 1); running the training form, which computes the same function more slowly.",
                    ", ".join(f"{s:g}" for s in slopes),
                )
        return result

    @torch.no_grad()
    def _to_deployment_structure(self) -> None:
        """Replace every training-form block by its deployment structure (values are overwritten by the load)."""
        was_training = self.training
        set_deep_training_slope(self, 1.0)
        reparameterize_model(self, inplace=True)
        self.train(was_training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x, self.divisor, "LV-UNet")
        skips: list[torch.Tensor] = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == 2 or i == 5:  # ends of groups I and II: 24 ch at H/4, 40 ch at H/8
                skips.append(x)
        encoder: list[torch.Tensor] = []
        for block in self.down:
            encoder.append(x)
            x = block(x)
        for j, block in enumerate(self.up):
            x = block(x) + encoder[len(encoder) - 1 - j]
        for j, block in enumerate(self.up2):
            x = block(x)
            if j < len(skips):
                x = x + skips[len(skips) - 1 - j]
        return self.head(self.final(x))

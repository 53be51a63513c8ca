"""Networks, their blocks and the name registry.

Registered variants (``list_networks()``):

- ``cmunext_xxs``: CMUNeXt-XXS as measured on the authors' code (depths 3,1,1,1,2; 40,837 params for 3->1).
- ``cmunext_xxs_table2``: CMUNeXt-XXS with the paper's Table II depths 3,1,1,2,3 (48,393 params).
- ``cmunext``, ``cmunext_s``, ``cmunext_l``: the original CMUNeXt family (concatenation fusion, GELU).
- ``lvunet``: LV-UNet in its training form (934,545 params for 3->1); ``reparameterize_model`` gives the
  deployment form (513,585).
- ``litenext``: LiteNeXt (C = 16, 7x7 depthwise kernels; 711,201 params for 3->1), without SeRP's training-only
  parts (``lightseg.training.SeRP`` adds them).
- ``litenext_k3``: LiteNeXt with the 3x3 depthwise kernels of the authors' code default (701,601 params).
- ``mininet``: Mini-Net, the literal reading of the paper's equations (depthwise-separable f^{kxk}, transposed
  f_d; 38,193 params for 3->1, 514 BatchNorm channels).
- ``mininet_paper_counts``: a Mini-Net reconstruction reproducing the published counts exactly for RGB input
  (36,657 params, 514 BN channels): expand-and-squeeze f^{kxk} in eqs. 2/7, 2x2 separable down-sampling.
- ``mininet_paper_counts_gray``: the other exact reconstruction, for 1-channel input (grouped f^{kxk}).
"""

from __future__ import annotations

from lightseg.networks.blocks.vanilla import reparameterize_model, set_deep_training_slope
from lightseg.networks.nets import CMUNeXt, LiteNeXt, LVUNet, MiniNet
from lightseg.networks.registry import create_network, list_networks, network_defaults, register_network

__all__ = [
    "CMUNeXt",
    "LVUNet",
    "LiteNeXt",
    "MiniNet",
    "create_network",
    "list_networks",
    "network_defaults",
    "register_network",
    "reparameterize_model",
    "set_deep_training_slope",
]

# The original CMUNeXt family: GELU inside blocks and fusion, ReLU in the plain convolutions, one residual
# depthwise convolution per block, bilinear upsampling: the published thop MACs (7.4177 G, 1.0901 G, 17.1832 G)
# are reproduced to the MAC only with thop's 11 x numel bilinear charge, not with nearest (1 x numel).
_ORIGINAL = {"num_mixers": 1, "fusion": "concat", "upsample": "bilinear", "act": "gelu", "conv_act": "relu"}
register_network(
    "cmunext", CMUNeXt, channels=(16, 32, 128, 160, 256), depths=(1, 1, 1, 3, 1), kernel_sizes=(3, 3, 7, 7, 7),
    **_ORIGINAL,
)  # fmt: skip
register_network(
    "cmunext_s", CMUNeXt, channels=(8, 16, 32, 64, 128), depths=(1, 1, 1, 1, 1), kernel_sizes=(3, 3, 7, 7, 9),
    **_ORIGINAL,
)  # fmt: skip
register_network(
    "cmunext_l", CMUNeXt, channels=(32, 64, 128, 256, 512), depths=(1, 1, 1, 6, 3), kernel_sizes=(3, 3, 7, 7, 7),
    **_ORIGINAL,
)  # fmt: skip
# CMUNeXt-XXS: additive fusion, Hardswish everywhere, bilinear upsampling, two residual depthwise convs per block.
_XXS = {"num_mixers": 2, "fusion": "add", "upsample": "bilinear", "act": "hardswish", "conv_act": "hardswish"}
register_network(
    "cmunext_xxs", CMUNeXt, channels=(8, 10, 12, 16, 24), depths=(3, 1, 1, 1, 2), kernel_sizes=(3, 3, 7, 7, 9),
    **_XXS,
)  # fmt: skip
register_network(
    "cmunext_xxs_table2", CMUNeXt, channels=(8, 10, 12, 16, 24), depths=(3, 1, 1, 2, 3),
    kernel_sizes=(3, 3, 7, 7, 9), **_XXS,
)  # fmt: skip
register_network("lvunet", LVUNet, dims=(80, 160, 240, 480), decoder_dims=(80, 40, 24, 16), act_num=1)
# Mini-Net (no public code): the literal reading is the default; two reconstructions reproduce the published
# 36,657 trainable parameters and 1,028 BatchNorm statistics exactly (bundles/mininet/docs/README.md).
register_network("mininet", MiniNet, conv="separable", down="conv3x3")
register_network(
    "mininet_paper_counts", MiniNet, conv="separable_squeeze", out_conv="separable", down="separable2x2"
)  # fmt: skip
register_network("mininet_paper_counts_gray", MiniNet, in_channels=1, conv="grouped", down="conv3x3")
register_network("litenext", LiteNeXt, width=16, kernel_size=7)
register_network("litenext_k3", LiteNeXt, width=16, kernel_size=3)

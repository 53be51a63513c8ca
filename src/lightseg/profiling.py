"""Parameter and multiply-accumulate (MAC) counting, with no dependency beyond PyTorch.

Two conventions are reported, because papers and tools disagree:

``conv_macs`` (our headline figure)
    Multiply-accumulates of convolutions, transposed convolutions and matrix products (linear layers),
    bias excluded, as counted by ``torch.utils.flop_counter.FlopCounterMode`` (which counts 2 FLOPs per MAC;
    we halve it). Normalization, activations, pooling, interpolation and element-wise additions are not
    counted. Functional convolutions (``F.conv2d``) are counted too, since the counter works on ATen ops.

``thop_macs`` (the convention of the CMUNeXt and LV-UNet papers' tables)
    ``conv_macs`` plus what ``thop.profile`` adds for modules: 4 x numel for BatchNorm/LayerNorm/GroupNorm
    outputs (2 x input numel, doubled when affine), 11 x output numel for bilinear ``nn.Upsample`` and 1 x for
    nearest. thop hooks modules only, so it misses functional convolutions; we do not, which is why our
    ``thop_macs`` can exceed thop's own figure for networks that call ``F.conv2d`` directly.

For CMUNeXt-XXS at 1x3x256x256 these give 382,132,224 conv MACs and 468,164,608 thop-convention MACs, the
authors' own table entry (468.165M MACs).

``bias_macs`` (the convention of the LiteNeXt paper's 0.42 G)
    ``conv_macs`` plus one addition per output element of every convolution and linear layer with a bias (what
    ``ptflops`` counts with its ATen backend): 417,452,784 for LiteNeXt at 1x3x256x256.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["Complexity", "count_macs", "count_parameters", "profile"]

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


def _is_norm(module: nn.Module) -> bool:
    """thop counts norms by module type; lightseg's channel LayerNorm (LiteNeXt) is one too."""
    return isinstance(module, _NORMS) or type(module).__name__ == "ChannelLayerNorm"


@dataclass(frozen=True)
class Complexity:
    """Counts for one model at one input shape."""

    params: int
    trainable_params: int
    conv_macs: int
    thop_macs: int
    input_shape: tuple[int, ...]
    bias_macs: int = 0

    def as_dict(self) -> dict:
        return {
            "params": self.params,
            "trainable_params": self.trainable_params,
            "conv_macs": self.conv_macs,
            "thop_macs": self.thop_macs,
            "bias_macs": self.bias_macs,
            "input_shape": list(self.input_shape),
        }


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (buffers such as BatchNorm running statistics are not parameters)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, input_shape: Sequence[int] = (1, 3, 256, 256)) -> int:
    """Convolution + matrix-product MACs of one forward pass in eval mode (see the module docstring)."""
    return profile(model, input_shape).conv_macs


def profile(model: nn.Module, input_shape: Sequence[int] = (1, 3, 256, 256)) -> Complexity:
    """Parameters and MACs (both conventions) of ``model`` on a zero input of ``input_shape``.

    The model is run once in eval mode under ``torch.no_grad()`` and returned to its previous mode.
    """
    extra = [0]
    bias = [0]

    def bias_hook(module: nn.Module, inputs, output) -> None:
        bias[0] += output.numel()

    def norm_hook(module: nn.Module, inputs, output) -> None:
        affine = getattr(module, "affine", getattr(module, "elementwise_affine", hasattr(module, "weight")))
        extra[0] += inputs[0].numel() * (4 if affine else 2)

    def upsample_hook(module: nn.Upsample, inputs, output) -> None:
        extra[0] += output.numel() * (11 if module.mode in ("bilinear", "bicubic") else 1)

    handles = []
    for module in model.modules():
        if _is_norm(module):
            handles.append(module.register_forward_hook(norm_hook))
        elif isinstance(module, nn.Upsample):
            handles.append(module.register_forward_hook(upsample_hook))
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) and module.bias is not None:
            handles.append(module.register_forward_hook(bias_hook))

    was_training = model.training
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros(tuple(input_shape), device=device))
        conv_macs = counter.get_total_flops() // 2
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return Complexity(
        params=count_parameters(model),
        trainable_params=count_parameters(model, trainable_only=True),
        conv_macs=int(conv_macs),
        thop_macs=int(conv_macs + extra[0]),
        input_shape=tuple(int(s) for s in input_shape),
        bias_macs=int(conv_macs + bias[0]),
    )

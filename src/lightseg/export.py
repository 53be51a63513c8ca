"""Exporting a bundle's network: TorchScript (MONAI's ``ckpt_export``, configs embedded) and ONNX.

Every export is checked against the eager PyTorch model on random inputs of two sizes before it is reported
as done, and the maximum absolute difference is logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = ["export_onnx", "export_torchscript", "load_bundle_network", "max_abs_diff"]

logger = logging.getLogger(__name__)


def load_bundle_network(
    bundle_dir: str | os.PathLike,
    ckpt: str | os.PathLike | None = None,
    config: str = "inference.json",
    net_id: str = "network_def",
) -> nn.Module:
    """Instantiate ``net_id`` from a bundle config and load a plain ``state_dict`` (``weights_only=True``).

    ``ckpt`` defaults to ``<bundle>/models/model.pt``; ``{"model": state_dict}`` checkpoints are accepted too.
    Returns the network in eval mode on the CPU.
    """
    from monai.bundle import ConfigParser

    bundle = Path(bundle_dir)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / config))
    parser["bundle_root"] = str(bundle)
    net = parser.get_parsed_content(net_id)
    ckpt = Path(ckpt) if ckpt is not None else bundle / "models" / "model.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist: train the bundle first or pass --ckpt.")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    net.load_state_dict(state)
    return net.eval()


def max_abs_diff(reference: nn.Module, run, shapes: Sequence[Sequence[int]], seed: int = 0) -> float:
    """Largest |reference(x) - run(x)| over random inputs of ``shapes``."""
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    with torch.no_grad():
        for shape in shapes:
            x = torch.randn(*shape, generator=gen)
            worst = max(worst, float((reference(x) - torch.as_tensor(run(x))).abs().max()))
    return worst


def export_torchscript(
    bundle_dir: str | os.PathLike,
    out: str | os.PathLike,
    ckpt: str | os.PathLike | None = None,
    config: str = "inference.json",
    check_shapes: Sequence[Sequence[int]] = ((1, 3, 256, 256), (2, 3, 96, 160)),
    atol: float = 1e-5,
) -> float:
    """``monai.bundle ckpt_export`` (scripted, with metadata.json and the config embedded), then a check.

    Returns the max abs difference to the eager model; raises ``AssertionError`` above ``atol``.
    """
    from monai.bundle import ckpt_export

    bundle = Path(bundle_dir)
    ckpt = Path(ckpt) if ckpt is not None else bundle / "models" / "model.pt"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    ckpt_export(
        net_id="network_def",
        filepath=str(out),
        ckpt_file=str(ckpt),
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / config),
        bundle_root=str(bundle),
    )
    eager = load_bundle_network(bundle, ckpt, config)
    scripted = torch.jit.load(str(out))
    diff = max_abs_diff(eager, scripted, check_shapes)
    logger.info("TorchScript %s: max |scripted - eager| = %.3g", out, diff)
    if diff > atol:
        raise AssertionError(f"TorchScript export {out} differs from the eager model by {diff:.3g} > {atol}.")
    return diff


def export_onnx(
    net: nn.Module,
    out: str | os.PathLike,
    example_shape: Sequence[int] = (1, 3, 256, 256),
    check_shapes: Sequence[Sequence[int]] = ((1, 3, 256, 256), (2, 3, 96, 160)),
    atol: float = 1e-4,
) -> float:
    """Export to ONNX with dynamic batch, height and width (input ``image``, output ``pred``), then check the
    result with ONNX Runtime when it is installed. Returns the max abs difference (NaN when not checked).
    """
    try:
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError as e:
        raise ImportError("ONNX export needs `pip install onnx onnxscript` (extra: lightseg[onnx]).") from e
    net = net.eval()
    dim = torch.export.Dim
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        net,
        (torch.zeros(*example_shape),),
        str(out),
        input_names=["image"],
        output_names=["pred"],
        dynamic_shapes=({0: dim("batch"), 2: dim.DYNAMIC, 3: dim.DYNAMIC},),
        dynamo=True,
        verbose=False,
    )
    try:
        import onnxruntime as ort
    except ImportError:
        logger.warning("onnxruntime is not installed: %s was written but not checked", out)
        return float("nan")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    diff = max_abs_diff(net, lambda x: session.run(None, {"image": x.numpy()})[0], check_shapes)
    logger.info("ONNX %s: max |onnxruntime - eager| = %.3g", out, diff)
    if diff > atol:
        raise AssertionError(f"ONNX export {out} differs from the eager model by {diff:.3g} > {atol}.")
    return diff

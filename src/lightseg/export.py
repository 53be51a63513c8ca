"""Exporting a bundle's network: TorchScript (configs embedded, as MONAI's ``ckpt_export`` does) and ONNX.

Networks with fusible blocks (LV-UNet) are exported in their deployment form: the training-form checkpoint is
loaded, :func:`lightseg.networks.reparameterize_model` fuses it, and the fused network is scripted and saved with
``metadata.json`` and the inference config embedded exactly as ``ckpt_export`` embeds them; other networks are
scripted as they are. The embedded config carries the model's settings (``settings.json`` beside the checkpoint:
network, channels, image size, normalization) as literal values.

Every export is checked against the eager PyTorch (training-form) model on random inputs of two sizes before it
is reported as done, and the maximum absolute difference is logged.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from lightseg.networks import reparameterize_model
from lightseg.utils import atomic_path

__all__ = [
    "archive_root",
    "check_shapes_for",
    "compare",
    "export_onnx",
    "export_torchscript",
    "is_fusible",
    "load_bundle_network",
    "read_embedded_configs",
    "travelling_settings",
]

logger = logging.getLogger(__name__)


def travelling_settings(bundle_dir: str | os.PathLike, ckpt: str | os.PathLike, config: str = "inference.json") -> dict:
    """The values of :data:`lightseg.settings.INFERENCE_KEYS` for the model ``ckpt``, as literals: the training's
    (``settings.json`` beside it) where saved, else the config's defaults, evaluated. Exports embed them, so an
    archive carries its preprocessing and MONAI Deploy never evaluates an expression that needs the bundle."""
    from monai.bundle import ConfigParser

    from lightseg.settings import INFERENCE_KEYS

    parser = ConfigParser()
    parser.read_config(str(Path(bundle_dir) / "configs" / config))
    parser["bundle_root"] = str(bundle_dir)
    parser["ckpt_path"] = str(ckpt)
    values = {}
    for key in INFERENCE_KEYS:
        value = parser.get_parsed_content(key)
        values[key] = list(value) if isinstance(value, tuple) else value
    return values


def load_bundle_network(
    bundle_dir: str | os.PathLike,
    ckpt: str | os.PathLike | None = None,
    config: str = "inference.json",
    net_id: str = "network_def",
    overrides: dict | None = None,
) -> nn.Module:
    """Instantiate ``net_id`` from a bundle config and load a plain ``state_dict`` (``weights_only=True``).

    ``ckpt`` defaults to ``<bundle>/models/model.pt``; ``{"model": state_dict}`` checkpoints are accepted too.
    ``overrides`` replace config ids (e.g. ``{"network_name": "mininet_paper_counts"}`` for a model trained as
    another variant). Returns the network in eval mode on the CPU.
    """
    from monai.bundle import ConfigParser

    bundle = Path(bundle_dir)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / config))
    parser["bundle_root"] = str(bundle)
    for key, value in (overrides or {}).items():
        parser[key] = value
    net = parser.get_parsed_content(net_id)
    ckpt = Path(ckpt) if ckpt is not None else bundle / "models" / "model.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist: train the bundle first or pass --ckpt.")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise RuntimeError(
            f"{ckpt} does not fit the bundle's network {type(net).__name__} (was it trained with another "
            f"--network_name or channel count? pass the same overrides): {e}"
        ) from e
    return net.eval()


def is_fusible(net: nn.Module) -> bool:
    """Whether ``net`` has modules with a deployment form (``reparameterize``)."""
    return any(m is not net and hasattr(m, "reparameterize") for m in net.modules())


def check_shapes_for(net: nn.Module) -> list[tuple[int, ...]]:
    """Two input shapes the network accepts: square 256 (or its divisor) and a non-square batch of 2."""
    divisor = int(getattr(net, "divisor", 16))
    channels = int(getattr(net, "in_channels", 3))
    side = max(256, divisor)
    return [(1, channels, side, side), (2, channels, divisor, 3 * divisor)]


def compare(reference: nn.Module, run, shapes: Sequence[Sequence[int]], seed: int = 0) -> tuple[float, float]:
    """(largest |reference(x) - run(x)|, largest |reference(x)|) over random inputs of ``shapes``."""
    gen = torch.Generator().manual_seed(seed)
    worst, scale = 0.0, 0.0
    with torch.no_grad():
        for shape in shapes:
            x = torch.randn(*shape, generator=gen)
            ref = reference(x)
            worst = max(worst, float((ref - torch.as_tensor(run(x))).abs().max()))
            scale = max(scale, float(ref.abs().max()))
    return worst, scale


def archive_root(path: str | os.PathLike) -> str:
    """The root folder of a TorchScript zip archive (every member lies under it)."""
    with zipfile.ZipFile(path) as zf:
        roots = {name.split("/", 1)[0] for name in zf.namelist()}
    if len(roots) != 1:
        raise ValueError(f"{path} is not a TorchScript archive with one root folder: {sorted(roots)}")
    return roots.pop()


def read_embedded_configs(path: str | os.PathLike, names: Sequence[str] = ("metadata.json", "inference.json")) -> dict:
    """The JSON configs embedded in a TorchScript file, read the way MONAI Deploy's bundle operator reads them:
    ``<root>/extra/<name>`` where ``<root>`` is ``model`` or the file's stem. Raises ``KeyError`` naming the
    file when one is missing under that root."""
    import json

    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        members = set(zf.namelist())
        for root in ("model", path.stem):
            if all(f"{root}/extra/{n}" in members for n in names):
                return {n: json.loads(zf.read(f"{root}/extra/{n}")) for n in names}
    raise KeyError(
        f"{path}: no {', '.join(names)} under 'model/extra/' or '{path.stem}/extra/' (archive root: "
        f"{archive_root(path)!r}); MONAI Deploy would run it without its pre/postprocessing."
    )


def _check(kind: str, out: Path, diff: float, scale: float, atol: float, rtol: float) -> None:
    """Raise unless ``diff <= atol + rtol * scale`` (inside ``atomic_path``: nothing is then written)."""
    logger.info("%s %s: max |export - eager| = %.3g (max |eager| = %.3g)", kind, out, diff, scale)
    if diff > atol + rtol * scale:
        raise AssertionError(
            f"{kind} export {out} differs from the eager model by {diff:.3g} > {atol:g} + {rtol:g} * {scale:.3g}; "
            "nothing was written."
        )


def export_torchscript(
    bundle_dir: str | os.PathLike,
    out: str | os.PathLike,
    ckpt: str | os.PathLike | None = None,
    config: str = "inference.json",
    deploy: bool | None = None,
    check_shapes: Sequence[Sequence[int]] | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    overrides: dict | None = None,
) -> float:
    """Write a TorchScript file with ``metadata.json`` and the config embedded, after checking it.

    ``deploy`` (default: whenever the network has fusible blocks) exports the re-parameterized network.
    Returns the max abs difference to the eager training-form model; raises ``AssertionError`` (and writes
    nothing) when it exceeds ``atol + rtol * max|output|``: float32 rounding grows with the logits' magnitude.
    """
    import json

    from monai.data import save_net_with_metadata

    bundle = Path(bundle_dir)
    ckpt = Path(ckpt) if ckpt is not None else bundle / "models" / "model.pt"
    overrides = {**travelling_settings(bundle, ckpt, config), **(overrides or {})}
    eager = load_bundle_network(bundle, ckpt, config, overrides=overrides)
    deploy = is_fusible(eager) if deploy is None else deploy
    out = Path(out)
    meta_file = bundle / "configs" / "metadata.json"
    config_file = bundle / "configs" / config
    # atomic_path keeps the file name: the archive's root folder is then "model/" as MONAI Deploy expects
    with atomic_path(out) as tmp:
        # embedded by hand, not by ckpt_export: the config carries the model's settings as literal values
        from lightseg.bundles import network_metadata

        fused = reparameterize_model(eager) if deploy else eager
        config_values = json.loads(config_file.read_text())
        meta = network_metadata(meta_file, **{k: overrides[k] for k in ("in_channels", "out_channels", "labels")})
        extra = {config_file.name: json.dumps({**config_values, **overrides}).encode()}
        save_net_with_metadata(
            torch.jit.script(fused), str(tmp), include_config_vals=False, meta_values=meta, more_extra_files=extra
        )
        logger.info(
            "%s: %s -> %s parameters",
            "deployment form" if deploy else "exported as is",
            *(f"{sum(p.numel() for p in m.parameters()):,}" for m in (eager, fused)),
        )
        read_embedded_configs(tmp, ("metadata.json", config_file.name))  # the layout MONAI Deploy reads
        diff, scale = compare(eager, torch.jit.load(str(tmp)), check_shapes or check_shapes_for(eager))
        _check("TorchScript", out, diff, scale, atol, rtol)
    return diff


ONNX_OPSET = 18


def export_onnx(
    net: nn.Module,
    out: str | os.PathLike,
    example_shape: Sequence[int] = (2, 3, 256, 256),
    check_shapes: Sequence[Sequence[int]] | None = None,
    atol: float = 1e-4,
    deploy: bool | None = None,
    rtol: float = 1e-5,
) -> float:
    """Export to ONNX with dynamic batch, height and width (input ``image``, output ``pred``), then check the
    result with ONNX Runtime when it is installed. Returns the max abs difference (NaN when not checked).
    """
    try:
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError as e:
        raise ImportError("ONNX export needs `pip install onnx onnxscript` (extra: lightseg[onnx]).") from e
    net = net.eval()
    deploy = is_fusible(net) if deploy is None else deploy
    exported = reparameterize_model(net) if deploy else net
    check_shapes = check_shapes or check_shapes_for(net)
    dim = torch.export.Dim
    out = Path(out)
    with atomic_path(out) as tmp:
        # a batch of 2: with 1, torch.export may specialize the batch axis to 1 (LiteNeXt does)
        example = (torch.zeros(max(2, int(example_shape[0])), *example_shape[1:]),)
        common = {"input_names": ["image"], "output_names": ["pred"], "verbose": False}
        try:
            dynamic = ({0: dim("batch"), 2: dim.DYNAMIC, 3: dim.DYNAMIC},)
            torch.onnx.export(exported, example, str(tmp), dynamic_shapes=dynamic, dynamo=True, **common)
        except Exception as e:  # the torch.export-based exporter cannot solve some shape constraints (LV-UNet)
            logger.info("torch.export ONNX export failed (%s); using the TorchScript-based exporter", type(e).__name__)
            axes = {0: "batch", 2: "height", 3: "width"}
            torch.onnx.export(
                exported,
                example,
                str(tmp),
                dynamic_axes={"image": axes, "pred": axes},
                dynamo=False,
                opset_version=ONNX_OPSET,
                **common,
            )
        try:
            import onnxruntime as ort
        except ImportError:
            logger.warning("onnxruntime is not installed: %s was written but not checked", out)
            return float("nan")
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        diff, scale = compare(net, lambda x: session.run(None, {"image": x.numpy()})[0], check_shapes)
        _check("ONNX", out, diff, scale, atol, rtol)
    return diff

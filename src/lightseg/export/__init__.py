"""Exporting a bundle's network: TorchScript (configs embedded, as MONAI's ``ckpt_export`` does), ONNX (fp32 and
static INT8) and ``torch.export`` programs (.pt2). ``python -m lightseg.export <bundle> --format ...`` runs
:func:`export_bundle`.

Networks with fusible blocks (LV-UNet) are exported in their deployment form: the training-form checkpoint is
loaded, :func:`lightseg.networks.reparameterize_model` fuses it, and the fused network is scripted and saved with
``metadata.json`` and the inference config embedded exactly as ``ckpt_export`` embeds them; other networks are
scripted as they are. Every export carries the model's settings (``settings.json`` beside the checkpoint:
network, channels, image size, normalization): as literal values in the embedded config of a TorchScript file, in
the JSON beside the other formats.

Every export is checked against the eager PyTorch (training-form) model before it is written (fp32: max abs
difference on random inputs of two sizes; INT8: Dice agreement of the thresholded masks on preprocessed datalist
images), and nothing is written when the check fails. Each file gets a JSON beside it (``<file>.json``: format,
check results, the checkpoint's SHA-256 and the bundle metadata) that :mod:`lightseg.backends` reads.
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
    "DEFAULT_FILES",
    "FORMATS",
    "ONNX_OPSET",
    "archive_root",
    "calibration_images",
    "check_shapes_for",
    "compare",
    "export_bundle",
    "export_onnx",
    "export_onnx_int8",
    "export_torch_export",
    "export_torchscript",
    "is_fusible",
    "load_bundle_network",
    "mask_agreement",
    "read_embedded_configs",
    "sidecar_path",
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


ONNX_OPSET = 18  # the ONNX opset of every ONNX export (stored in the model and in its metadata_props)


def _set_onnx_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Write ``metadata`` (strings) into the ONNX file's ``metadata_props``, plus the opset it was written with."""
    import onnx

    model = onnx.load(str(path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), ONNX_OPSET)
    values = {**{k: str(v) for k, v in metadata.items()}, "opset": str(opset)}
    existing = {p.key: p for p in model.metadata_props}
    for key, value in values.items():
        if key in existing:
            existing[key].value = value
        else:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.save(model, str(path))


def export_onnx(
    net: nn.Module,
    out: str | os.PathLike,
    example_shape: Sequence[int] = (2, 3, 256, 256),
    check_shapes: Sequence[Sequence[int]] | None = None,
    atol: float = 1e-4,
    deploy: bool | None = None,
    rtol: float = 1e-5,
    metadata: dict[str, str] | None = None,
) -> float:
    """Export to ONNX (opset :data:`ONNX_OPSET`) with dynamic batch, height and width (input ``image``, output
    ``pred``), then check the result with ONNX Runtime when it is installed. ``metadata`` becomes the model's
    ``metadata_props`` (with ``opset`` and ``form`` added). Returns the max abs difference (NaN when not checked).
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
        common = {"input_names": ["image"], "output_names": ["pred"], "verbose": False, "opset_version": ONNX_OPSET}
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
                **common,
            )
        _set_onnx_metadata(tmp, {**(metadata or {}), "form": "deployment" if deploy else "as trained"})
        try:
            import onnxruntime as ort
        except ImportError:
            logger.warning("onnxruntime is not installed: %s was written but not checked", out)
            return float("nan")
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        diff, scale = compare(net, lambda x: session.run(None, {"image": x.numpy()})[0], check_shapes)
        _check("ONNX", out, diff, scale, atol, rtol)
    return diff


FORMATS = ("torchscript", "onnx", "onnx-int8", "torch-export")
# default file names in <bundle>/models/ (lightseg.backends looks for these)
DEFAULT_FILES = {
    "torchscript": "model.ts",
    "onnx": "model.onnx",
    "onnx-int8": "model_int8.onnx",
    "torch-export": "model.pt2",
}
INT8_MIN_AGREEMENT = 0.98


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON written beside an export: ``model.onnx`` -> ``model.onnx.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file (the checkpoint an export was built from is recorded by it)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _bundle_metadata(bundle: Path, config: str, overrides: dict) -> dict:
    """The bundle's ``metadata.json`` for the trained settings (as embedded in model.ts) and the config values."""
    import json

    from lightseg.bundles import network_metadata

    config_values = json.loads((bundle / "configs" / config).read_text())
    settings = {k: overrides.get(k, config_values.get(k)) for k in ("in_channels", "out_channels", "labels")}
    if not isinstance(settings["labels"], list):  # the config's default is an expression
        settings["labels"] = None
    return network_metadata(bundle / "configs" / "metadata.json", **settings)


def _write_sidecar(out: Path, payload: dict) -> None:
    import json

    with atomic_path(sidecar_path(out)) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def _parser(bundle: Path, config: str, overrides: dict):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / config))
    parser["bundle_root"] = str(bundle)
    for key, value in overrides.items():
        parser[key] = value
    return parser


def calibration_images(
    bundle_dir: str | os.PathLike,
    split: str = "training",
    count: int | None = 32,
    config: str = "inference.json",
    overrides: dict | None = None,
) -> list:
    """Up to ``count`` images of a datalist split, preprocessed exactly as the bundle's inference does (the
    ``preprocessing`` of ``config``, instantiated with ``monai.bundle.ConfigParser``): a list of float32 arrays
    of shape (1, C, H, W). ``overrides`` may set ``datalist``, ``dataset_dir``, ``image_size``...

    Raises ``ValueError`` naming the datalist when the split has no image.
    """
    import numpy as np

    import lightseg.bundles
    import lightseg.data

    parser = _parser(Path(bundle_dir), config, dict(overrides or {}))
    datalist, dataset_dir = parser.get_parsed_content("datalist"), parser.get_parsed_content("dataset_dir")
    in_channels = int(parser.get_parsed_content("in_channels"))
    try:
        lightseg.data.ensure_demo_data(datalist, dataset_dir)  # the demo datalist's images are generated on first use
        entries = lightseg.data.list_images(datalist, split, dataset_dir, in_channels=in_channels)
    except Exception as e:
        raise ValueError(f"no '{split}' images in the datalist {datalist} (choose another --calib_split): {e}") from e
    if count:
        entries = entries[: int(count)]
    preprocessing = parser.get_parsed_content("preprocessing")
    return [np.ascontiguousarray(np.asarray(preprocessing(dict(e))["image"], dtype=np.float32)[None]) for e in entries]


def _masks(logits, out_channels: int):
    """Thresholded masks as the bundles' postprocessing makes them (sigmoid > 0.5, or argmax)."""
    import numpy as np

    logits = np.asarray(logits)
    return logits[:, 0] > 0 if out_channels == 1 else logits.argmax(1)


def mask_agreement(reference: Sequence, other: Sequence, out_channels: int = 1) -> dict:
    """Dice agreement between two models' thresholded masks over a set of images (lists of logit arrays).

    ``dice`` pools every foreground pixel of every image (per class, averaged over the foreground classes when
    ``out_channels > 1``); ``min_image_dice`` is the worst single image (1 when both masks are empty);
    ``pixel_agreement`` is the fraction of identical pixels.
    """
    import numpy as np

    classes = [1] if out_channels == 1 else list(range(1, out_channels))
    inter = dict.fromkeys(classes, 0)
    total = dict.fromkeys(classes, 0)
    worst, same, pixels = 1.0, 0, 0
    for a, b in zip(reference, other, strict=True):
        ma, mb = _masks(a, out_channels), _masks(b, out_channels)
        same += int((ma == mb).sum())
        pixels += ma.size
        for c in classes:
            ca, cb = (ma == c, mb == c) if out_channels > 1 else (ma, mb)
            i, t = int((ca & cb).sum()), int(ca.sum() + cb.sum())
            inter[c] += i
            total[c] += t
            worst = min(worst, 2 * i / t if t else 1.0)
    dice = float(np.mean([2 * inter[c] / total[c] if total[c] else 1.0 for c in classes]))
    return {"dice": dice, "min_image_dice": worst, "pixel_agreement": same / max(pixels, 1), "images": len(reference)}


def export_onnx_int8(
    bundle_dir: str | os.PathLike,
    out: str | os.PathLike,
    ckpt: str | os.PathLike | None = None,
    calib_split: str = "training",
    calib_count: int = 32,
    check_split: str = "validation",
    check_count: int | None = 64,
    min_agreement: float = INT8_MIN_AGREEMENT,
    config: str = "inference.json",
    overrides: dict | None = None,
    per_channel: bool = True,
    fp32_onnx: str | os.PathLike | None = None,
    reduce_range: bool = True,
) -> dict:
    """Static INT8 quantization (ONNX Runtime's ``quantize_static``, QDQ format, per-channel INT8 weights, UINT8
    activations, MinMax calibration) of the bundle's fp32 ONNX export, calibrated on ``calib_count`` images of the
    datalist split ``calib_split`` preprocessed as inference does.

    The quantized model is accepted only if the Dice agreement of its thresholded masks with the eager model's is
    at least ``min_agreement`` on the calibration images AND on ``check_split`` (skipped, and said so, when that
    split is empty); otherwise ``AssertionError`` and nothing is written. Returns the agreement report (also in
    ``<out>.json``). ``fp32_onnx``: an fp32 export of the same checkpoint to quantize instead of exporting again.
    ``reduce_range`` (default): 7-bit weights, as ONNX Runtime advises for CPUs without VNNI, whose U8S8 kernels
    (AVX2 ``vpmaddubsw``) saturate 16-bit sums of 8-bit products: with 8-bit weights Mini-Net's agreement fell to
    0.966 on an AVX2-only CPU. The same file then stays accurate on CPUs with and without VNNI.
    """
    import tempfile

    import numpy as np
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    bundle = Path(bundle_dir)
    ckpt = Path(ckpt) if ckpt is not None else bundle / "models" / "model.pt"
    overrides = dict(overrides or {})
    eager = load_bundle_network(bundle, ckpt, config, overrides=overrides)
    out_channels = int(getattr(eager, "out_channels", 1))
    calib = calibration_images(bundle, calib_split, calib_count, config, overrides)
    try:
        check = calibration_images(bundle, check_split, check_count, config, overrides)
    except ValueError:
        check = []
        logger.warning("INT8 %s: no '%s' images: agreement checked on the calibration images only", out, check_split)

    class _Reader(CalibrationDataReader):
        def __init__(self, images: list) -> None:
            self.images = iter(images)

        def get_next(self) -> dict | None:
            image = next(self.images, None)
            return None if image is None else {"image": image}

    out = Path(out)
    meta = _bundle_metadata(bundle, config, overrides)
    with tempfile.TemporaryDirectory() as tmpdir, atomic_path(out) as tmp:
        fp32 = Path(tmpdir) / "model_fp32.onnx"
        if fp32_onnx is not None:
            import shutil

            shutil.copy(fp32_onnx, fp32)
        else:
            shape = (1, *calib[0].shape[1:])
            export_onnx(eager, fp32, example_shape=shape, metadata={"metadata.json": json_dumps(meta)})
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            prepared = Path(tmpdir) / "model_prep.onnx"
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        except Exception as e:  # pre-processing is an optimization; quantize the plain export without it
            logger.info("quant_pre_process skipped (%s: %s)", type(e).__name__, str(e)[:200])
            prepared = fp32
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # ONNX Runtime's quantizer logs a line per tensor through the root logger
        try:
            quantize_static(
                str(prepared),
                str(tmp),
                _Reader(calib),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
        finally:
            root.setLevel(level)
        _set_onnx_metadata(tmp, {"metadata.json": json_dumps(meta), "quantization": "static int8 (QDQ)"})
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        report: dict = {}
        with torch.no_grad():
            for name, images in (("calibration", calib), ("validation", check)):
                if not images:
                    continue
                ref = [eager(torch.from_numpy(x)).numpy() for x in images]
                got = [session.run(None, {"image": x})[0] for x in images]
                report[name] = {"split": calib_split if name == "calibration" else check_split}
                report[name].update(mask_agreement(ref, got, out_channels))
                worst_diff = max(float(np.abs(r - g).max()) for r, g in zip(ref, got, strict=True))
                report[name]["max_abs_logit_diff"] = worst_diff
                logger.info(
                    "INT8 %s: Dice agreement with eager on %d %s images: %.4f (worst image %.4f)",
                    out, len(images), report[name]["split"], report[name]["dice"], report[name]["min_image_dice"],
                )  # fmt: skip
        failed = [k for k, v in report.items() if v["dice"] < min_agreement]
        if failed:
            raise AssertionError(
                f"INT8 export {out}: Dice agreement with the eager model "
                + ", ".join(f"{k} {report[k]['dice']:.4f}" for k in failed)
                + f" < {min_agreement}; nothing was written (calibrate on more images: --calib_count, or keep fp32)."
            )
    payload = {
        "format": "onnx-int8",
        "file": out.name,
        "opset": ONNX_OPSET,
        "quantization": {"method": "onnxruntime.quantization.quantize_static", "format": "QDQ",
                         "weights": ("int8 per-channel" if per_channel else "int8")
                         + (" (7-bit range: reduce_range)" if reduce_range else ""), "activations": "uint8",
                         "calibration": "MinMax", "calib_split": calib_split, "calib_count": len(calib)},
        "agreement": report,
        "min_agreement": min_agreement,
        **_provenance(ckpt, eager),
        "metadata": meta,
    }  # fmt: skip
    _write_sidecar(out, payload)
    return payload


def json_dumps(value) -> str:
    import json

    return json.dumps(value, default=str)


def _provenance(ckpt: Path, eager: nn.Module) -> dict:
    return {
        "checkpoint": str(ckpt),
        "checkpoint_sha256": file_sha256(ckpt),
        "network": type(eager).__name__,
        "deployment_form": is_fusible(eager),
    }


def _export_dims(net: nn.Module) -> tuple[list[tuple[int, ...]], tuple]:
    """Check shapes and ``dynamic_shapes`` for ``torch.export``: spatial sizes as multiples of the network's
    divisor of at least two multiples (a multiple of 1 would be specialized), batch dynamic."""
    divisor = int(getattr(net, "divisor", 16))
    channels = int(getattr(net, "in_channels", 3))
    dim = torch.export.Dim
    side = max(256, 2 * divisor)
    shapes = [(1, channels, side, side), (2, channels, 2 * divisor, 3 * divisor)]
    if divisor >= 64:  # derived dims: H = divisor * h keeps the network's size check symbolic
        h, w = dim("h", min=2, max=max(2, 8192 // divisor)), dim("w", min=2, max=max(2, 8192 // divisor))
        dynamic = ({0: dim("batch"), 2: divisor * h, 3: divisor * w},)
    else:
        dynamic = ({0: dim("batch"), 2: dim.DYNAMIC, 3: dim.DYNAMIC},)
    return shapes, dynamic


def export_torch_export(
    bundle_dir: str | os.PathLike,
    out: str | os.PathLike,
    ckpt: str | os.PathLike | None = None,
    config: str = "inference.json",
    atol: float = 1e-4,
    rtol: float = 1e-5,
    overrides: dict | None = None,
) -> dict:
    """``torch.export.export`` of the bundle's network (deployment form where it has one) with dynamic batch and
    spatial dims, saved with ``torch.export.save`` as a .pt2 program and checked against eager; the JSON beside
    it holds the bundle metadata and the accepted input sizes. (No AOTInductor package: compiling one needs a C++
    toolchain and minutes per network on these CPUs, which the bundles cannot assume.)
    """
    bundle = Path(bundle_dir)
    ckpt = Path(ckpt) if ckpt is not None else bundle / "models" / "model.pt"
    overrides = dict(overrides or {})
    eager = load_bundle_network(bundle, ckpt, config, overrides=overrides)
    deploy = is_fusible(eager)
    exported_net = reparameterize_model(eager) if deploy else eager
    shapes, dynamic = _export_dims(eager)
    out = Path(out)
    with atomic_path(out) as tmp:
        program = torch.export.export(exported_net, (torch.zeros(2, *shapes[1][1:]),), dynamic_shapes=dynamic)
        torch.export.save(program, str(tmp))
        loaded = torch.export.load(str(tmp)).module()
        diff, scale = compare(eager, loaded, shapes)
        _check("torch.export", out, diff, scale, atol, rtol)
    divisor = int(getattr(eager, "divisor", 16))
    payload = {
        "format": "torch-export",
        "file": out.name,
        "torch": torch.__version__,
        "max_abs_diff": diff,
        "input": {"dynamic": ["batch", "height", "width"], "multiple_of": divisor,
                  "min_size": 2 * divisor if divisor >= 64 else divisor},
        **_provenance(ckpt, eager),
        "metadata": _bundle_metadata(bundle, config, overrides),
    }  # fmt: skip
    _write_sidecar(out, payload)
    return payload


def export_bundle(
    bundle_dir: str | os.PathLike,
    fmt: str = "torchscript",
    ckpt: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    calib_split: str = "training",
    calib_count: int = 32,
    overrides: dict | None = None,
    image_size: Sequence[int] | None = None,
    min_agreement: float = INT8_MIN_AGREEMENT,
    datalist: str | None = None,
    dataset_dir: str | None = None,
) -> dict:
    """Export a bundle in one of :data:`FORMATS` to ``out`` (default ``<bundle>/models/<DEFAULT_FILES[fmt]>``),
    checked against eager; returns what the JSON beside the file holds.

    ``overrides`` are the settings the model was trained with (``network_name``, ``in_channels``...);
    ``datalist``/``dataset_dir``/``image_size`` choose the INT8 calibration images (default: the bundle's).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    bundle = Path(bundle_dir)
    ckpt = Path(ckpt) if ckpt is not None else bundle / "models" / "model.pt"
    out = Path(out) if out is not None else bundle / "models" / DEFAULT_FILES[fmt]
    overrides = {**travelling_settings(bundle, ckpt), **(overrides or {})}  # the training's, unless given
    if fmt == "torchscript":
        diff = export_torchscript(bundle, out, ckpt=ckpt, overrides=overrides)
        eager = load_bundle_network(bundle, ckpt, overrides=overrides)
        payload = {"format": fmt, "file": out.name, "max_abs_diff": diff, **_provenance(ckpt, eager)}
    elif fmt == "onnx":
        eager = load_bundle_network(bundle, ckpt, overrides=overrides)
        size = tuple(image_size or (256, 256))
        meta = _bundle_metadata(bundle, "inference.json", overrides)
        diff = export_onnx(
            eager, out, example_shape=(1, int(getattr(eager, "in_channels", 3)), *size),
            metadata={"metadata.json": json_dumps(meta)},
        )  # fmt: skip
        payload = {
            "format": fmt,
            "file": out.name,
            "opset": ONNX_OPSET,
            "max_abs_diff": diff,
            "input": {"dynamic": ["batch", "height", "width"]},
            **_provenance(ckpt, eager),
            "metadata": meta,
        }
    elif fmt == "onnx-int8":
        data = {"datalist": datalist, "dataset_dir": dataset_dir, "image_size": list(image_size or []) or None}
        overrides.update({k: v for k, v in data.items() if v is not None})
        from lightseg.backends import export_status

        fp32 = out.with_name(DEFAULT_FILES["onnx"])  # an fp32 export of the same checkpoint beside it is reused
        reuse = fp32 if fp32.is_file() and export_status(fp32, ckpt) is None else None
        return export_onnx_int8(
            bundle, out, ckpt, calib_split=calib_split, calib_count=calib_count, overrides=overrides,
            min_agreement=min_agreement, fp32_onnx=reuse,
        )  # fmt: skip
    else:
        return export_torch_export(bundle, out, ckpt, overrides=overrides)
    _write_sidecar(out, payload)
    return payload

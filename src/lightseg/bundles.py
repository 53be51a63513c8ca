"""Helpers the bundle configs call: where the bundle folder is, its default data, labels and intensity statistics.

They make one rendered config work from the repository root (``python -m monai.bundle run training
--config_file bundles/lvunet/configs/train.json``), from any other working directory with an absolute
``--config_file``, from inside the bundle folder (the Model Zoo tools), and once the bundle folder stands alone
(copied into a MONAI Label app), where the repository's demo datalist does not exist.
"""

from __future__ import annotations

import ast
import logging
import os
import sys
from pathlib import Path

__all__ = [
    "GRAY_MEAN",
    "GRAY_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BundleRootError",
    "datalist_value",
    "default_datalist",
    "default_dataset_dir",
    "default_labels",
    "find_bundle_root",
    "intensity_stats",
]

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Grayscale: the ImageNet statistics of the luminance the RGB -> gray conversion computes (ITU-R 601 weights),
# so a 1-channel model sees gray images normalised as an RGB model sees their colour versions.
_LUMA = (0.299, 0.587, 0.114)
GRAY_MEAN = (round(sum(w * m for w, m in zip(_LUMA, IMAGENET_MEAN, strict=True)), 4),)
GRAY_STD = (round(sum(w * s for w, s in zip(_LUMA, IMAGENET_STD, strict=True)), 4),)


class BundleRootError(FileNotFoundError):
    """The bundle folder could not be located."""


def _config_files_from_argv(argv: list[str] | None = None) -> list[str]:
    """The ``--config_file`` values of a ``python -m monai.bundle run`` command line (a path, a list, or a,b)."""
    argv = sys.argv if argv is None else argv
    values = []
    for i, arg in enumerate(argv):
        if arg == "--config_file" and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith("--config_file="):
            values.append(arg.split("=", 1)[1])
    files: list[str] = []
    for value in values:
        text = value.strip()
        if text.startswith("["):
            try:
                files += [str(v) for v in ast.literal_eval(text)]
                continue
            except (ValueError, SyntaxError):
                text = text.strip("[]")
        files += [v.strip().strip("'\"") for v in text.split(",") if v.strip()]
    return files


def find_bundle_root(name: str, argv: list[str] | None = None, cwd: str | os.PathLike | None = None) -> str:
    """The folder of bundle ``name``: the one holding the ``configs/`` folder of the command line's config file;
    else ``bundles/<name>`` below the working directory; else the working directory if it is a bundle folder.

    Raises:
        BundleRootError: naming ``--bundle_root`` when none of these is a bundle folder.
    """
    cwd = Path(cwd or os.getcwd())
    for file in _config_files_from_argv(argv):
        path = Path(file)
        configs = path.parent
        if configs.name == "configs" and (cwd / configs).is_dir():
            root = configs.parent
            return str(root) if str(root) != "" else "."
    if (cwd / "bundles" / name / "configs").is_dir():
        return f"bundles/{name}"
    if (cwd / "configs" / "metadata.json").is_file():
        return "."
    raise BundleRootError(
        f"cannot find the folder of bundle {name!r} from {cwd}: run from the repository root or the bundle folder, "
        f"give --config_file as a path inside the bundle's configs/ folder, or pass --bundle_root <path to the "
        f"bundle folder>."
    )


def _repo_demo(bundle_root: str | os.PathLike) -> Path:
    return Path(bundle_root) / ".." / ".."


def datalist_value(datalist: str | os.PathLike, key: str, default: object = None) -> object:
    """A top-level value recorded in a datalist JSON (``python -m lightseg.data from-folders`` records
    ``dataset_dir`` and ``mask_threshold``), or ``default`` when the file or the key is absent."""
    import json

    path = Path(datalist)
    if not path.is_file():
        return default
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return default  # lightseg.data.load_datalist reports the file with its problem
    return content.get(key, default) if isinstance(content, dict) else default


def default_dataset_dir(bundle_root: str | os.PathLike, datalist: str | os.PathLike | None = None) -> str:
    """The folder the datalist's paths are relative to: the one the datalist records (``dataset_dir``, relative
    to the datalist's own folder), else the demo dataset folder: the repository's ``data/demo``, or
    ``<bundle_root>/data/demo`` for a bundle folder that stands alone (for example inside a MONAI Label app)."""
    recorded = datalist_value(datalist, "dataset_dir") if datalist else None
    if isinstance(recorded, str):
        return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(datalist)), recorded))
    repo = _repo_demo(bundle_root)
    if (repo / "data_lists" / "demo.json").is_file():
        return str(Path(bundle_root) / ".." / ".." / "data" / "demo").replace("\\", "/")
    return str(Path(bundle_root) / "data" / "demo")


def default_datalist(bundle_root: str | os.PathLike) -> str:
    """The demo datalist: the repository's ``data_lists/demo.json``, or one written (once, deterministically)
    to ``<bundle_root>/data/demo/datalist.json`` when the bundle folder stands alone; the images are generated
    on first use by :func:`lightseg.data.load_datalist`."""
    repo = _repo_demo(bundle_root)
    if (repo / "data_lists" / "demo.json").is_file():
        return str(Path(bundle_root) / ".." / ".." / "data_lists" / "demo.json")
    path = Path(bundle_root) / "data" / "demo" / "datalist.json"
    if not path.is_file():
        from lightseg.data.datalist import make_demo_datalist, write_json

        write_json(make_demo_datalist(), path)
        logger.info("bundle folder stands alone: wrote the demo datalist %s", path)
    return str(path)


def default_labels(out_channels: int) -> list[str]:
    """Label names for ``out_channels``: ``["background", "lesion"]`` for a 1-channel (sigmoid) head, else
    ``["background", "class_1", ..., "class_{N-1}"]`` (N classes including the background)."""
    out_channels = int(out_channels)
    if out_channels < 1:
        raise ValueError(f"out_channels must be >= 1, got {out_channels}.")
    if out_channels == 1:
        return ["background", "lesion"]
    return ["background", *[f"class_{i}" for i in range(1, out_channels)]]


def check_labels(labels, out_channels: int) -> list[str]:
    """``labels`` as a list of names, checked against ``out_channels`` (2 names for a 1-channel head)."""
    labels = [str(x) for x in labels]
    expected = 2 if int(out_channels) == 1 else int(out_channels)
    if len(labels) != expected:
        raise ValueError(
            f"labels {labels} has {len(labels)} names but out_channels {out_channels} needs {expected} "
            "(background first)."
        )
    return labels


def intensity_stats(in_channels: int) -> tuple[list[float], list[float]]:
    """(mean, std) of the intensity normalisation: ImageNet's for RGB, their luminance for grayscale."""
    in_channels = int(in_channels)
    if in_channels == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    if in_channels == 1:
        return list(GRAY_MEAN), list(GRAY_STD)
    raise ValueError(f"in_channels must be 1 or 3, got {in_channels}.")


def network_metadata(
    meta_file: str | os.PathLike, in_channels: int = 3, out_channels: int = 1, labels=None, **_ignored
) -> dict:
    """A bundle's ``metadata.json`` describing a model trained with these settings: input ``num_channels`` and
    ``channel_def``, output ``num_channels`` and ``channel_def`` (label names, background first), which MONAI
    Label lists as the model's labels."""
    import json

    meta = json.loads(Path(meta_file).read_text())
    in_channels, out_channels = int(in_channels), int(out_channels)
    labels = check_labels(labels if labels is not None else default_labels(out_channels), out_channels)
    fmt = meta["network_data_format"]
    image = fmt["inputs"]["image"]
    image["num_channels"] = in_channels
    image["channel_def"] = {"0": "R", "1": "G", "2": "B"} if in_channels == 3 else {"0": "gray"}
    if in_channels == 1 and image.get("modality") == "RGB":
        image["modality"] = "grayscale"
    pred = fmt["outputs"]["pred"]
    pred["num_channels"] = out_channels
    pred["channel_def"] = {str(i): name for i, name in enumerate(labels)}
    if out_channels > 1:
        meta["label_classes"] = f"label map: {', '.join(f'{i} {n}' for i, n in enumerate(labels))}"
        meta["pred_classes"] = f"{out_channels} channels of logits; the argmax of the softmax is the label"
    return meta

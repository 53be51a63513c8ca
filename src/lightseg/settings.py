"""Settings that travel with a trained model: ``settings.json`` beside ``model.pt``.

Training writes what evaluation, inference and the exports need to reproduce its preprocessing (network name,
channels, image size, normalization, mask threshold, datalist, dataset folder, labels) and what links the model
to its run (run name, MLflow run id and tracking URI). Readers take a checkpoint path or its folder.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from lightseg.utils import atomic_path

__all__ = [
    "EVALUATION_KEYS",
    "INFERENCE_KEYS",
    "SETTINGS_NAME",
    "read_settings",
    "report_differences",
    "settings_path",
    "trained",
    "update_settings",
    "write_settings",
]

logger = logging.getLogger(__name__)

SETTINGS_NAME = "settings.json"
# what inference.json reads from the training by default (the network and its preprocessing) ...
INFERENCE_KEYS = ("network_name", "in_channels", "out_channels", "labels", "image_size", "intensity_mean",
                  "intensity_std")  # fmt: skip
# ... and evaluate.json, which also scores the training's test split as the training read its masks
EVALUATION_KEYS = (*INFERENCE_KEYS, "datalist", "dataset_dir", "mask_threshold")


def settings_path(model: str | os.PathLike) -> Path:
    """``settings.json`` for a checkpoint file (beside it) or a models folder (inside it)."""
    model = Path(model)
    folder = model if model.is_dir() or not model.suffix else model.parent
    return folder / SETTINGS_NAME


def read_settings(model: str | os.PathLike) -> dict | None:
    """The settings saved with ``model`` (a checkpoint path or its folder), or None when there are none.

    Raises:
        ValueError: the file exists but is not a JSON object (the message names the file).
    """
    path = settings_path(model)
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the model's training settings ({e}); delete or fix the file.") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of training settings, got {type(data).__name__}.")
    return data


def write_settings(model: str | os.PathLike, settings: dict) -> Path:
    """Write ``settings`` (JSON-serializable values) atomically for ``model``; returns the file written."""
    path = settings_path(model)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(settings, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
    return path


def update_settings(model: str | os.PathLike, **values) -> Path:
    """Merge ``values`` into the saved settings (creating the file when missing)."""
    return write_settings(model, {**(read_settings(model) or {}), **values})


_announced: set[str] = set()


def trained(model: str | os.PathLike, key: str, default: object = None) -> object:
    """The training's value of ``key`` for ``model`` (a checkpoint path), or ``default`` without one.

    The bundle configs use it as the default of each setting in :data:`INFERENCE_KEYS` /
    :data:`EVALUATION_KEYS`; a value given on the command line replaces the whole expression (see
    :func:`report_differences`).
    """
    settings = read_settings(model) if model else None
    if not settings or key not in settings:
        return default
    path = str(settings_path(model))
    if path not in _announced:
        _announced.add(path)
        logger.info("using the training settings saved with the model: %s", path)
    return settings[key]


def _same(a: object, b: object) -> bool:
    def norm(v):
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        if isinstance(v, dict):
            return {str(k): norm(x) for k, x in v.items()}
        if hasattr(v, "tolist"):
            return norm(v.tolist())
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, str) and os.path.exists(v):
            return os.path.realpath(v)
        return v

    return norm(a) == norm(b)


def report_differences(model: str | os.PathLike, values: dict) -> list[str]:
    """Log one line for each of ``values`` that differs from the training's (an explicit override); returns
    the keys that differ. Called from the ``initialize`` of inference.json and evaluate.json."""
    settings = read_settings(model) if model else None
    if not settings:
        return []
    differ = []
    for key, value in values.items():
        if key in settings and not _same(value, settings[key]):
            differ.append(key)
            logger.warning(
                "%s is %r here but the model was trained with %r (%s): using %r", key, value, settings[key],
                settings_path(model), value,
            )  # fmt: skip
    return differ

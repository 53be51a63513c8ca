"""Settings that travel with a trained model: ``settings.json`` beside ``model.pt``.

Training writes what evaluation, inference and the exports need to reproduce its preprocessing (network name,
channels, image size, normalization, mask threshold, datalist, dataset folder, labels) and what links the model
to its run (run name, MLflow run id and tracking URI). Readers take a checkpoint path or its folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lightseg.utils import atomic_path

__all__ = ["SETTINGS_NAME", "read_settings", "settings_path", "update_settings", "write_settings"]

SETTINGS_NAME = "settings.json"


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
